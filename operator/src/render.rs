//! The desired sidecar config of one target: every EventPlugin selecting it, in order, as the
//! contract crate's `SidecarConfig`, and the memory the sidecar container needs. Pure: the same
//! inputs give the same config, byte for byte, so an unchanged plugin set writes nothing.
//!
//! A plugin the policy refuses, or that would not fit the sidecar's memory ceiling, is left out
//! with its reason, unless it is an enforcing FailClosed plugin (a redactor): then the whole target
//! is stopped (`stop`: every event refused with 503) rather than run without it.

use crate::crd::{EventPluginSpec, EventPluginTargetSpec};
use crate::discovery::Upstream;
use crate::policy::{Policy, Refusal};
use eventplug_contract::{
    AdminConfig, ByteSize, DeliveryConfig, FailurePolicy, KubernetesSource, ListenConfig, Mode,
    PluginSettings, SidecarConfig, SourceConfig, UpstreamConfig,
};
use std::path::PathBuf;

/// The sidecar's ingest port on loopback, where event-handler is redirected.
pub const LISTEN_PORT: u16 = 8888;
/// The sidecar's admin port (probes, metrics, status) unless the settings name another
/// (`sidecarDefaults.adminPort`).
pub const DEFAULT_ADMIN_PORT: u16 = 9090;
/// The name of the sidecar container's admin port, which probes and monitors use.
pub const ADMIN_PORT_NAME: &str = "eventplug-admin";

/// The sidecar's admin address for `port`: every interface of the pod, for kubelet's probes and
/// the operator's `/status` reads.
pub fn admin_address(port: u16) -> String {
    format!("0.0.0.0:{port}")
}
/// Where the sidecar finds modules, one file per digest.
pub const MODULES_DIR: &str = "/var/run/eventplug/modules";
/// Where the sidecar's own copy of the fluentd certificate Secret is mounted.
pub const FLUENTD_CERTS_DIR: &str = "/var/run/eventplug/fluentd";
/// The `/status` bearer token the operator provides.
pub const STATUS_TOKEN_FILE: &str = "/var/run/eventplug/admin/status-token";
/// Memory of the sidecar besides its plugins' instances (measured: about 40 MiB with 4 instances).
pub const BASE_MEMORY: ByteSize = ByteSize(64 << 20);
/// The most memory a sidecar container is given; plugins that would need more are refused.
pub const MAX_SIDECAR_MEMORY: ByteSize = ByteSize(2 << 30);

/// One EventPlugin selecting the target, with what the operator resolved for it.
#[derive(Debug, Clone)]
pub struct PluginInput<'a> {
    /// The EventPlugin's name (the plugin's name in the chain).
    pub name: &'a str,
    /// Its spec.
    pub spec: &'a EventPluginSpec,
    /// The module digest the reference resolved to (`sha256:<hex>`).
    pub digest: &'a str,
    /// `config` with `configFrom` merged in.
    pub config: Option<serde_json::Value>,
}

/// What the target's sidecar runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The config.
    pub config: SidecarConfig,
    /// The sidecar container's memory limit.
    pub memory_limit: ByteSize,
    /// EventPlugins left out, with why.
    pub refused: Vec<(String, Refusal)>,
}

/// The config `apiVersion` to render for a target: the newest this operator writes that every
/// reporting sidecar reads (`reads`: one list per sidecar of the image the pods are to run), or,
/// with no report (no such sidecar runs yet, or none answers), `unreported`.
pub fn api_version_for(reads: &[Vec<&str>], unreported: &'static str) -> &'static str {
    let known = eventplug_contract::ACCEPTED_API_VERSIONS;
    if reads.is_empty() {
        return unreported;
    }
    known
        .iter()
        .find(|version| reads.iter().all(|r| r.contains(version)))
        .copied()
        .unwrap_or_else(|| oldest_api_version())
}

/// The oldest config `apiVersion` this operator writes.
pub fn oldest_api_version() -> &'static str {
    eventplug_contract::ACCEPTED_API_VERSIONS
        .last()
        .copied()
        .unwrap_or(eventplug_contract::API_VERSION)
}

/// A config `apiVersion` this operator writes, by name.
pub fn known_api_version(name: &str) -> Option<&'static str> {
    eventplug_contract::ACCEPTED_API_VERSIONS
        .iter()
        .find(|v| **v == name)
        .copied()
}

/// Gives `config` the `apiVersion` chosen for the target, with what that version adds: from
/// v1alpha2 the sidecar also follows its config Secret through the API (`source.kubernetes`)
/// when `follows_api` (its pod has the token for it).
pub fn set_api_version(
    config: &mut SidecarConfig,
    api_version: &str,
    follows_api: bool,
    namespace: &str,
    target: &str,
) {
    config.api_version = api_version.to_string();
    let follows = follows_api && api_version != eventplug_contract::API_VERSION_V1ALPHA1;
    config.source = follows.then(|| SourceConfig {
        kubernetes: KubernetesSource {
            namespace: namespace.to_string(),
            secret: crate::inject::secret_name(target),
            key: crate::inject::CONFIG_KEY.to_string(),
            module_config_maps: (0..crate::modules::MODULE_CONFIG_MAPS)
                .map(|i| crate::inject::modules_config_map_name(target, i))
                .collect(),
        },
    });
}

/// The file a module of `digest` is at in the sidecar.
pub fn module_path(digest: &str) -> PathBuf {
    PathBuf::from(MODULES_DIR).join(format!("{}.wasm", digest.replace(':', "-")))
}

/// The memory one plugin's instances may take: each of `concurrency` instances up to its memory
/// limit, twice over while a reload runs the old and new versions side by side.
pub fn plugin_memory(spec: &EventPluginSpec) -> u64 {
    spec.limits
        .memory_limit
        .get()
        .saturating_mul(u64::from(spec.limits.concurrency))
        .saturating_mul(2)
}

/// Renders the target's sidecar config from `plugins` (any order) and its `upstream`, as revision
/// `revision` (one more than the last rendered for the target, whenever the rendering changes).
pub fn render(
    revision: u64,
    namespace: &str,
    upstream: &Upstream,
    target: Option<&EventPluginTargetSpec>,
    plugins: &[PluginInput<'_>],
    policy: &Policy,
) -> Result<Rendered, String> {
    let mut ordered: Vec<&PluginInput<'_>> = plugins.iter().collect();
    ordered.sort_by(|a, b| (a.spec.priority, a.name).cmp(&(b.spec.priority, b.name)));
    let headroom = target
        .and_then(|t| t.sidecar.as_ref())
        .and_then(|s| s.memory_headroom)
        .unwrap_or(ByteSize(0));
    let mut memory = BASE_MEMORY.get().saturating_add(headroom.get());
    let mut refused = Vec::new();
    let mut chain = Vec::new();
    for plugin in ordered {
        let need = plugin_memory(plugin.spec);
        let refusal = policy.check(namespace, plugin.spec).err().or_else(|| {
            (memory.saturating_add(need) > MAX_SIDECAR_MEMORY.get()).then(|| Refusal {
                reason: "InsufficientMemory",
                message: format!(
                    "the sidecar would need {} with this plugin (its instances: {} × {} × 2 for reloads), over the {} a sidecar is given: lower limits.memoryLimit or limits.concurrency",
                    ByteSize(memory.saturating_add(need)),
                    plugin.spec.limits.concurrency,
                    plugin.spec.limits.memory_limit,
                    MAX_SIDECAR_MEMORY
                ),
            })
        });
        if let Some(refusal) = refusal {
            refused.push((plugin.name.to_string(), refusal));
            continue;
        }
        memory = memory.saturating_add(need);
        chain.push(plugin_settings(plugin));
    }
    let stop = refused
        .iter()
        .filter(|(name, _)| {
            plugins.iter().any(|p| {
                p.name == name
                    && p.spec.mode == Mode::Enforce
                    && p.spec.failure_policy == FailurePolicy::FailClosed
            })
        })
        .map(|(name, refusal)| format!("FailClosed plugin {name} is not loaded: {refusal}"))
        .next();
    let mut delivery = DeliveryConfig::default();
    if let Some(target) = target {
        if let Some(policy) = target.poison_policy {
            delivery.poison_policy = policy;
        }
        if let Some(attempts) = target.poison_attempts {
            delivery.poison_attempts = attempts;
        }
    }
    let specs: Vec<(&str, &EventPluginSpec)> = plugins.iter().map(|p| (p.name, p.spec)).collect();
    policy
        .check_poison_policy(delivery.poison_policy, &specs)
        .map_err(|r| r.message)?;
    let mut listen = ListenConfig {
        address: format!("127.0.0.1:{LISTEN_PORT}"),
        ..ListenConfig::default()
    };
    if let Some(size) = target.and_then(|t| t.max_body_bytes) {
        listen.max_body_bytes = size;
    }
    let certificate = |file: &Option<(crate::discovery::Found, crate::discovery::SecretFile)>,
                       name: &str| {
        file.as_ref()
            .map(|_| PathBuf::from(FLUENTD_CERTS_DIR).join(name))
    };
    let config = SidecarConfig {
        api_version: eventplug_contract::API_VERSION.into(),
        kind: eventplug_contract::KIND.into(),
        revision,
        listen,
        admin: AdminConfig {
            address: admin_address(DEFAULT_ADMIN_PORT),
            status_token_file: Some(STATUS_TOKEN_FILE.into()),
        },
        upstream: UpstreamConfig {
            audit_url: upstream.url.value.clone(),
            session_url: upstream.session_url.as_ref().map(|f| f.value.clone()),
            ca: certificate(&upstream.ca, "ca.crt"),
            cert: certificate(&upstream.cert, "client.crt"),
            key: certificate(&upstream.key, "client.key"),
            timeout: eventplug_contract::Duration::from_secs(10),
        },
        delivery,
        plugins: chain,
        stop,
        registries: Default::default(),
        store: None,
        teleport: None,
        alerts: None,
        logging: eventplug_contract::LoggingConfig {
            format: eventplug_contract::LogFormat::Json,
        },
        source: None,
    };
    config.check().map_err(|e| e.to_string())?;
    Ok(Rendered {
        config,
        memory_limit: ByteSize(memory),
        refused,
    })
}

fn plugin_settings(plugin: &PluginInput<'_>) -> PluginSettings {
    let spec = plugin.spec;
    PluginSettings {
        name: plugin.name.to_string(),
        module: module_path(plugin.digest),
        digest: Some(plugin.digest.to_string()),
        version: spec
            .module
            .reference
            .rsplit_once(':')
            .filter(|(_, tag)| !tag.contains('/'))
            .map(|(_, tag)| tag.split('@').next().unwrap_or(tag).to_string()),
        priority: spec.priority,
        events: spec.events.clone(),
        mode: spec.mode,
        failure_policy: spec.failure_policy,
        config: plugin.config.clone(),
        limits: spec.limits,
        suspend: spec.suspend,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{Found, SecretFile, Source};
    use eventplug_contract::{API_VERSION_V1ALPHA1 as V1, API_VERSION_V1ALPHA2 as V2};

    #[test]
    fn the_newest_version_every_sidecar_reads_is_rendered() {
        // Every sidecar reads both: the newest.
        assert_eq!(api_version_for(&[vec![V2, V1], vec![V2, V1]], V1), V2);
        // One sidecar of the previous release (it reports only the version it runs): the older.
        assert_eq!(api_version_for(&[vec![V2, V1], vec![V1]], V2), V1);
        // No sidecar answers: what the caller knows of the image.
        assert_eq!(api_version_for(&[], V1), V1);
        assert_eq!(api_version_for(&[], V2), V2);
        // Nothing in common with what this operator writes: the oldest it writes.
        assert_eq!(api_version_for(&[vec!["eventplug.dev/v0"]], V2), V1);
        assert_eq!(known_api_version(V1), Some(V1));
        assert_eq!(known_api_version("eventplug.dev/v0"), None);
    }

    #[test]
    fn v1alpha2_follows_the_secret_through_the_api_and_v1alpha1_does_not() {
        let rendered =
            render(7, "ns", &upstream(), None, &[], &Policy::default()).expect("renders");
        let mut config = rendered.config;
        set_api_version(&mut config, V2, false, "ns", "eh");
        assert!(config.source.is_none(), "no token, no API source");
        set_api_version(&mut config, V2, true, "ns", "eh");
        let source = config.source.as_ref().expect("a source");
        assert_eq!(source.kubernetes.secret, "eh-eventplug");
        assert_eq!(source.kubernetes.namespace, "ns");
        assert_eq!(
            source.kubernetes.module_config_maps.len(),
            crate::modules::MODULE_CONFIG_MAPS
        );
        config.check().expect("valid v1alpha2");
        set_api_version(&mut config, V1, true, "ns", "eh");
        assert!(config.source.is_none());
        config.check().expect("valid v1alpha1");
        // What a sidecar of the previous release reads: no `source` key in the text at all.
        let text = config.to_yaml().expect("yaml");
        assert!(!text.contains("source"), "{text}");
    }

    fn upstream() -> Upstream {
        let found = |value: &str| Found {
            value: value.into(),
            source: Source::Toml,
        };
        let secret = |key: &str| SecretFile {
            secret: "fluentd-tls".into(),
            key: key.into(),
        };
        Upstream {
            url: found("https://fluentd:8888/events.log"),
            session_url: Some(found("https://fluentd:8888/session.log")),
            ca: Some((found("/x/ca.crt"), secret("ca.crt"))),
            cert: Some((found("/x/client.crt"), secret("client.crt"))),
            key: Some((found("/x/client.key"), secret("client.key"))),
            config_file: None,
            storage: None,
        }
    }

    fn spec(extra: serde_json::Value) -> EventPluginSpec {
        let mut value = serde_json::json!({
            "module": {"reference": "registry.internal:5000/plugins/p:v1"},
            "target": {"deployment": "event-handler"},
        });
        if let (Some(base), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(value).expect("a spec")
    }

    fn policy() -> Policy {
        Policy {
            allowed_namespaces: vec!["teleport".into()],
            allowed_registries: vec!["registry.internal:5000".into()],
            ..Policy::default()
        }
    }

    const DIGEST: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    fn input<'a>(name: &'a str, spec: &'a EventPluginSpec) -> PluginInput<'a> {
        PluginInput {
            name,
            spec,
            digest: DIGEST,
            config: spec.config.clone(),
        }
    }

    #[test]
    fn plugins_run_by_priority_then_name_and_the_rendering_is_stable() {
        let late = spec(serde_json::json!({"priority": 10}));
        let early = spec(serde_json::json!({"priority": -5, "config": {"fields": ["password"]}}));
        let tie = spec(serde_json::json!({"priority": 10}));
        let plugins = [
            input("zeta", &late),
            input("redact", &early),
            input("alpha", &tie),
        ];
        let rendered =
            render(1, "teleport", &upstream(), None, &plugins, &policy()).expect("renders");
        let names: Vec<&str> = rendered
            .config
            .plugins
            .iter()
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(names, ["redact", "alpha", "zeta"]);
        let first = &rendered.config.plugins[0];
        assert_eq!(first.module, module_path(DIGEST));
        assert_eq!(first.digest.as_deref(), Some(DIGEST));
        assert_eq!(first.version.as_deref(), Some("v1"));
        assert_eq!(
            first.config,
            Some(serde_json::json!({"fields": ["password"]}))
        );
        assert_eq!(rendered.config.listen.address, "127.0.0.1:8888");
        assert_eq!(rendered.config.admin.address, "0.0.0.0:9090");
        assert_eq!(
            rendered.config.upstream.cert,
            Some(PathBuf::from("/var/run/eventplug/fluentd/client.crt"))
        );
        assert_eq!(rendered.config.stop, None);
        // Reversed input, same bytes.
        let reversed = [
            input("alpha", &tie),
            input("redact", &early),
            input("zeta", &late),
        ];
        let again =
            render(1, "teleport", &upstream(), None, &reversed, &policy()).expect("renders");
        assert_eq!(
            again.config.to_yaml().expect("yaml"),
            rendered.config.to_yaml().expect("yaml")
        );
        // And the rendering is a config the sidecar reads back as it is.
        let text = rendered.config.to_yaml().expect("yaml");
        assert_eq!(
            SidecarConfig::parse(&text).expect("parses"),
            rendered.config
        );
        // 64 MiB base + 3 plugins × 64 MiB × 2 instances × 2.
        assert_eq!(rendered.memory_limit, ByteSize((64 + 3 * 256) << 20));
    }

    #[test]
    fn a_refused_fail_open_plugin_is_left_out_and_a_refused_redactor_stops_the_target() {
        let watcher = spec(serde_json::json!({"module": {"reference": "ghcr.io/x/watch:v1"}}));
        let redact = spec(serde_json::json!({"failurePolicy": "FailClosed", "priority": -1}));
        let plugins = [input("watch", &watcher), input("redact", &redact)];
        let rendered =
            render(1, "teleport", &upstream(), None, &plugins, &policy()).expect("renders");
        assert_eq!(rendered.config.plugins.len(), 1);
        assert_eq!(rendered.refused[0].0, "watch");
        assert_eq!(rendered.refused[0].1.reason, "RegistryNotAllowed");
        assert_eq!(
            rendered.config.stop, None,
            "a FailOpen plugin does not stop the stream"
        );

        let refused_redactor = spec(serde_json::json!({
            "failurePolicy": "FailClosed",
            "module": {"reference": "ghcr.io/x/redact:v1"},
        }));
        let plugins = [input("redact", &refused_redactor)];
        let rendered =
            render(1, "teleport", &upstream(), None, &plugins, &policy()).expect("renders");
        assert!(rendered.config.plugins.is_empty());
        let stop = rendered.config.stop.expect("the target is stopped");
        assert!(
            stop.contains("FailClosed plugin redact") && stop.contains("ghcr.io"),
            "{stop}"
        );
    }

    #[test]
    fn a_plugin_that_would_not_fit_is_refused_instead_of_oom_looping_the_pod() {
        let big = spec(serde_json::json!({"limits": {"memoryLimit": "256Mi", "concurrency": 8}}));
        let small = spec(serde_json::json!({"priority": -1}));
        let plugins = [input("small", &small), input("big", &big)];
        let rendered =
            render(1, "teleport", &upstream(), None, &plugins, &policy()).expect("renders");
        assert_eq!(rendered.config.plugins.len(), 1);
        assert_eq!(rendered.refused[0].1.reason, "InsufficientMemory");
        assert!(
            rendered.refused[0].1.message.contains("2Gi"),
            "{}",
            rendered.refused[0].1
        );
        assert!(rendered.memory_limit <= MAX_SIDECAR_MEMORY);
    }

    #[test]
    fn target_settings_apply_and_conflicting_ones_are_refused() {
        let redact = spec(serde_json::json!({"failurePolicy": "FailClosed"}));
        let plugins = [input("redact", &redact)];
        let target: EventPluginTargetSpec = serde_json::from_value(serde_json::json!({
            "poisonPolicy": "block", "poisonAttempts": 7, "maxBodyBytes": "1Mi",
            "sidecar": {"memoryHeadroom": "32Mi"},
        }))
        .expect("target");
        let rendered = render(
            1,
            "teleport",
            &upstream(),
            Some(&target),
            &plugins,
            &policy(),
        )
        .expect("renders");
        assert_eq!(rendered.config.delivery.poison_attempts, 7);
        assert_eq!(rendered.config.listen.max_body_bytes, ByteSize(1 << 20));
        assert_eq!(rendered.memory_limit, ByteSize((64 + 32 + 256) << 20));
        let forward: EventPluginTargetSpec =
            serde_json::from_value(serde_json::json!({"poisonPolicy": "forward"})).expect("target");
        let error = render(
            1,
            "teleport",
            &upstream(),
            Some(&forward),
            &plugins,
            &policy(),
        )
        .unwrap_err();
        assert!(error.contains("redact"), "{error}");
    }
}
