//! The sidecar's config file (YAML): where to listen, where fluentd is, which plugins run, and how
//! delivery behaves. Rendered by the operator, or written by hand; every key is in docs/sidecar.md.

use crate::{ByteSize, Duration, PluginSettings, ValidationError, from_yaml};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The first config `apiVersion`.
pub const API_VERSION_V1ALPHA1: &str = "eventplug.dev/v1alpha1";
/// v1alpha1 and `source` (the sidecar reads its config through the Kubernetes API too).
pub const API_VERSION_V1ALPHA2: &str = "eventplug.dev/v1alpha2";
/// The config `apiVersion` this sidecar writes: the newest it reads.
pub const API_VERSION: &str = API_VERSION_V1ALPHA2;
/// The versions this sidecar reads, newest first. When a version comes, the one before it stays
/// in this list, so an operator and a sidecar one version apart work together: the operator
/// renders the newest version every running sidecar of a target reports reading.
pub const ACCEPTED_API_VERSIONS: &[&str] = &[API_VERSION_V1ALPHA2, API_VERSION_V1ALPHA1];
/// The config `kind`.
pub const KIND: &str = "SidecarConfig";

/// The shortest `delivery.reloadInterval`.
pub const MIN_RELOAD_INTERVAL: Duration = Duration::from_millis(10);

/// event-handler gives up on a request after this long (its client timeout).
pub const EVENT_HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

/// Instances that may exist at once across all plugins of one sidecar (the engine's pool size).
pub const MAX_INSTANCES: u32 = 256;

/// The whole config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SidecarConfig {
    /// `eventplug.dev/v1alpha1`.
    pub api_version: String,
    /// `SidecarConfig`.
    pub kind: String,
    /// A number the operator raises with every config it renders for a target. The sidecar never
    /// applies a config with a lower one than it runs (an older copy, from kubelet's mounted file
    /// or a stale read), so configs only go forward. Hand-written configs leave it out (0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub revision: u64,
    /// Where event-handler posts events.
    #[serde(default)]
    pub listen: ListenConfig,
    /// Where probes, Prometheus and the operator reach the sidecar (never events).
    #[serde(default)]
    pub admin: AdminConfig,
    /// The real fluentd.
    pub upstream: UpstreamConfig,
    /// Delivery, retries and poison events.
    #[serde(default)]
    pub delivery: DeliveryConfig,
    /// The plugin chain.
    #[serde(default)]
    pub plugins: Vec<PluginSettings>,
    /// While set, every event is refused with 503 and this reason (event-handler retries): the
    /// operator sets it when the chain cannot be what the EventPlugins ask for (a FailClosed plugin
    /// refused by policy, say), so nothing passes a chain that lacks its redactor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<String>,
    /// OCI registries `oci://` plugin modules are pulled from, and the cache they are kept in.
    #[serde(default, skip_serializing_if = "RegistriesConfig::is_default")]
    pub registries: RegistriesConfig,
    /// Shared token store (filled by a later version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<EmptySection>,
    /// Teleport API access (filled by a later version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teleport: Option<EmptySection>,
    /// Alert routing (filled by a later version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alerts: Option<EmptySection>,
    /// Logging.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Where newer copies of this config come from besides its file (v1alpha2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceConfig>,
}

/// Where newer copies of the config come from besides its file (which stays the start-up and
/// fallback source): the operator sets it so a change reaches the sidecar in about a second,
/// not when kubelet next refreshes the mounted file (a minute or more).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SourceConfig {
    /// The Kubernetes objects the config and the plugin modules are read from, with the token at
    /// the standard service-account path (in an injected pod: the sidecar's own ServiceAccount's).
    pub kubernetes: KubernetesSource,
}

/// The Kubernetes objects a sidecar reads (get, list and watch on exactly these names is all its
/// ServiceAccount may do).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KubernetesSource {
    /// Their namespace (the pod's).
    pub namespace: String,
    /// The Secret holding the config, watched.
    pub secret: String,
    /// The Secret's key holding the config.
    pub key: String,
    /// The ConfigMaps holding module chunks (`<digest>.wasm.<n>`), read when a module the config
    /// names is not among the mounted files.
    #[serde(default)]
    pub module_config_maps: Vec<String>,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// A section reserved for a later version; only `{}` is accepted now.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmptySection {}

/// Where the sidecar listens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ListenConfig {
    /// Address and port, plain HTTP; loopback by default (event-handler is in the same pod).
    pub address: String,
    /// The largest event body accepted.
    pub max_body_bytes: ByteSize,
    /// The path event-handler posts audit events to; default: the path of `upstream.auditUrl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit_path: Option<String>,
    /// The path session events are posted under (`<path>.<sid>.log`); default: the path of
    /// `upstream.sessionUrl`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session_path: Option<String>,
    /// How long a request's head (request line and headers) may take to arrive, from its first
    /// byte; then the connection is closed.
    pub header_read_timeout: Duration,
    /// How long an event's body may take to arrive, from the end of its head (a body that stops,
    /// a chunked body that never ends); then the request gets 408 and the connection is closed.
    pub body_read_timeout: Duration,
    /// How long a kept-alive connection may wait for its next request; then it is closed.
    pub idle_timeout: Duration,
    /// Connections open at once; one more is answered 503 and closed.
    pub max_connections: u32,
}

/// The default `listen.maxConnections`: far above event-handler's own limit (concurrency × 2 =
/// 10 connections by default).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 256;

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            address: "127.0.0.1:8888".into(),
            max_body_bytes: ByteSize(8 << 20),
            audit_path: None,
            session_path: None,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

/// The admin listener: `/healthz`, `/readyz`, `/metrics` and `/status`, apart from the ingest
/// listener so kubelet, Prometheus and the operator can reach them while events stay on loopback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct AdminConfig {
    /// Address and port, plain HTTP. Loopback by default; in a pod the operator renders
    /// `0.0.0.0:9090`, and the pod's `EVENTPLUG_ADMIN_ADDRESS` (its own admin port) replaces it.
    pub address: String,
    /// A file holding the bearer token `/status` requires (`Authorization: Bearer <token>`); read
    /// at each request, so a rotated Secret takes effect at once. Required when `address` is not
    /// loopback.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_token_file: Option<PathBuf>,
}

/// The default `admin.address`.
pub const DEFAULT_ADMIN_ADDRESS: &str = "127.0.0.1:9090";

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            address: DEFAULT_ADMIN_ADDRESS.into(),
            status_token_file: None,
        }
    }
}

/// The real fluentd, as event-handler's own config names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct UpstreamConfig {
    /// Audit events go here as they are (`https://fluentd:8888/test.log`).
    pub audit_url: String,
    /// Session events go to this URL + `.<sid>.log`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_url: Option<String>,
    /// CA certificate file that signed fluentd's certificate; only it is trusted. Without it an
    /// https upstream is checked against the system's root certificates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Client certificate file (with `key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Client key file (with `cert`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
    /// How long one forward may take.
    #[serde(default = "default_upstream_timeout")]
    pub timeout: Duration,
}

fn default_upstream_timeout() -> Duration {
    Duration::from_secs(10)
}

/// How plugin modules named `oci://host/repository@sha256:…` are pulled (docs/oci.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistriesConfig {
    /// Registry credentials: a Docker config JSON file, or the folder a `kubernetes.io/dockerconfigjson`
    /// Secret is mounted at (its `.dockerconfigjson`). Read again at every reload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pull_secret: Option<PathBuf>,
    /// Where pulled modules are kept, by digest; default: `oci/` in the module cache folder.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_dir: Option<PathBuf>,
    /// Connect and read timeout of each registry request.
    pub timeout: Duration,
    /// The largest module pulled.
    pub max_module_bytes: ByteSize,
    /// Per-host settings; hosts not listed use HTTPS with the system's CA certificates.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<RegistryHost>,
}

impl Default for RegistriesConfig {
    fn default() -> Self {
        Self {
            pull_secret: None,
            cache_dir: None,
            timeout: Duration::from_secs(30),
            max_module_bytes: ByteSize(64 << 20),
            hosts: Vec::new(),
        }
    }
}

impl RegistriesConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// How to reach one registry host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryHost {
    /// `host` or `host:port`, as in the module references.
    pub host: String,
    /// Speak plain HTTP to this host (an in-cluster registry without TLS).
    #[serde(default)]
    pub plain_http: bool,
    /// Trust only this CA certificate (PEM) for this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

/// What happens to an event a plugin keeps failing on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    pub verdict_cache_ttl: Duration,
    /// After SIGTERM, how long to keep serving before no longer accepting.
    pub shutdown_grace: Duration,
    /// How often the config file is checked for changes.
    pub reload_interval: Duration,
    /// How long an event's answer waits for its must-deliver effects (Teleport locks) to be
    /// carried out; then the event gets 503 and is redelivered (effects are idempotent by key).
    pub effect_wait: Duration,
    /// Effects queued at most per queue (the must-deliver queue, and each best-effort sink's).
    pub effect_queue: u32,
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
            effect_wait: Duration::from_secs(5),
            effect_queue: 1000,
        }
    }
}

/// Log output.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LoggingConfig {
    /// `text` (default) or `json`.
    pub format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `value` as an address and port, or an error naming `key`.
fn socket_address(key: &str, value: &str) -> Result<std::net::SocketAddr, ValidationError> {
    value
        .parse()
        .map_err(|e| ValidationError::at(key, format!("`{value}` is not an address:port ({e})")))
}

/// The path of a URL (`https://h:1/a/b` → `/a/b`), or an error naming `key`.
pub fn url_path(key: &str, url: &str) -> Result<String, ValidationError> {
    // The URL itself is never echoed: it may carry credentials.
    let uri: http::Uri = url
        .parse()
        .map_err(|e| ValidationError::at(key, format!("is not a URL ({e})")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(ValidationError::at(
                key,
                "must start with http:// or https://",
            ));
        }
    }
    if uri.host().is_none() {
        return Err(ValidationError::at(key, "has no host"));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(ValidationError::at(
            key,
            "carries credentials; the upstream authenticates with upstream.cert and upstream.key",
        ));
    }
    Ok(uri.path().to_string())
}

impl SidecarConfig {
    /// Reads and checks a config file. Module paths and certificate paths are relative to it.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        Self::parse_relative_to(&text, path.parent().unwrap_or(Path::new(".")))
            .map_err(|e| format!("config {}: {e}", path.display()))
    }

    /// Parses and checks config text whose relative module and certificate paths are relative to
    /// `base` (the folder of the file it came from, or stands for).
    pub fn parse_relative_to(text: &str, base: &Path) -> Result<Self, ValidationError> {
        let mut config = Self::parse(text)?;
        let rebase = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for plugin in &mut config.plugins {
            if plugin.oci_reference().is_none() {
                rebase(&mut plugin.module);
            }
        }
        for file in [
            &mut config.upstream.ca,
            &mut config.upstream.cert,
            &mut config.upstream.key,
            &mut config.admin.status_token_file,
            &mut config.registries.pull_secret,
            &mut config.registries.cache_dir,
        ]
        .into_iter()
        .flatten()
        {
            rebase(file);
        }
        for host in &mut config.registries.hosts {
            if let Some(ca) = &mut host.ca {
                rebase(ca);
            }
        }
        Ok(config)
    }

    /// Parses and checks config text.
    pub fn parse(text: &str) -> Result<Self, ValidationError> {
        let config: Self = from_yaml(text)?;
        config.check()?;
        Ok(config)
    }

    /// The config as YAML text, as the operator renders it.
    pub fn to_yaml(&self) -> Result<String, String> {
        serde_saphyr::to_string(self).map_err(|e| e.to_string())
    }

    /// Checks what the types alone cannot say: versions, addresses, URLs, pairs of keys that go
    /// together, unique plugin names, and that the worst case fits event-handler's timeout.
    pub fn check(&self) -> Result<(), ValidationError> {
        if !ACCEPTED_API_VERSIONS.contains(&self.api_version.as_str()) {
            return Err(ValidationError::at(
                "apiVersion",
                format!(
                    "`{}` is not one this sidecar reads ({}); upgrade the sidecar or render the config for it",
                    self.api_version,
                    ACCEPTED_API_VERSIONS.join(", ")
                ),
            ));
        }
        if self.source.is_some() && self.api_version == API_VERSION_V1ALPHA1 {
            return Err(ValidationError::at(
                "source",
                format!(
                    "needs apiVersion {API_VERSION_V1ALPHA2} (this config says {API_VERSION_V1ALPHA1})"
                ),
            ));
        }
        if let Some(source) = &self.source {
            let k = &source.kubernetes;
            for (key, value) in [
                ("source.kubernetes.namespace", &k.namespace),
                ("source.kubernetes.secret", &k.secret),
                ("source.kubernetes.key", &k.key),
            ] {
                if value.is_empty() {
                    return Err(ValidationError::at(key, "must not be empty"));
                }
            }
        }
        if self.kind != KIND {
            return Err(ValidationError::at(
                "kind",
                format!("must be `{KIND}`, not `{}`", self.kind),
            ));
        }
        socket_address("listen.address", &self.listen.address)?;
        let admin = socket_address("admin.address", &self.admin.address)?;
        if !admin.ip().is_loopback() && self.admin.status_token_file.is_none() {
            return Err(ValidationError::at(
                "admin.statusTokenFile",
                format!(
                    "must be set when admin.address ({}) is not loopback: /status tells what runs and needs a bearer token there",
                    self.admin.address
                ),
            ));
        }
        if admin.port() != 0 && self.listen.address == self.admin.address {
            return Err(ValidationError::at(
                "admin.address",
                "must differ from listen.address: events and the admin endpoints have listeners of their own",
            ));
        }
        for (key, value) in [
            ("listen.headerReadTimeout", self.listen.header_read_timeout),
            ("listen.bodyReadTimeout", self.listen.body_read_timeout),
            ("listen.idleTimeout", self.listen.idle_timeout),
        ] {
            if value.get().is_zero() {
                return Err(ValidationError::at(
                    key,
                    "must be more than 0 (a connection would be closed at once)",
                ));
            }
        }
        if self.listen.max_connections == 0 {
            return Err(ValidationError::at(
                "listen.maxConnections",
                format!(
                    "must be at least 1 (default {DEFAULT_MAX_CONNECTIONS}; event-handler opens up to concurrency × 2)"
                ),
            ));
        }
        url_path("upstream.auditUrl", &self.upstream.audit_url)?;
        if let Some(url) = &self.upstream.session_url {
            url_path("upstream.sessionUrl", url)?;
        }
        if self.upstream.cert.is_some() != self.upstream.key.is_some() {
            let key = if self.upstream.cert.is_some() {
                "upstream.key"
            } else {
                "upstream.cert"
            };
            return Err(ValidationError::at(
                key,
                "upstream.cert and upstream.key go together: set both or neither",
            ));
        }
        if self.upstream.timeout.get().is_zero() {
            return Err(ValidationError::at(
                "upstream.timeout",
                "must be above zero: every forward would time out",
            ));
        }
        if self.delivery.poison_attempts == 0 {
            return Err(ValidationError::at(
                "delivery.poisonAttempts",
                "must be at least 1",
            ));
        }
        if let (PoisonPolicy::Forward, Some(plugin)) =
            (self.delivery.poison_policy, self.fail_closed_plugin())
        {
            return Err(ValidationError::at(
                "delivery.poisonPolicy",
                format!(
                    "`forward` would send an event that FailClosed plugin `{}` failed on past it, unfiltered; use `block`, or `quarantine` (which then keeps a record of the event without its body)",
                    plugin.name
                ),
            ));
        }
        if self.delivery.quarantine_tag.is_empty() || self.delivery.quarantine_tag.contains('/') {
            return Err(ValidationError::at(
                "delivery.quarantineTag",
                format!(
                    "`{}` must be a non-empty tag without `/`",
                    self.delivery.quarantine_tag
                ),
            ));
        }
        if self.listen.session_path.is_some() && self.upstream.session_url.is_none() {
            return Err(ValidationError::at(
                "listen.sessionPath",
                "is set but upstream.sessionUrl is not: session events would have nowhere to go",
            ));
        }
        if self.delivery.reload_interval < MIN_RELOAD_INTERVAL {
            return Err(ValidationError::at(
                "delivery.reloadInterval",
                format!("must be at least {MIN_RELOAD_INTERVAL}"),
            ));
        }
        let mut hosts = std::collections::HashSet::new();
        for (i, host) in self.registries.hosts.iter().enumerate() {
            let at = format!("registries.hosts[{i}].host");
            if host.host.is_empty() || host.host.contains('/') {
                return Err(ValidationError::at(
                    at,
                    format!("`{}` must be a registry host or host:port", host.host),
                ));
            }
            if !hosts.insert(host.host.as_str()) {
                return Err(ValidationError::at(
                    at,
                    format!("`{}` is listed twice", host.host),
                ));
            }
        }
        if self.registries.timeout.get().is_zero() {
            return Err(ValidationError::at(
                "registries.timeout",
                "must be above zero",
            ));
        }
        let mut names = std::collections::HashSet::new();
        let mut chain_budget = std::time::Duration::ZERO;
        let mut instances = 0u32;
        for (i, plugin) in self.plugins.iter().enumerate() {
            let at = format!("plugins[{i}]");
            plugin.check().map_err(|e| e.within(&at))?;
            if !names.insert(plugin.name.as_str()) {
                return Err(ValidationError::at(
                    format!("{at}.name"),
                    format!("`{}` is used twice; names must be unique", plugin.name),
                ));
            }
            // A call after a discarded instance: wait, instantiate, init, call, each under the
            // timeout.
            chain_budget += plugin.limits.max_wait.get() + plugin.limits.timeout.get() * 3;
            instances = instances.saturating_add(plugin.limits.concurrency);
        }
        let total = chain_budget + self.upstream.timeout.get() + self.delivery.effect_wait.get();
        if total >= EVENT_HANDLER_TIMEOUT.get() {
            return Err(ValidationError::at(
                "upstream.timeout",
                format!(
                    "upstream.timeout ({}) and delivery.effectWait ({}) plus the plugins' worst case, maxWait + 3 × timeout each ({}), reach {}, not under event-handler's 30 s client timeout: lower them",
                    self.upstream.timeout,
                    self.delivery.effect_wait,
                    Duration(chain_budget),
                    Duration(total)
                ),
            ));
        }
        if self.delivery.effect_queue == 0 {
            return Err(ValidationError::at(
                "delivery.effectQueue",
                "must be at least 1",
            ));
        }
        // Old and new versions of every plugin may be alive together during a reload.
        if instances.saturating_mul(2) > MAX_INSTANCES {
            return Err(ValidationError::at(
                "plugins",
                format!(
                    "the plugins' concurrency adds up to {instances}; with room for a reload (twice that) it must stay within the engine's {MAX_INSTANCES} instances"
                ),
            ));
        }
        Ok(())
    }

    /// The first enforcing plugin whose failures fail the event (a redactor, say): while one is in
    /// the chain, no poison policy may send an event's original body anywhere.
    pub fn fail_closed_plugin(&self) -> Option<&PluginSettings> {
        self.plugins.iter().find(|p| p.guards_the_chain())
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

    fn refuse(text: &str) -> String {
        match SidecarConfig::parse(text) {
            Ok(_) => panic!("accepted: {text}"),
            Err(error) => error.to_string(),
        }
    }

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
        let err = refuse(&format!("{MINIMAL}delivery:\n  poisonAttempt: 3\n"));
        assert!(err.contains("poisonAttempt"), "{err}");
        let err = refuse(&format!("{MINIMAL}delivery:\n  poisonPolicy: drop\n"));
        assert!(err.contains("drop"), "{err}");
        let err = refuse(&MINIMAL.replace("v1alpha1", "v9"));
        assert!(
            err.contains("apiVersion: `eventplug.dev/v9`")
                && err.contains("eventplug.dev/v1alpha1"),
            "{err}"
        );
        let err = refuse(&MINIMAL.replace("https://fluentd:8888/test.log", "fluentd"));
        assert!(err.contains("upstream.auditUrl"), "{err}");
        let err = refuse(&format!("{MINIMAL}listen:\n  address: localhost\n"));
        assert!(err.contains("listen.address"), "{err}");
        let err = refuse(&MINIMAL.replace(
            "https://fluentd:8888/test.log",
            "https://user:hunter2@fluentd:8888/test.log",
        ));
        assert!(
            err.contains("upstream.auditUrl") && !err.contains("hunter2"),
            "{err}"
        );
        let err = refuse(&format!("{MINIMAL}  timeout: 0s\n"));
        assert!(
            err.contains("upstream.timeout: must be above zero"),
            "{err}"
        );
        let err = refuse(&format!("{MINIMAL}store:\n  configMap: x\n"));
        assert!(err.contains("configMap"), "{err}");
    }

    #[test]
    fn the_time_budget_must_stay_under_event_handlers_timeout() {
        let text = format!(
            "{MINIMAL}plugins:\n  - name: slow\n    module: slow.wasm\n    limits: {{timeout: 25s}}\n"
        );
        let err = refuse(&text);
        assert!(err.contains("30 s client timeout"), "{err}");
        let text = format!(
            "{MINIMAL}plugins:\n  - name: a\n    module: a.wasm\n  - name: a\n    module: b.wasm\n"
        );
        assert!(refuse(&text).contains("used twice"));
    }

    #[test]
    fn https_without_a_ca_is_accepted_and_sessions_need_an_upstream() {
        let config = SidecarConfig::parse(&MINIMAL.replace("  ca: ca.crt\n", ""))
            .expect("an https upstream without a CA uses the system roots");
        assert_eq!(config.upstream.ca, None);
        let plain = MINIMAL
            .replace("  ca: ca.crt\n", "")
            .replace("auditUrl: https://", "auditUrl: http://")
            .replace("  sessionUrl: https://fluentd:8888/session\n", "");
        assert!(
            SidecarConfig::parse(&plain).is_ok(),
            "plain http needs no CA"
        );
        let err = refuse(&format!("{plain}listen:\n  sessionPath: /s\n"));
        assert!(err.contains("upstream.sessionUrl is not"), "{err}");
    }

    #[test]
    fn concurrency_must_leave_room_for_a_reload() {
        let text = format!(
            "{MINIMAL}plugins:\n  - name: a\n    module: a.wasm\n    limits: {{concurrency: 100}}\n  - name: b\n    module: b.wasm\n    limits: {{concurrency: 100}}\n"
        );
        let err = refuse(&text);
        assert!(err.contains("adds up to 200"), "{err}");
    }

    #[test]
    fn connection_limits_have_defaults_and_must_be_positive() {
        let config = SidecarConfig::parse(MINIMAL).expect("valid");
        assert_eq!(config.listen.header_read_timeout, Duration::from_secs(10));
        assert_eq!(config.listen.body_read_timeout, Duration::from_secs(10));
        assert_eq!(config.listen.idle_timeout, Duration::from_secs(120));
        assert_eq!(config.listen.max_connections, 256);
        for key in ["headerReadTimeout", "bodyReadTimeout", "idleTimeout"] {
            let err = refuse(&format!("{MINIMAL}listen:\n  {key}: 0s\n"));
            assert!(err.starts_with(&format!("listen.{key}:")), "{err}");
        }
        let err = refuse(&format!("{MINIMAL}listen:\n  maxConnections: 0\n"));
        assert!(err.starts_with("listen.maxConnections:"), "{err}");
    }

    #[test]
    fn an_admin_listener_off_loopback_needs_a_status_token_and_its_own_address() {
        let err = refuse(&format!("{MINIMAL}admin:\n  address: 0.0.0.0:9090\n"));
        assert!(err.starts_with("admin.statusTokenFile:"), "{err}");
        let ok =
            format!("{MINIMAL}admin:\n  address: 0.0.0.0:9090\n  statusTokenFile: /run/token\n");
        assert!(SidecarConfig::parse(&ok).is_ok());
        let err = refuse(&format!(
            "{MINIMAL}listen:\n  address: 127.0.0.1:7000\nadmin:\n  address: 127.0.0.1:7000\n"
        ));
        assert!(err.starts_with("admin.address:"), "{err}");
        // Port 0 twice is two listeners, each with a port of its own.
        let zero =
            format!("{MINIMAL}listen:\n  address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\n");
        assert!(SidecarConfig::parse(&zero).is_ok());
        let err = refuse(&format!("{MINIMAL}admin:\n  address: nowhere\n"));
        assert!(err.starts_with("admin.address:"), "{err}");
    }

    #[test]
    fn cert_and_key_go_together() {
        let text = MINIMAL.replace("  sessionUrl", "  cert: c.pem\n  sessionUrl");
        assert!(refuse(&text).contains("upstream.cert and upstream.key"));
    }

    /// Every documented key (docs/sidecar.md), set to a value other than its default.
    const EVERY_KEY: &str = r#"
apiVersion: eventplug.dev/v1alpha2
kind: SidecarConfig
revision: 42
listen:
  address: 127.0.0.1:9888
  maxBodyBytes: 4Mi
  auditPath: /in.log
  sessionPath: /in.session
  headerReadTimeout: 3s
  bodyReadTimeout: 4s
  idleTimeout: 30s
  maxConnections: 64
admin:
  address: 0.0.0.0:9191
  statusTokenFile: /var/run/secrets/eventplug/status-token
upstream:
  auditUrl: https://fluentd:8888/test.log
  sessionUrl: https://fluentd:8888/session
  ca: /certs/ca.crt
  cert: /certs/client.crt
  key: /certs/client.key
  timeout: 5s
delivery:
  poisonAttempts: 5
  poisonPolicy: block
  quarantineTag: poison.log
  verdictCacheEntries: 500
  verdictCacheTtl: 1m30s
  shutdownGrace: 2s
  reloadInterval: 250ms
  effectWait: 2s
  effectQueue: 50
registries:
  pullSecret: /var/run/secrets/eventplug/pull
  cacheDir: /var/cache/eventplug/oci
  timeout: 20s
  maxModuleBytes: 32Mi
  hosts:
    - host: registry.internal:5000
      plainHttp: true
    - host: ghcr.io
      ca: /certs/registry-ca.crt
plugins:
  - name: redact
    module: /modules/redact.wasm
    digest: sha256:0000000000000000000000000000000000000000000000000000000000000000
    version: "1.2.0"
    priority: -5
    events: [user.login, "session.*"]
    mode: shadow
    failurePolicy: FailClosed
    config: {fields: [password], nested: {deep: true}}
    limits:
      timeout: 50ms
      memoryLimit: 16Mi
      concurrency: 4
      maxWait: 1s
      maxOutput: 1Mi
      maxLogLinesPerCall: 8
    suspend: true
stop: "FailClosed plugin redact is refused by policy"
store: {}
teleport: {}
alerts: {}
logging:
  format: json
source:
  kubernetes:
    namespace: teleport
    secret: eh-eventplug
    key: config.yaml
    moduleConfigMaps: [eh-eventplug-modules-0, eh-eventplug-modules-1]
"#;

    #[test]
    fn source_needs_v1alpha2_and_names_its_objects() {
        let v1 = EVERY_KEY.replace("eventplug.dev/v1alpha2", "eventplug.dev/v1alpha1");
        let err = SidecarConfig::parse(&v1).unwrap_err().to_string();
        assert!(err.contains("source") && err.contains("v1alpha2"), "{err}");
        let empty = EVERY_KEY.replace("secret: eh-eventplug", "secret: ''");
        let err = SidecarConfig::parse(&empty).unwrap_err().to_string();
        assert!(err.contains("source.kubernetes.secret"), "{err}");
        // The previous version still reads as before.
        let config = SidecarConfig::parse(MINIMAL).expect("v1alpha1 reads");
        assert_eq!(config.api_version, API_VERSION_V1ALPHA1);
    }

    #[test]
    fn every_documented_key_renders_and_parses_back_to_the_same_value() {
        let config = SidecarConfig::parse(EVERY_KEY).expect("every key is valid");
        let defaults = SidecarConfig::parse(MINIMAL).expect("valid");
        assert_ne!(config.listen, defaults.listen);
        assert_ne!(config.admin, defaults.admin);
        assert_ne!(config.delivery, defaults.delivery);
        assert_eq!(config.plugins[0].limits.memory_limit, ByteSize(16 << 20));
        assert_eq!(config.delivery.verdict_cache_ttl, Duration::from_secs(90));
        let rendered = config.to_yaml().expect("renders");
        let again = SidecarConfig::parse(&rendered).expect("the rendering parses");
        assert_eq!(again, config, "{rendered}");
        let minimal_again = SidecarConfig::parse(&defaults.to_yaml().expect("renders"));
        assert_eq!(minimal_again.expect("parses"), defaults);
    }

    #[test]
    fn the_documented_config_parses_and_renders_back_to_the_same_value() {
        // The full example in docs/sidecar.md, so a key documented there cannot go untested.
        let doc = include_str!("../../../docs/sidecar.md");
        let start = doc
            .find("```yaml\napiVersion")
            .expect("the example config block")
            + 8;
        let end = start + doc[start..].find("```").expect("the block's end");
        let config =
            SidecarConfig::parse(&doc[start..end]).expect("the documented config is valid");
        assert_eq!(config.plugins.len(), 1);
        let again = SidecarConfig::parse(&config.to_yaml().expect("renders")).expect("parses");
        assert_eq!(again, config);
    }

    #[test]
    fn errors_carry_the_path_of_the_bad_key() {
        let text = format!(
            "{MINIMAL}plugins:\n  - name: a\n    module: a.wasm\n  - name: b\n    module: b.wasm\n    limits: {{timeout: 0}}\n"
        );
        let err = SidecarConfig::parse(&text).unwrap_err();
        assert_eq!(err.path, "plugins[1].limits.timeout", "{err}");
        let text = format!("{MINIMAL}delivery:\n  verdictCacheTtl: 15\n");
        let err = SidecarConfig::parse(&text).unwrap_err();
        assert_eq!(err.path, "delivery.verdictCacheTtl", "{err}");
        assert!(err.message.contains("a number, not a duration"), "{err}");
    }

    #[test]
    fn a_refused_config_never_echoes_a_plugins_config_values() {
        let text = format!(
            "{MINIMAL}plugins:\n  - name: a\n    module: a.wasm\n    config: {{apiKey: hunter2-secret}}\n    limits: {{timeout: soon}}\n"
        );
        let err = refuse(&text);
        assert!(err.contains("plugins[0].limits.timeout"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        assert!(!err.contains('\n'), "one line: {err}");
    }

    #[test]
    fn forwarding_poison_events_past_a_fail_closed_plugin_is_refused() {
        let chain =
            "plugins:\n  - name: redact\n    module: r.wasm\n    failurePolicy: FailClosed\n";
        let err = refuse(&format!(
            "{MINIMAL}delivery:\n  poisonPolicy: forward\n{chain}"
        ));
        assert!(
            err.starts_with("delivery.poisonPolicy:") && err.contains("`redact`"),
            "{err}"
        );
        for policy in ["block", "quarantine"] {
            let text = format!("{MINIMAL}delivery:\n  poisonPolicy: {policy}\n{chain}");
            assert!(SidecarConfig::parse(&text).is_ok(), "{policy}");
        }
        let shadow = chain.replace(
            "failurePolicy: FailClosed",
            "failurePolicy: FailClosed\n    mode: shadow",
        );
        let text = format!("{MINIMAL}delivery:\n  poisonPolicy: forward\n{shadow}");
        assert!(
            SidecarConfig::parse(&text).is_ok(),
            "a shadow plugin guards nothing"
        );
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let err = refuse(&format!(
            "{MINIMAL}delivery:\n  poisonAttempts: 3\n  poisonAttempts: 4\n"
        ));
        assert!(err.to_lowercase().contains("duplicate"), "{err}");
    }
}
