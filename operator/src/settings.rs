//! The operator's own settings (`eventplug-operator run --settings FILE`), written by the platform
//! team: the policy, the sidecar image, how to reach the registries modules come from, and how often
//! running sidecars are asked what they run.

use crate::crd::EventPluginTargetSpec;
use crate::policy::Policy;
use eventplug_contract::{Duration, ValidationError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Everything `eventplug-operator run` is told.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Settings {
    /// What EventPlugins may ask for; `policy.allowedNamespaces` is also where the operator acts.
    pub policy: Policy,
    /// The sidecar image injected beside event-handler.
    pub sidecar_image: String,
    /// How a new `sidecarImage` reaches targets already injected: `paced` (default: one target at
    /// a time, each rolled out and Ready before the next) or `manual` (only targets annotated
    /// `eventplug.dev/upgrade-sidecar: "true"`, paced).
    #[serde(default)]
    pub sidecar_upgrade: crate::upgrade::SidecarUpgrade,
    /// The newest config `apiVersion` `sidecarImage` reads, when it is an older release than the
    /// operator (default: the newest this operator writes). Running sidecars report what they
    /// read and are always given a version they do; this is for pods not started yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar_config_api_version: Option<String>,
    /// What a target gets where its EventPluginTarget says nothing (or it has none).
    #[serde(default)]
    pub sidecar_defaults: SidecarDefaults,
    /// How to reach registries, by `host[:port]`; a host not listed is HTTPS with the system roots.
    #[serde(default)]
    pub registries: BTreeMap<String, RegistryAccess>,
    /// How often the operator asks a target's running sidecars what they run while its
    /// EventPlugins are not Ready yet (once Ready, six times less often).
    #[serde(default = "default_status_interval")]
    pub status_interval: Duration,
    /// The operator's own `/healthz` and `/metrics`.
    #[serde(default = "default_metrics_address")]
    pub metrics_address: String,
    /// The validating admission webhook that refuses a target's pods without the sidecar.
    /// Without it, a pod of a target can run unfiltered until the operator re-injects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSettings>,
    /// Leader election among replicas (a Lease): one reconciles, every one serves the webhook.
    /// Without it, run one replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader_election: Option<crate::leader::LeaderElection>,
}

/// The platform's defaults for every target's sidecar; an EventPluginTarget's own values win.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct SidecarDefaults {
    /// The sidecar container's CPU request (Kubernetes quantity; default `10m`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Its CPU limit (default: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<String>,
    /// Memory above what its plugins need (default: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_headroom: Option<eventplug_contract::ByteSize>,
    /// The poison policy (default: the sidecar's, `quarantine`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poison_policy: Option<eventplug_contract::PoisonPolicy>,
    /// Failed attempts of one event before the poison policy applies (default: the sidecar's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poison_attempts: Option<u32>,
    /// The largest event body accepted (default: the sidecar's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<eventplug_contract::ByteSize>,
    /// The sidecar's admin port, on every interface of the pod: probes, metrics and the
    /// operator's `/status` reads (default 9090; another for a pod where 9090 is taken).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admin_port: Option<u16>,
}

impl SidecarDefaults {
    /// The sidecar's admin port.
    pub fn admin_port(&self) -> u16 {
        self.admin_port.unwrap_or(crate::render::DEFAULT_ADMIN_PORT)
    }

    /// The target's settings with these defaults where it says nothing.
    pub fn apply(&self, target: Option<EventPluginTargetSpec>) -> Option<EventPluginTargetSpec> {
        if *self == Self::default() {
            return target;
        }
        let mut spec = target.unwrap_or_default();
        spec.poison_policy = spec.poison_policy.or(self.poison_policy);
        spec.poison_attempts = spec.poison_attempts.or(self.poison_attempts);
        spec.max_body_bytes = spec.max_body_bytes.or(self.max_body_bytes);
        if self.cpu.is_some() || self.memory_headroom.is_some() {
            let sidecar = spec.sidecar.get_or_insert_with(Default::default);
            sidecar.cpu = sidecar.cpu.take().or_else(|| self.cpu.clone());
            sidecar.memory_headroom = sidecar.memory_headroom.or(self.memory_headroom);
        }
        Some(spec)
    }

    fn check(&self) -> Result<(), String> {
        for (key, value) in [("cpu", &self.cpu), ("cpuLimit", &self.cpu_limit)] {
            if let Some(value) = value
                && nanocores(value).is_none()
            {
                return Err(format!(
                    "sidecarDefaults.{key}: {value:?} is not a CPU quantity (`100m`, `0.5`, `1`)"
                ));
            }
        }
        if let Some(limit) = &self.cpu_limit {
            let cpu = self.cpu.as_deref().unwrap_or(DEFAULT_SIDECAR_CPU);
            if cpu_above_limit(cpu, limit)? {
                return Err(format!(
                    "sidecarDefaults.cpu {cpu} is above sidecarDefaults.cpuLimit {limit}: a request cannot exceed its limit"
                ));
            }
        }
        if let Some(port) = self.admin_port
            && (port == 0 || port == crate::render::LISTEN_PORT)
        {
            return Err(format!(
                "sidecarDefaults.adminPort: {port} cannot be the sidecar's admin port (1-65535, not its ingest port {})",
                crate::render::LISTEN_PORT
            ));
        }
        if matches!(self.poison_attempts, Some(0 | 101..)) {
            return Err("sidecarDefaults.poisonAttempts: must be between 1 and 100 (as an EventPluginTarget's)".into());
        }
        Ok(())
    }
}

/// The sidecar container's CPU request when neither the settings nor its EventPluginTarget name
/// one.
pub const DEFAULT_SIDECAR_CPU: &str = "10m";

/// A CPU quantity as the sidecar's resources take it (`100m`, `0.5`, `2`) in nanocores, the
/// API server's precision (finer digits round up, as it rounds them); `None` when it is not one,
/// or too large to count.
pub fn nanocores(quantity: &str) -> Option<u128> {
    let (number, scale) = match quantity.strip_suffix('m') {
        Some(milli) => (milli, 6),
        None => (quantity, 9),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || !digits(fraction) || whole.len() > 20 {
        return None;
    }
    let kept = &fraction[..fraction.len().min(scale)];
    let mut nano: u128 = format!("{kept:0<scale$}").parse().ok()?;
    if fraction.bytes().skip(scale).any(|b| b != b'0') {
        nano += 1;
    }
    whole
        .parse::<u128>()
        .ok()?
        .checked_mul(10u128.pow(scale as u32))?
        .checked_add(nano)
}

/// Whether CPU request `request` is above `limit` (a pod the API server refuses); `Err` names a
/// value that is not a CPU quantity.
pub fn cpu_above_limit(request: &str, limit: &str) -> Result<bool, String> {
    let count = |value: &str| {
        nanocores(value)
            .ok_or_else(|| format!("{value:?} is not a CPU quantity (`100m`, `0.5`, `1`)"))
    };
    Ok(count(request)? > count(limit)?)
}

/// Where the webhook is served and how the API server reaches it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookSettings {
    /// Where the operator listens (`host:port`; port 0 picks a free one).
    pub address: String,
    /// The API server reaches it at this URL base (`https://host:port`); default:
    /// `https://<the bound address>`. For an operator outside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Or through this Service in front of the operator's pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<WebhookService>,
    /// A Secret (made when missing) that keeps the webhook's CA, so that a restarted operator and
    /// every replica serve certificates the configurations' `caBundle` already trusts. Without
    /// it the CA is made anew at each start, and a target's pods are refused until its next
    /// reconcile writes the new `caBundle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretRef>,
}

/// A Secret by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// A Service in front of the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct WebhookService {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its port.
    #[serde(default = "default_webhook_port")]
    pub port: u16,
}

fn default_webhook_port() -> u16 {
    443
}

/// How one registry is reached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RegistryAccess {
    /// Plain HTTP (a registry inside the cluster or on the node).
    #[serde(default)]
    pub plain_http: bool,
    /// Trust only this CA certificate (PEM file) for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

fn default_status_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_metrics_address() -> String {
    "0.0.0.0:8080".into()
}

impl Settings {
    /// Reads and checks the settings file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the settings file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("settings file {}: {e}", path.display()))
    }

    /// Parses settings from YAML and checks them.
    pub fn parse(text: &str) -> Result<Self, String> {
        let settings: Settings =
            eventplug_contract::from_yaml(text).map_err(|e: ValidationError| e.to_string())?;
        if settings.sidecar_image.trim().is_empty() {
            return Err("sidecarImage is empty: name the eventplug sidecar image".into());
        }
        if settings.policy.allowed_namespaces.is_empty() {
            return Err(
                "policy.allowedNamespaces is empty: the operator would act nowhere; name the namespaces of the event-handler Deployments".into(),
            );
        }
        if let Some(webhook) = &settings.webhook {
            if webhook.url.is_some() && webhook.service.is_some() {
                return Err("webhook: give url or service, not both".into());
            }
            if let Some(url) = webhook.url.as_ref().filter(|u| !u.starts_with("https://")) {
                return Err(format!(
                    "webhook.url {url} must be https://…: the API server speaks TLS to webhooks"
                ));
            }
        }
        if let Some(election) = &settings.leader_election {
            election.check()?;
        }
        if let Some(version) = settings
            .sidecar_config_api_version
            .as_deref()
            .filter(|v| crate::render::known_api_version(v).is_none())
        {
            return Err(format!(
                "sidecarConfigApiVersion `{version}` is not a config apiVersion this operator writes ({})",
                eventplug_contract::ACCEPTED_API_VERSIONS.join(", ")
            ));
        }
        if settings.status_interval.0.is_zero() {
            return Err("statusInterval must be more than 0".into());
        }
        settings.sidecar_defaults.check()?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecar_defaults_fill_what_a_target_leaves_unsaid_and_refuse_bad_quantities() {
        let settings = Settings::parse(
            "policy: {allowedNamespaces: [a]}
sidecarImage: x
sidecarDefaults: {cpu: 20m, cpuLimit: '1', memoryHeadroom: 32Mi, poisonPolicy: block, poisonAttempts: 3, maxBodyBytes: 1Mi}
",
        )
        .expect("valid settings");
        let defaults = &settings.sidecar_defaults;
        let none = defaults.apply(None).expect("defaults make a target spec");
        assert_eq!(
            none.poison_policy,
            Some(eventplug_contract::PoisonPolicy::Block)
        );
        assert_eq!(none.poison_attempts, Some(3));
        assert_eq!(
            none.max_body_bytes,
            Some(eventplug_contract::ByteSize(1 << 20))
        );
        let sidecar = none.sidecar.expect("sidecar resources");
        assert_eq!(sidecar.cpu.as_deref(), Some("20m"));
        assert_eq!(
            sidecar.memory_headroom,
            Some(eventplug_contract::ByteSize(32 << 20))
        );
        let own = EventPluginTargetSpec {
            poison_attempts: Some(9),
            sidecar: Some(crate::crd::SidecarResources {
                cpu: Some("300m".into()),
                memory_headroom: None,
            }),
            ..Default::default()
        };
        let merged = defaults.apply(Some(own)).expect("a target spec");
        assert_eq!(
            merged.poison_attempts,
            Some(9),
            "the target's own value wins"
        );
        assert_eq!(
            merged.poison_policy,
            Some(eventplug_contract::PoisonPolicy::Block)
        );
        let sidecar = merged.sidecar.expect("sidecar resources");
        assert_eq!(sidecar.cpu.as_deref(), Some("300m"));
        assert_eq!(
            sidecar.memory_headroom,
            Some(eventplug_contract::ByteSize(32 << 20))
        );
        assert_eq!(
            SidecarDefaults::default().apply(None),
            None,
            "no defaults, no target spec"
        );

        let err = Settings::parse(
            "policy: {allowedNamespaces: [a]}\nsidecarImage: x\nsidecarDefaults: {cpuLimit: lots}\n",
        )
        .unwrap_err();
        assert!(err.contains("sidecarDefaults.cpuLimit"), "{err}");
        for bad in ["nan", "-1", "1e3", "inf", "m", "1."] {
            let err = Settings::parse(&format!(
                "policy: {{allowedNamespaces: [a]}}\nsidecarImage: x\nsidecarDefaults: {{cpu: '{bad}'}}\n"
            ))
            .unwrap_err();
            assert!(err.contains("sidecarDefaults.cpu"), "{bad}: {err}");
        }
        let err = Settings::parse(
            "policy: {allowedNamespaces: [a]}\nsidecarImage: x\nsidecarDefaults: {cpu: '2', cpuLimit: 500m}\n",
        )
        .unwrap_err();
        assert!(err.contains("above sidecarDefaults.cpuLimit"), "{err}");
        // Without its own request the sidecar gets the built-in one, which a limit must allow.
        let err = Settings::parse(
            "policy: {allowedNamespaces: [a]}\nsidecarImage: x\nsidecarDefaults: {cpuLimit: 5m}\n",
        )
        .unwrap_err();
        assert!(err.contains("cpu 10m is above"), "{err}");
        for port in [0, 8888] {
            let err = Settings::parse(&format!(
                "policy: {{allowedNamespaces: [a]}}\nsidecarImage: x\nsidecarDefaults: {{adminPort: {port}}}\n"
            ))
            .unwrap_err();
            assert!(err.contains("sidecarDefaults.adminPort"), "{port}: {err}");
        }
        let moved = Settings::parse(
            "policy: {allowedNamespaces: [a]}\nsidecarImage: x\nsidecarDefaults: {adminPort: 9191}\n",
        )
        .expect("adminPort 9191");
        assert_eq!(moved.sidecar_defaults.admin_port(), 9191);
        assert_eq!(SidecarDefaults::default().admin_port(), 9090);
        let err = Settings::parse(
            "policy: {allowedNamespaces: [a]}\nsidecarImage: x\nsidecarDefaults: {poisonAttempts: 0}\n",
        )
        .unwrap_err();
        assert!(err.contains("poisonAttempts"), "{err}");
    }

    #[test]
    fn cpu_quantities_count_in_nanocores() {
        for (quantity, nano) in [
            ("100m", Some(100_000_000)),
            ("0.5", Some(500_000_000)),
            ("2", Some(2_000_000_000)),
            ("1.25", Some(1_250_000_000)),
            ("0.0001", Some(100_000)),
            ("1.5m", Some(1_500_000)),
            ("0.5000", Some(500_000_000)),
            ("0.0000000001", Some(1)),
            (
                "99999999999999999999",
                Some(99_999_999_999_999_999_999_000_000_000),
            ),
            ("x", None),
            ("1.", None),
            ("-1", None),
            ("1e3", None),
            ("999999999999999999999", None),
        ] {
            assert_eq!(nanocores(quantity), nano, "{quantity}");
        }
        assert_eq!(cpu_above_limit("1.0004", "1.0001"), Ok(true));
        assert_eq!(cpu_above_limit("500m", "0.5"), Ok(false));
        assert_eq!(cpu_above_limit("2", "1999m"), Ok(true));
        assert!(cpu_above_limit("lots", "1").is_err());
    }

    #[test]
    fn settings_read_with_defaults_and_refuse_what_would_do_nothing() {
        let settings = Settings::parse(
            "policy: {allowedNamespaces: [teleport], allowedRegistries: ['r:5000']}
sidecarImage: r:5000/eventplug/sidecar:1
registries: {'r:5000': {plainHttp: true}}
",
        )
        .expect("valid settings");
        assert_eq!(settings.status_interval, Duration::from_secs(5));
        assert!(settings.registries["r:5000"].plain_http);
        assert_eq!(settings.policy.allowed_registries, ["r:5000"]);

        let err = Settings::parse(
            "policy: {allowedNamespaces: [a]}\nsidecarImage: x\nwebhook: {address: '0.0.0.0:8443', url: 'http://x'}\n",
        )
        .unwrap_err();
        assert!(err.contains("https"), "{err}");
        let err = Settings::parse(
            "policy: {allowedNamespaces: [a]}\nsidecarImage: x\nleaderElection: {namespace: a, leaseDuration: 5s, renewInterval: 5s}\n",
        )
        .unwrap_err();
        assert!(err.contains("renewInterval"), "{err}");
        let err = Settings::parse("policy: {}\nsidecarImage: x\n").unwrap_err();
        assert!(err.contains("allowedNamespaces"), "{err}");
        let err =
            Settings::parse("policy: {allowedNamespaces: [a]}\nsidecarImage: ''\n").unwrap_err();
        assert!(err.contains("sidecarImage"), "{err}");
        let err = Settings::parse("policy: {allowedNamespaces: [a]}\nsidecarImage: x\nimage: y\n")
            .unwrap_err();
        assert!(err.contains("image"), "{err}");
        let err = Settings::parse(
            "policy: {allowedNamespaces: [a]}\nsidecarImage: x\nsidecarConfigApiVersion: eventplug.dev/v0\n",
        )
        .unwrap_err();
        assert!(err.contains("sidecarConfigApiVersion"), "{err}");
        let upgrade = Settings::parse(
            "policy: {allowedNamespaces: [a]}\nsidecarImage: x\nsidecarUpgrade: manual\nsidecarConfigApiVersion: eventplug.dev/v1alpha1\n",
        )
        .expect("valid");
        assert_eq!(
            upgrade.sidecar_upgrade,
            crate::upgrade::SidecarUpgrade::Manual
        );
    }
}
