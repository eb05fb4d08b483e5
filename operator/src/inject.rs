//! What the operator adds to event-handler's Deployment, as the server-side apply body it owns
//! under its field manager (`redirect::FIELD_MANAGER`): the sidecar container first, the redirect
//! flags in event-handler's `args` (when the plan allows), the sidecar's own volumes, an emptyDir
//! for event-handler's cursor when no volume holds it, and a pod label naming the target. Pure.
//!
//! Applying the body with nothing in it (`removal`) under the same field manager takes every one of
//! those fields away again, leaving the Deployment as its owner wrote it: server-side apply removes
//! fields a manager stops applying unless another manager owns them too.
//!
//! The pod is the one `tests/harness/tests/pod_shape.rs` proved on real pods (docs/operator.md, "The
//! injected pod"); each choice is explained there.

use crate::discovery::{SecretFile, Upstream};
use crate::identity;
use crate::modules::MODULE_CONFIG_MAPS;
use crate::render::{
    ADMIN_PORT_NAME, FLUENTD_CERTS_DIR, LISTEN_PORT, MODULES_DIR, STATUS_TOKEN_FILE,
};
use eventplug_contract::ByteSize;
use k8s_openapi::api::core::v1::PodSpec;
use serde_json::{Value, json};

/// The sidecar container's name.
pub const SIDECAR_CONTAINER: &str = "eventplug";
/// The pod label naming the target Deployment, on every injected pod.
pub const TARGET_LABEL: &str = "eventplug.dev/target";
/// The key of the sidecar config in the target's Secret.
pub const CONFIG_KEY: &str = "config.yaml";
/// The key of the `/status` token in the target's Secret.
pub const STATUS_TOKEN_KEY: &str = "status-token";
/// Where the sidecar's config is mounted.
pub const CONFIG_DIR: &str = "/etc/eventplug";
/// The sidecar's emptyDir for its caches, and the module cache folder it creates there (a folder
/// of the volume, which the sidecar can make private; the volume's root it cannot).
const CACHE_VOLUME_DIR: &str = "/var/cache/eventplug";
const MODULE_CACHE_DIR: &str = "/var/cache/eventplug/modules";
/// The sidecar's user and group (distroless `nonroot`).
pub const SIDECAR_USER: i64 = 65532;
/// Memory limits are rounded up to this step, so most plugin changes fit the running limit and
/// need no rollout.
pub const MEMORY_STEP: u64 = 256 << 20;

/// The `index`-th of a target's module ConfigMaps.
pub fn modules_config_map_name(target: &str, index: usize) -> String {
    format!("{target}-eventplug-modules-{index}")
}

/// The Secret holding a target's sidecar config and `/status` token. A Secret, not a ConfigMap:
/// plugin configs take values from Secrets (`configFrom`), which must not land in a ConfigMap.
pub fn secret_name(target: &str) -> String {
    format!("{target}-eventplug")
}

/// The memory limit given to a sidecar that needs `needed`: rounded up to [`MEMORY_STEP`].
pub fn memory_limit(needed: ByteSize) -> ByteSize {
    ByteSize(needed.get().div_ceil(MEMORY_STEP).max(1) * MEMORY_STEP)
}

/// Everything that decides the injected pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Injection<'a> {
    /// The target Deployment.
    pub deployment: &'a str,
    /// event-handler's container.
    pub container: &'a str,
    /// The sidecar image.
    pub image: &'a str,
    /// The `args` the operator sets on event-handler (the redirect), or `None` when the chart's
    /// owner sets them (`redirect::Redirect::Refused`).
    pub redirect_args: Option<&'a [String]>,
    /// event-handler's upstream: its certificate files become the sidecar's own volume.
    pub upstream: &'a Upstream,
    /// The sidecar's memory limit (see [`memory_limit`]).
    pub memory_limit: ByteSize,
    /// CPU request and limit of the sidecar.
    pub cpu_request: Option<&'a str>,
    /// CPU limit of the sidecar.
    pub cpu_limit: Option<&'a str>,
    /// The sidecar's admin port (probes, metrics, `/status`).
    pub admin_port: u16,
    /// event-handler's storage folder, when no volume of its container holds it (an emptyDir is
    /// mounted there so the cursor outlives a container restart).
    pub storage_without_volume: Option<&'a str>,
    /// Render the sidecar as a native sidecar (an init container with `restartPolicy: Always`,
    /// Kubernetes ≥ 1.29) rather than as the first container.
    pub native_sidecar: bool,
    /// Mount the target's own ServiceAccount token into the sidecar (`identity`), for a sidecar
    /// image that follows its config through the API. Left out for an older image kept by a paced
    /// upgrade, so its pod template does not change.
    pub api_token: bool,
}

/// The volume of the sidecar's API token.
pub const API_TOKEN_VOLUME: &str = "eventplug-api-token";

/// Whether a server of this version runs native sidecars (1.29 and later).
pub fn has_native_sidecars(major: &str, minor: &str) -> bool {
    let number = |text: &str| -> u32 {
        text.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap_or(0)
    };
    (number(major), number(minor)) >= (1, 29)
}

/// The certificate files of the sidecar's own volume: one projected Secret source per file, so
/// files from different Secrets (or keys) land under the names the rendered config uses.
fn certificate_sources(upstream: &Upstream) -> Vec<Value> {
    [
        (&upstream.ca, "ca.crt"),
        (&upstream.cert, "client.crt"),
        (&upstream.key, "client.key"),
    ]
    .into_iter()
    .filter_map(|(file, path)| {
        file.as_ref().map(|(_, SecretFile { secret, key })| {
            json!({"secret": {"name": secret, "items": [{"key": key, "path": path}]}})
        })
    })
    .collect()
}

/// The server-side apply body of the Deployment with the injection.
pub fn desired(injection: &Injection<'_>) -> Value {
    let target = injection.deployment;
    let admin = format!("127.0.0.1:{}", injection.admin_port);
    let mut resources = json!({
        "requests": {"memory": "64Mi", "cpu": injection
            .cpu_request
            .unwrap_or(crate::settings::DEFAULT_SIDECAR_CPU)},
        "limits": {"memory": injection.memory_limit.get().to_string()}
    });
    if let Some(limit) = injection.cpu_limit {
        resources["limits"]["cpu"] = json!(limit);
    }
    let token_dir = STATUS_TOKEN_FILE
        .rsplit_once('/')
        .map_or(STATUS_TOKEN_FILE, |(dir, _)| dir);
    let mut sidecar_mounts = vec![
        json!({"name": "eventplug-config", "mountPath": CONFIG_DIR, "readOnly": true}),
        json!({"name": "eventplug-modules", "mountPath": MODULES_DIR, "readOnly": true}),
        json!({"name": "eventplug-admin", "mountPath": token_dir, "readOnly": true}),
        json!({"name": "eventplug-cache", "mountPath": CACHE_VOLUME_DIR}),
    ];
    let certificates = certificate_sources(injection.upstream);
    let mut volumes = vec![
        json!({"name": "eventplug-config", "secret": {
            "secretName": secret_name(target), "defaultMode": 0o444,
            "items": [{"key": CONFIG_KEY, "path": CONFIG_KEY}]}}),
        json!({"name": "eventplug-modules", "projected": {"defaultMode": 0o444, "sources":
            (0..MODULE_CONFIG_MAPS)
                .map(|i| json!({"configMap": {"name": modules_config_map_name(target, i)}}))
                .collect::<Vec<_>>()}}),
        json!({"name": "eventplug-admin", "secret": {
            "secretName": secret_name(target), "defaultMode": 0o444,
            "items": [{"key": STATUS_TOKEN_KEY, "path": STATUS_TOKEN_KEY}]}}),
        json!({"name": "eventplug-cache", "emptyDir": {}}),
    ];
    if injection.api_token {
        sidecar_mounts.push(
            json!({"name": API_TOKEN_VOLUME, "mountPath": identity::TOKEN_DIR, "readOnly": true}),
        );
        // Optional: without the Secret (deleted by hand) the pod still starts, and the sidecar
        // reads its config from the mounted file only.
        volumes.push(json!({"name": API_TOKEN_VOLUME, "secret": {
            "secretName": identity::token_secret_name(target), "defaultMode": 0o444, "optional": true}}));
    }
    if !certificates.is_empty() {
        sidecar_mounts.push(json!({"name": "eventplug-fluentd-cert", "mountPath": FLUENTD_CERTS_DIR, "readOnly": true}));
        volumes.push(json!({"name": "eventplug-fluentd-cert", "projected": {"defaultMode": 0o444, "sources": certificates}}));
    }
    let sidecar = json!({
        "name": SIDECAR_CONTAINER,
        "image": injection.image,
        "args": ["serve", "--config", format!("{CONFIG_DIR}/{CONFIG_KEY}")],
        "env": [
            {"name": "EVENTPLUG_CACHE_DIR", "value": MODULE_CACHE_DIR},
            // The admin port is the pod's, not the config's: pods of two templates share the
            // config during a rollout, and each must listen where its own probes look.
            {"name": "EVENTPLUG_ADMIN_ADDRESS", "value": crate::render::admin_address(injection.admin_port)}
        ],
        "ports": [{"name": ADMIN_PORT_NAME, "containerPort": injection.admin_port, "protocol": "TCP"}],
        "lifecycle": {"postStart": {"exec": {"command": [
            "/usr/local/bin/eventplug", "wait-ready", "--address", admin, "--timeout", "60s"
        ]}}},
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": ADMIN_PORT_NAME},
            "periodSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 2
        },
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": ADMIN_PORT_NAME},
            "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3
        },
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": SIDECAR_USER,
            "runAsGroup": SIDECAR_USER,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"}
        },
        "resources": resources,
        "volumeMounts": sidecar_mounts,
    });
    let mut event_handler = json!({"name": injection.container});
    if let Some(args) = injection.redirect_args {
        event_handler["args"] = json!(args);
    }
    if let Some(storage) = injection.storage_without_volume {
        event_handler["volumeMounts"] =
            json!([{"name": "eventplug-storage", "mountPath": storage}]);
        volumes.push(json!({"name": "eventplug-storage", "emptyDir": {}}));
    }
    // Native sidecar: an init container that keeps running; kubelet starts the next container
    // once its postStart hook returned, as with the first container before 1.29.
    let pod = if injection.native_sidecar {
        let mut sidecar = sidecar;
        sidecar["restartPolicy"] = json!("Always");
        json!({"initContainers": [sidecar], "containers": [event_handler], "volumes": volumes})
    } else {
        json!({"containers": [sidecar, event_handler], "volumes": volumes})
    };
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": target},
        "spec": {"template": {
            "metadata": {"labels": {TARGET_LABEL: target}},
            "spec": pod
        }}
    })
}

/// Whether a pod template has the injected sidecar (either way).
pub fn has_sidecar(pod: &PodSpec) -> bool {
    sidecar_of(pod).is_some()
}

/// The injected sidecar of a pod: among its containers, or a native sidecar among its init
/// containers.
pub fn sidecar_of(pod: &PodSpec) -> Option<&k8s_openapi::api::core::v1::Container> {
    pod.containers
        .iter()
        .find(|c| c.name == SIDECAR_CONTAINER)
        .or_else(|| {
            pod.init_containers.iter().flatten().find(|c| {
                c.name == SIDECAR_CONTAINER && c.restart_policy.as_deref() == Some("Always")
            })
        })
}

/// The apply body that gives up every field the operator applied.
pub fn release(deployment: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": deployment}})
}

/// Whether a pod template has the sidecar container, and where.
pub fn sidecar_index(pod: &PodSpec) -> Option<usize> {
    pod.containers
        .iter()
        .position(|c| c.name == SIDECAR_CONTAINER)
}

/// The strategic merge patch that puts the sidecar first. Server-side apply keeps the live order
/// of a list and appends new items, while kubelet (before native sidecars) starts containers in
/// order and holds the next one back only behind the first one's postStart hook.
pub fn sidecar_first(pod: &PodSpec) -> Value {
    let mut order = vec![json!({"name": SIDECAR_CONTAINER})];
    order.extend(
        pod.containers
            .iter()
            .filter(|c| c.name != SIDECAR_CONTAINER)
            .map(|c| json!({"name": c.name})),
    );
    json!({"spec": {"template": {"spec": {"$setElementOrder/containers": order}}}})
}

/// The strategic merge patch that takes the injection out of a pod template in one change: the
/// sidecar container, the operator's volumes, the storage mount it added to event-handler, the
/// redirect flags (only when event-handler's `args` are nothing else) and the target label.
/// Explicit rather than left to server-side apply alone, so that no field the operator added
/// stays behind when another manager touched it too.
pub fn removal(pod: &PodSpec, container: Option<&str>) -> Value {
    let mut containers = vec![json!({"name": SIDECAR_CONTAINER, "$patch": "delete"})];
    for c in &pod.containers {
        if c.name == SIDECAR_CONTAINER || container.is_some_and(|name| name != c.name) {
            continue;
        }
        let mut change = serde_json::Map::new();
        let redirect_only = c.args.as_ref().is_some_and(|args| {
            !args.is_empty()
                && args.iter().all(|a| {
                    a.starts_with(&format!("--fluentd-url=http://127.0.0.1:{LISTEN_PORT}/"))
                        || a.starts_with(&format!(
                            "--fluentd-session-url=http://127.0.0.1:{LISTEN_PORT}/"
                        ))
                })
        });
        if redirect_only {
            change.insert("args".into(), Value::Null);
        }
        let mounts: Vec<Value> = c
            .volume_mounts
            .iter()
            .flatten()
            .filter(|m| m.name == "eventplug-storage")
            .map(|m| json!({"mountPath": m.mount_path, "$patch": "delete"}))
            .collect();
        if !mounts.is_empty() {
            change.insert("volumeMounts".into(), json!(mounts));
        }
        if !change.is_empty() {
            change.insert("name".into(), json!(c.name));
            containers.push(Value::Object(change));
        }
    }
    let volumes: Vec<Value> = pod
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.name.starts_with("eventplug-"))
        .map(|v| json!({"name": v.name, "$patch": "delete"}))
        .collect();
    let mut spec = json!({"containers": containers, "volumes": volumes});
    if pod
        .init_containers
        .iter()
        .flatten()
        .any(|c| c.name == SIDECAR_CONTAINER)
    {
        spec["initContainers"] = json!([{"name": SIDECAR_CONTAINER, "$patch": "delete"}]);
    }
    json!({"spec": {"template": {
        "metadata": {"labels": {TARGET_LABEL: null}},
        "spec": spec
    }}})
}

/// The folder of event-handler's storage when none of its container's volumes holds it.
pub fn storage_without_volume<'a>(
    pod: &PodSpec,
    container: &str,
    storage: &'a str,
) -> Option<&'a str> {
    let container = pod.containers.iter().find(|c| c.name == container)?;
    let covered = container.volume_mounts.iter().flatten().any(|m| {
        m.name != "eventplug-storage" && std::path::Path::new(storage).starts_with(&m.mount_path)
    });
    (!covered).then_some(storage)
}

/// Whether a pod runs event-handler behind the sidecar: the sidecar container is there and
/// event-handler's command line sends audit events (and session events, with `sessions`) to the
/// sidecar's ingest port on loopback, as the last occurrence of each flag (the one kong uses).
/// The reason when not.
pub fn check_pod(pod: &PodSpec, container: &str, sessions: bool) -> Result<(), String> {
    if sidecar_of(pod).is_none() {
        return Err(format!(
            "the pod has no {SIDECAR_CONTAINER} sidecar container: its events would reach fluentd unfiltered"
        ));
    }
    let Some(event_handler) = pod.containers.iter().find(|c| c.name == container) else {
        return Err(format!("the pod has no container {container}"));
    };
    let words: Vec<&String> = event_handler
        .command
        .iter()
        .chain(event_handler.args.iter())
        .flatten()
        .collect();
    let flags: &[&str] = if sessions {
        &["--fluentd-url", "--fluentd-session-url"]
    } else {
        &["--fluentd-url"]
    };
    for flag in flags {
        let redirect = format!("{flag}=http://127.0.0.1:{LISTEN_PORT}/");
        let last = words
            .iter()
            .rev()
            .find(|w| w.as_str() == *flag || w.starts_with(&format!("{flag}=")));
        if !last.is_some_and(|w| w.starts_with(&redirect)) {
            return Err(format!(
                "container {container} is not started with {redirect}…: it would send around the sidecar"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{Found, Source};

    fn upstream(second_secret: bool) -> Upstream {
        let found = |value: &str| Found {
            value: value.into(),
            source: Source::Toml,
        };
        let secret = |name: &str, key: &str| SecretFile {
            secret: name.into(),
            key: key.into(),
        };
        Upstream {
            url: found("https://fluentd:8888/test.log"),
            session_url: None,
            ca: Some((
                found("/p/ca.crt"),
                secret(if second_secret { "ca" } else { "tls" }, "ca.crt"),
            )),
            cert: Some((found("/p/client.crt"), secret("tls", "tls.crt"))),
            key: Some((found("/p/client.key"), secret("tls", "tls.key"))),
            config_file: None,
            storage: None,
        }
    }

    fn injection<'a>(upstream: &'a Upstream, args: Option<&'a [String]>) -> Injection<'a> {
        Injection {
            deployment: "eh",
            container: "teleport-plugin-event-handler",
            image: "r/eventplug/sidecar:1",
            redirect_args: args,
            upstream,
            memory_limit: memory_limit(ByteSize(130 << 20)),
            cpu_request: None,
            cpu_limit: None,
            admin_port: crate::render::DEFAULT_ADMIN_PORT,
            storage_without_volume: Some("/var/lib/teleport/plugins/event-handler/storage"),
            native_sidecar: false,
            api_token: true,
        }
    }

    #[test]
    fn from_1_29_the_sidecar_is_a_native_sidecar() {
        assert!(!has_native_sidecars("1", "20"));
        assert!(has_native_sidecars("1", "29"));
        assert!(has_native_sidecars("1", "30+"));
        assert!(has_native_sidecars("2", "0"));
        let upstream = upstream(false);
        let args = vec!["--fluentd-url=http://127.0.0.1:8888/test.log".to_string()];
        let mut native = injection(&upstream, Some(&args));
        native.native_sidecar = true;
        let body = desired(&native);
        let pod = &body["spec"]["template"]["spec"];
        assert_eq!(pod["initContainers"][0]["name"], SIDECAR_CONTAINER);
        assert_eq!(pod["initContainers"][0]["restartPolicy"], "Always");
        assert_eq!(pod["containers"].as_array().map(Vec::len), Some(1));
        let spec: PodSpec = serde_json::from_value(json!({
            "initContainers": [{"name": "eventplug", "restartPolicy": "Always"}],
            "containers": [{"name": "eh", "args": ["--fluentd-url=http://127.0.0.1:8888/a"]}]
        }))
        .expect("a pod spec");
        assert_eq!(check_pod(&spec, "eh", false), Ok(()));
        assert_eq!(
            removal(&spec, Some("eh"))["spec"]["template"]["spec"]["initContainers"],
            json!([{"name": "eventplug", "$patch": "delete"}])
        );
        // An init container that runs to completion is no sidecar.
        let once: PodSpec = serde_json::from_value(json!({
            "initContainers": [{"name": "eventplug"}],
            "containers": [{"name": "eh", "args": ["--fluentd-url=http://127.0.0.1:8888/a"]}]
        }))
        .expect("a pod spec");
        assert!(check_pod(&once, "eh", false).is_err());
    }

    #[test]
    fn the_sidecar_comes_first_with_its_own_certificate_files_and_event_handler_is_redirected() {
        let upstream = upstream(true);
        let args = vec!["--fluentd-url=http://127.0.0.1:8888/test.log".to_string()];
        let body = desired(&injection(&upstream, Some(&args)));
        let pod = &body["spec"]["template"]["spec"];
        assert_eq!(pod["containers"][0]["name"], SIDECAR_CONTAINER);
        assert_eq!(pod["containers"][1]["args"], json!(args));
        assert_eq!(
            pod["containers"][0]["resources"]["limits"]["memory"],
            "268435456"
        );
        let volumes = pod["volumes"].as_array().expect("volumes");
        let cert = volumes
            .iter()
            .find(|v| v["name"] == "eventplug-fluentd-cert")
            .expect("the certificate volume");
        let sources = cert["projected"]["sources"].as_array().expect("sources");
        assert_eq!(sources.len(), 3);
        assert_eq!(sources[0]["secret"]["name"], "ca");
        assert_eq!(
            sources[1]["secret"]["items"][0],
            json!({"key": "tls.crt", "path": "client.crt"})
        );
        assert!(volumes.iter().any(|v| v["name"] == "eventplug-storage"));
        let modules = volumes
            .iter()
            .find(|v| v["name"] == "eventplug-modules")
            .expect("modules");
        assert_eq!(
            modules["projected"]["sources"].as_array().map(Vec::len),
            Some(MODULE_CONFIG_MAPS)
        );
        assert_eq!(
            body["spec"]["template"]["metadata"]["labels"][TARGET_LABEL],
            "eh"
        );

        // Without the redirect (the chart's owner sets it), args are not ours to apply.
        let body = desired(&injection(&upstream, None));
        assert!(
            body["spec"]["template"]["spec"]["containers"][1]
                .get("args")
                .is_none()
        );
        assert_eq!(release("eh")["metadata"]["name"], "eh");
        assert!(release("eh").get("spec").is_none());

        // Another admin port: the container port the probes name and the postStart hook's.
        let mut moved = injection(&upstream, Some(&args));
        moved.admin_port = 9191;
        let body = desired(&moved);
        let sidecar = &body["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            sidecar["ports"],
            json!([{"name": ADMIN_PORT_NAME, "containerPort": 9191, "protocol": "TCP"}])
        );
        assert_eq!(
            sidecar["readinessProbe"]["httpGet"]["port"],
            ADMIN_PORT_NAME
        );
        let hook = sidecar["lifecycle"]["postStart"]["exec"]["command"].to_string();
        assert!(hook.contains("127.0.0.1:9191"), "{hook}");
        assert_eq!(sidecar["livenessProbe"]["httpGet"]["port"], ADMIN_PORT_NAME);
        assert!(
            sidecar["env"].as_array().is_some_and(|env| env
                .contains(&json!({"name": "EVENTPLUG_ADMIN_ADDRESS", "value": "0.0.0.0:9191"}))),
            "the pod gives the sidecar its admin address: {}",
            sidecar["env"]
        );
    }

    #[test]
    fn removal_takes_out_only_what_the_injection_added() {
        let pod: PodSpec = serde_json::from_value(json!({
            "containers": [
                {"name": "eh", "args": ["--fluentd-url=http://127.0.0.1:8888/test.log"], "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/x.toml"},
                    {"name": "eventplug-storage", "mountPath": "/data/storage"}]},
                {"name": "eventplug"},
                {"name": "other", "args": ["--keep"]}
            ],
            "volumes": [{"name": "config"}, {"name": "eventplug-config"}, {"name": "eventplug-storage"}]
        }))
        .expect("a pod spec");
        assert_eq!(sidecar_index(&pod), Some(1));
        let order = sidecar_first(&pod);
        assert_eq!(
            order["spec"]["template"]["spec"]["$setElementOrder/containers"],
            json!([{"name": "eventplug"}, {"name": "eh"}, {"name": "other"}])
        );
        let patch = removal(&pod, Some("eh"));
        let spec = &patch["spec"]["template"]["spec"];
        assert_eq!(
            spec["containers"],
            json!([
                {"name": "eventplug", "$patch": "delete"},
                {"name": "eh", "args": null, "volumeMounts": [{"mountPath": "/data/storage", "$patch": "delete"}]}
            ])
        );
        assert_eq!(
            spec["volumes"],
            json!([{"name": "eventplug-config", "$patch": "delete"}, {"name": "eventplug-storage", "$patch": "delete"}])
        );
        assert_eq!(
            patch["spec"]["template"]["metadata"]["labels"][TARGET_LABEL],
            Value::Null
        );
        // args that are not only the redirect are someone else's: left alone.
        let mut theirs = pod.clone();
        theirs.containers[0].args = Some(vec![
            "--debug".into(),
            "--fluentd-url=http://127.0.0.1:8888/a".into(),
        ]);
        let patch = removal(&theirs, Some("eh"));
        assert!(
            patch["spec"]["template"]["spec"]["containers"][1]
                .get("args")
                .is_none()
        );
    }

    #[test]
    fn memory_limits_move_in_steps_so_small_plugin_changes_do_not_roll() {
        assert_eq!(memory_limit(ByteSize(0)).get(), MEMORY_STEP);
        assert_eq!(
            memory_limit(ByteSize(128 << 20)),
            memory_limit(ByteSize(192 << 20))
        );
        assert_eq!(memory_limit(ByteSize(257 << 20)).get(), 2 * MEMORY_STEP);
    }

    #[test]
    fn a_pod_without_the_sidecar_or_the_redirect_is_named_as_such() {
        let pod = |containers: Value| -> PodSpec {
            serde_json::from_value(json!({"containers": containers})).expect("a pod spec")
        };
        let eh = "teleport-plugin-event-handler";
        let plain =
            pod(json!([{"name": eh, "command": ["/usr/local/bin/teleport-plugin", "start"]}]));
        assert!(
            check_pod(&plain, eh, false)
                .unwrap_err()
                .contains("no eventplug sidecar")
        );
        let unredirected =
            pod(json!([{"name": "eventplug"}, {"name": eh, "command": ["x", "start"]}]));
        assert!(
            check_pod(&unredirected, eh, false)
                .unwrap_err()
                .contains("around the sidecar")
        );
        let elsewhere = pod(
            json!([{"name": "eventplug"}, {"name": eh, "args": ["--fluentd-url=http://127.0.0.1:9999/a"]}]),
        );
        assert!(check_pod(&elsewhere, eh, false).is_err());
        let good = pod(
            json!([{"name": "eventplug"}, {"name": eh, "args": ["--fluentd-url=http://127.0.0.1:8888/test.log"]}]),
        );
        assert_eq!(check_pod(&good, eh, false), Ok(()));
        // Session events too, when event-handler sends them.
        let err = check_pod(&good, eh, true).unwrap_err();
        assert!(err.contains("--fluentd-session-url"), "{err}");
        // The last occurrence of a flag is the one kong uses.
        let overridden = pod(json!([{"name": "eventplug"}, {"name": eh, "args": [
            "--fluentd-url=http://127.0.0.1:8888/test.log", "--fluentd-url=https://fluentd/test.log"]}]));
        assert!(check_pod(&overridden, eh, false).is_err());
    }

    #[test]
    fn storage_covered_by_a_volume_needs_no_emptydir() {
        let pod: PodSpec =
            serde_json::from_value(json!({"containers": [{"name": "eh", "volumeMounts": [
            {"name": "data", "mountPath": "/var/lib/teleport/plugins/event-handler"}]}]}))
            .expect("a pod spec");
        assert_eq!(
            storage_without_volume(
                &pod,
                "eh",
                "/var/lib/teleport/plugins/event-handler/storage"
            ),
            None
        );
        assert_eq!(
            storage_without_volume(&pod, "eh", "/data/storage"),
            Some("/data/storage")
        );
    }
}
