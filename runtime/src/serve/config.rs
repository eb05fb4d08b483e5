//! The sidecar's config file (YAML): where to listen, where fluentd is, which plugins run, and how
//! delivery behaves. Rendered by the operator, or written by hand; every key is in docs/sidecar.md.

use crate::settings::{PluginSettings, parse_bytes, parse_duration};
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The config `apiVersion` this sidecar writes and reads.
pub const API_VERSION: &str = "eventplug.dev/v1alpha1";
/// Versions read as well: the current one and the one before it, so an operator and a sidecar one
/// version apart work together. (v1alpha1 is the first; the list grows with the next version.)
pub const ACCEPTED_API_VERSIONS: &[&str] = &[API_VERSION];
/// The config `kind`.
pub const KIND: &str = "SidecarConfig";

/// The shortest `delivery.reloadInterval`.
pub const MIN_RELOAD_INTERVAL: Duration = Duration::from_millis(10);

/// event-handler gives up on a request after this long (its client timeout).
pub const EVENT_HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

/// The whole config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SidecarConfig {
    /// `eventplug.dev/v1alpha1`.
    pub api_version: String,
    /// `SidecarConfig`.
    pub kind: String,
    /// Where event-handler posts events.
    #[serde(default)]
    pub listen: ListenConfig,
    /// The real fluentd.
    pub upstream: UpstreamConfig,
    /// Delivery, retries and poison events.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// The plugin chain.
    #[serde(default)]
    pub plugins: Vec<PluginSettings>,
    /// Shared token store (filled by a later version).
    #[serde(default)]
    pub store: Option<EmptySection>,
    /// Teleport API access (filled by a later version).
    #[serde(default)]
    pub teleport: Option<EmptySection>,
    /// Alert routing (filled by a later version).
    #[serde(default)]
    pub alerts: Option<EmptySection>,
    /// Logging.
    #[serde(default)]
    pub logging: LoggingConfig,
}

/// A section reserved for a later version; only `{}` is accepted now.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EmptySection {}

/// Where the sidecar listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ListenConfig {
    /// Address and port, plain HTTP; loopback by default (event-handler is in the same pod).
    pub address: String,
    /// The largest event body accepted.
    #[serde(deserialize_with = "de_bytes")]
    pub max_body_bytes: u64,
    /// The path event-handler posts audit events to; default: the path of `upstream.auditUrl`.
    pub audit_path: Option<String>,
    /// The path session events are posted under (`<path>.<sid>.log`); default: the path of
    /// `upstream.sessionUrl`.
    pub session_path: Option<String>,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:8888".into(),
            max_body_bytes: 8 << 20,
            audit_path: None,
            session_path: None,
        }
    }
}

/// The real fluentd, as event-handler's own config names it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpstreamConfig {
    /// Audit events go here as they are (`https://fluentd:8888/test.log`).
    pub audit_url: String,
    /// Session events go to this URL + `.<sid>.log`.
    pub session_url: Option<String>,
    /// CA certificate file that signed fluentd's certificate.
    pub ca: Option<PathBuf>,
    /// Client certificate file (with `key`).
    pub cert: Option<PathBuf>,
    /// Client key file (with `cert`).
    pub key: Option<PathBuf>,
    /// How long one forward may take.
    #[serde(default = "default_upstream_timeout", deserialize_with = "de_duration")]
    pub timeout: Duration,
}

fn default_upstream_timeout() -> Duration {
    Duration::from_secs(10)
}

/// What happens to an event a plugin keeps failing on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PoisonPolicy {
    /// Forward the original to the quarantine tag on the upstream, so it is kept but marked.
    #[default]
    Quarantine,
    /// Forward the original as if no plugin ran.
    Forward,
    /// Keep refusing it.
    Block,
}

/// Delivery settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct DeliveryConfig {
    /// Failed attempts of one event before the poison policy applies.
    pub poison_attempts: u32,
    /// What the poison policy does.
    pub poison_policy: PoisonPolicy,
    /// The fluentd tag (URL path on the audit upstream) quarantined events go to.
    pub quarantine_tag: String,
    /// Outcomes remembered for redeliveries.
    pub verdict_cache_entries: usize,
    /// How long an outcome is remembered.
    #[serde(deserialize_with = "de_duration")]
    pub verdict_cache_ttl: Duration,
    /// After SIGTERM, how long to keep serving before no longer accepting.
    #[serde(deserialize_with = "de_duration")]
    pub shutdown_grace: Duration,
    /// How often the config file is checked for changes.
    #[serde(deserialize_with = "de_duration")]
    pub reload_interval: Duration,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            poison_attempts: 3,
            poison_policy: PoisonPolicy::Quarantine,
            quarantine_tag: "eventplug.quarantine".into(),
            verdict_cache_entries: 10_000,
            verdict_cache_ttl: Duration::from_secs(15 * 60),
            shutdown_grace: Duration::from_secs(5),
            reload_interval: Duration::from_secs(1),
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LoggingConfig {
    /// `text` (default) or `json`.
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

fn de_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

fn de_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Number(u64),
        Text(String),
    }
    match Size::deserialize(deserializer)? {
        Size::Number(n) => Ok(n),
        Size::Text(text) => parse_bytes(&text).map_err(serde::de::Error::custom),
    }
}

/// The path of a URL (`https://h:1/a/b` → `/a/b`), or an error naming the key.
pub fn url_path(key: &str, url: &str) -> Result<String, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("{key}: `{url}` is not a URL: {e}"))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(format!(
                "{key}: `{url}` must start with http:// or https://"
            ));
        }
    }
    if uri.host().is_none() {
        return Err(format!("{key}: `{url}` has no host"));
    }
    Ok(uri.path().to_string())
}

impl SidecarConfig {
    /// Reads and checks a config file. Module paths and certificate paths are relative to it.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        let mut config =
            Self::parse(&text).map_err(|e| format!("config {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for plugin in &mut config.plugins {
            rebase(&mut plugin.module);
        }
        for file in [
            &mut config.upstream.ca,
            &mut config.upstream.cert,
            &mut config.upstream.key,
        ]
        .into_iter()
        .flatten()
        {
            rebase(file);
        }
        Ok(config)
    }

    /// Parses and checks config text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: Self = serde_saphyr::from_str(text).map_err(|e| e.to_string())?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        if !ACCEPTED_API_VERSIONS.contains(&self.api_version.as_str()) {
            return Err(format!(
                "apiVersion `{}` is not one this sidecar reads ({}); upgrade the sidecar or render the config for it",
                self.api_version,
                ACCEPTED_API_VERSIONS.join(", ")
            ));
        }
        if self.kind != KIND {
            return Err(format!("kind must be `{KIND}`, not `{}`", self.kind));
        }
        self.listen
            .address
            .parse::<std::net::SocketAddr>()
            .map_err(|e| {
                format!(
                    "listen.address: `{}` is not an address:port ({e})",
                    self.listen.address
                )
            })?;
        url_path("upstream.auditUrl", &self.upstream.audit_url)?;
        if let Some(url) = &self.upstream.session_url {
            url_path("upstream.sessionUrl", url)?;
        }
        if self.upstream.cert.is_some() != self.upstream.key.is_some() {
            return Err("upstream.cert and upstream.key go together: set both or neither".into());
        }
        if self.delivery.poison_attempts == 0 {
            return Err("delivery.poisonAttempts must be at least 1".into());
        }
        if self.delivery.quarantine_tag.is_empty() || self.delivery.quarantine_tag.contains('/') {
            return Err(format!(
                "delivery.quarantineTag `{}` must be a non-empty tag without `/`",
                self.delivery.quarantine_tag
            ));
        }
        if self.upstream.audit_url.starts_with("https://") && self.upstream.ca.is_none() {
            return Err("upstream.auditUrl is https but upstream.ca is not set: name the CA certificate that signed fluentd's certificate (event-handler's ca.crt)".into());
        }
        if self.listen.session_path.is_some() && self.upstream.session_url.is_none() {
            return Err("listen.sessionPath is set but upstream.sessionUrl is not: session events would have nowhere to go".into());
        }
        if self.delivery.reload_interval < MIN_RELOAD_INTERVAL {
            return Err(format!(
                "delivery.reloadInterval must be at least {MIN_RELOAD_INTERVAL:?}"
            ));
        }
        let mut names = std::collections::HashSet::new();
        let mut chain_budget = Duration::ZERO;
        let mut instances = 0u32;
        for (i, plugin) in self.plugins.iter().enumerate() {
            if plugin.name.is_empty() {
                return Err(format!("plugins[{i}].name is empty"));
            }
            if !names.insert(plugin.name.as_str()) {
                return Err(format!(
                    "plugins[{i}].name `{}` is used twice; names must be unique",
                    plugin.name
                ));
            }
            // A call after a discarded instance: wait, instantiate, init, call, each under the
            // timeout.
            chain_budget += plugin.limits.max_wait + plugin.limits.timeout * 3;
            instances = instances.saturating_add(plugin.limits.concurrency);
        }
        let total = chain_budget + self.upstream.timeout;
        if total >= EVENT_HANDLER_TIMEOUT {
            return Err(format!(
                "upstream.timeout ({:?}) plus the plugins' worst case, maxWait + 3 × timeout each ({chain_budget:?}), reach {total:?}, not under event-handler's 30 s client timeout: lower them",
                self.upstream.timeout
            ));
        }
        // Old and new versions of every plugin may be alive together during a reload.
        let max_instances = crate::engine::EngineSettings::default().max_instances;
        if instances.saturating_mul(2) > max_instances {
            return Err(format!(
                "the plugins' concurrency adds up to {instances}; with room for a reload (twice that) it must stay within the engine's {max_instances} instances"
            ));
        }
        Ok(())
    }

    /// The path audit events arrive on.
    pub fn audit_path(&self) -> String {
        self.listen
            .audit_path
            .clone()
            .or_else(|| url_path("", &self.upstream.audit_url).ok())
            .unwrap_or_else(|| "/".into())
    }

    /// The path session events arrive under, if sessions are forwarded.
    pub fn session_path(&self) -> Option<String> {
        self.listen.session_path.clone().or_else(|| {
            self.upstream
                .session_url
                .as_ref()
                .and_then(|u| url_path("", u).ok())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "apiVersion: eventplug.dev/v1alpha1\nkind: SidecarConfig\nupstream:\n  auditUrl: https://fluentd:8888/test.log\n  sessionUrl: https://fluentd:8888/session\n  ca: ca.crt\n";

    #[test]
    fn a_minimal_config_takes_defaults_and_paths_from_the_urls() {
        let config = SidecarConfig::parse(MINIMAL).expect("valid");
        assert_eq!(config.listen.address, "127.0.0.1:8888");
        assert_eq!(config.audit_path(), "/test.log");
        assert_eq!(config.session_path().as_deref(), Some("/session"));
        assert_eq!(config.delivery.poison_attempts, 3);
        assert_eq!(config.delivery.poison_policy, PoisonPolicy::Quarantine);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let err =
            SidecarConfig::parse(&format!("{MINIMAL}delivery:\n  poisonAttempt: 3\n")).unwrap_err();
        assert!(err.contains("poisonAttempt"), "{err}");
        let err = SidecarConfig::parse(&format!("{MINIMAL}delivery:\n  poisonPolicy: drop\n"))
            .unwrap_err();
        assert!(err.contains("drop"), "{err}");
        let err = SidecarConfig::parse(&MINIMAL.replace("v1alpha1", "v9")).unwrap_err();
        assert!(
            err.contains("apiVersion `eventplug.dev/v9`") && err.contains("eventplug.dev/v1alpha1"),
            "{err}"
        );
        let err =
            SidecarConfig::parse(&MINIMAL.replace("https://fluentd:8888/test.log", "fluentd"))
                .unwrap_err();
        assert!(err.contains("upstream.auditUrl"), "{err}");
        let err =
            SidecarConfig::parse(&format!("{MINIMAL}listen:\n  address: localhost\n")).unwrap_err();
        assert!(err.contains("listen.address"), "{err}");
        let err = SidecarConfig::parse(&format!("{MINIMAL}store:\n  configMap: x\n")).unwrap_err();
        assert!(err.contains("configMap"), "{err}");
    }

    #[test]
    fn the_time_budget_must_stay_under_event_handlers_timeout() {
        let text = format!(
            "{MINIMAL}plugins:\n  - name: slow\n    module: slow.wasm\n    limits: {{timeout: 25s}}\n"
        );
        let err = SidecarConfig::parse(&text).unwrap_err();
        assert!(err.contains("30 s client timeout"), "{err}");
        let text = format!(
            "{MINIMAL}plugins:\n  - name: a\n    module: a.wasm\n  - name: a\n    module: b.wasm\n"
        );
        assert!(
            SidecarConfig::parse(&text)
                .unwrap_err()
                .contains("used twice")
        );
    }

    #[test]
    fn https_needs_a_ca_and_sessions_need_an_upstream() {
        let err = SidecarConfig::parse(&MINIMAL.replace("  ca: ca.crt\n", "")).unwrap_err();
        assert!(err.contains("upstream.ca is not set"), "{err}");
        let plain = MINIMAL
            .replace("  ca: ca.crt\n", "")
            .replace("auditUrl: https://", "auditUrl: http://")
            .replace("  sessionUrl: https://fluentd:8888/session\n", "");
        assert!(
            SidecarConfig::parse(&plain).is_ok(),
            "plain http needs no CA"
        );
        let err =
            SidecarConfig::parse(&format!("{plain}listen:\n  sessionPath: /s\n")).unwrap_err();
        assert!(err.contains("upstream.sessionUrl is not"), "{err}");
    }

    #[test]
    fn concurrency_must_leave_room_for_a_reload() {
        let text = format!(
            "{MINIMAL}plugins:\n  - name: a\n    module: a.wasm\n    limits: {{concurrency: 100}}\n  - name: b\n    module: b.wasm\n    limits: {{concurrency: 100}}\n"
        );
        let err = SidecarConfig::parse(&text).unwrap_err();
        assert!(err.contains("adds up to 200"), "{err}");
    }

    #[test]
    fn cert_and_key_go_together() {
        let text = MINIMAL.replace("  sessionUrl", "  cert: c.pem\n  sessionUrl");
        assert!(
            SidecarConfig::parse(&text)
                .unwrap_err()
                .contains("upstream.cert and upstream.key")
        );
    }
}
