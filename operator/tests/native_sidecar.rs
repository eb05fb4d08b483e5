//! The injection as Kubernetes ≥ 1.29 gets it (a native sidecar: an init container with
//! `restartPolicy: Always`), checked offline against the published schemas with PyPI's
//! `kubernetes-validate` (installed by `scripts/setup.sh`): the test cluster runs 1.20, which has
//! no native sidecars. The same rendering validated against 1.27, which had no such field, must
//! fail: the check is real. The validator carries the schemas of 1.25 and later.
#![forbid(unsafe_code)]

use eventplug_contract::ByteSize;
use eventplug_operator::discovery::{self, Upstream};
use eventplug_operator::inject::{self, Injection};
use k8s_openapi::api::apps::v1::Deployment;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::Command;

const APP: &str = "teleport-plugin-event-handler";
const DIR: &str = "/var/lib/teleport/plugins/event-handler";

/// The official chart's Deployment (its snapshot's shape).
fn chart() -> Value {
    let cert =
        |f: &str| json!({"name": "fluentd-cert", "mountPath": format!("{DIR}/{f}"), "subPath": f});
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": APP, "namespace": "teleport"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": APP}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": APP}},
                "spec": {
                    "securityContext": {},
                    "containers": [{
                        "name": APP,
                        "image": "public.ecr.aws/gravitational/teleport-plugin-event-handler:17.0.0",
                        "command": ["/usr/local/bin/teleport-plugin", "start", "--config", "/etc/teleport-event-handler.toml"],
                        "env": [{"name": "TELEPORT_PLUGIN_FAIL_FAST", "value": "true"}],
                        "ports": [{"name": "http", "containerPort": 80}],
                        "volumeMounts": [
                            {"name": "config", "mountPath": "/etc/teleport-event-handler.toml", "subPath": "teleport-event-handler.toml"},
                            {"name": "auth-id", "mountPath": format!("{DIR}/teleport-identity")},
                            cert("ca.crt"), cert("client.crt"), cert("client.key")
                        ]
                    }],
                    "volumes": [
                        {"name": "config", "configMap": {"name": APP, "defaultMode": 384}},
                        {"name": "auth-id", "secret": {"secretName": "teleport-event-handler-identity", "defaultMode": 384}},
                        {"name": "fluentd-cert", "secret": {"secretName": "teleport-event-handler-client-tls", "defaultMode": 384}}
                    ]
                }
            }
        }
    })
}

fn toml() -> BTreeMap<String, BTreeMap<String, String>> {
    let text = format!(
        "storage = \"{DIR}/storage\"\n[forward.fluentd]\nurl = \"https://fluentd:8888/test.log\"\nsession-url = \"https://fluentd:8888/session\"\nca = \"{DIR}/ca.crt\"\ncert = \"{DIR}/client.crt\"\nkey = \"{DIR}/client.key\"\n"
    );
    BTreeMap::from([(
        APP.to_string(),
        BTreeMap::from([("teleport-event-handler.toml".to_string(), text)]),
    )])
}

/// Merges a list of named items into another, as server-side apply merges list maps.
fn merge_named(into: &mut Value, from: &Value, key: &str) {
    let (Some(into), Some(from)) = (into.as_array_mut(), from.as_array()) else {
        return;
    };
    for item in from {
        match into.iter_mut().find(|i| i[key] == item[key]) {
            Some(existing) => {
                if let (Some(e), Some(i)) = (existing.as_object_mut(), item.as_object()) {
                    for (field, value) in i {
                        if field == "volumeMounts" {
                            let mut mounts = e.get(field).cloned().unwrap_or(json!([]));
                            merge_named(&mut mounts, value, "mountPath");
                            e.insert(field.clone(), mounts);
                        } else {
                            e.insert(field.clone(), value.clone());
                        }
                    }
                }
            }
            None => into.push(item.clone()),
        }
    }
}

/// The chart's Deployment with the injection applied to it.
fn injected(native: bool) -> Value {
    let chart = chart();
    let deployment: Deployment =
        serde_json::from_value(chart.clone()).expect("the chart's Deployment");
    let upstream: Upstream =
        discovery::discover(&deployment, None, &toml(), None).expect("the chart's upstream");
    let args = vec![
        "--fluentd-url=http://127.0.0.1:8888/test.log".to_string(),
        "--fluentd-session-url=http://127.0.0.1:8888/session".to_string(),
    ];
    let pod = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let storage = upstream.storage.clone().unwrap_or_default();
    let body = inject::desired(&Injection {
        deployment: APP,
        container: APP,
        image: "registry.internal:5000/eventplug/sidecar:0.1.0",
        redirect_args: Some(&args),
        upstream: &upstream,
        memory_limit: inject::memory_limit(ByteSize(160 << 20)),
        cpu_request: None,
        cpu_limit: None,
        admin_port: eventplug_operator::render::DEFAULT_ADMIN_PORT,
        storage_without_volume: inject::storage_without_volume(&pod, APP, &storage),
        native_sidecar: native,
        api_token: true,
    });
    let mut merged = chart;
    let template = &mut merged["spec"]["template"];
    template["metadata"]["labels"][inject::TARGET_LABEL] = json!(APP);
    let added = &body["spec"]["template"]["spec"];
    for (list, key) in [
        ("initContainers", "name"),
        ("containers", "name"),
        ("volumes", "name"),
    ] {
        if added.get(list).is_some() {
            let mut items = template["spec"].get(list).cloned().unwrap_or(json!([]));
            merge_named(&mut items, &added[list], key);
            template["spec"][list] = items;
        }
    }
    merged
}

/// `kubernetes-validate --strict -k <version>` on `object`: whether it passed, and what it said.
fn validate(object: &Value, version: &str) -> (bool, String) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "eventplug-native-sidecar-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("a work folder");
    let file = dir.join(format!("deployment-{version}.json"));
    std::fs::write(&file, object.to_string()).expect("writing the manifest");
    let output = Command::new("kubernetes-validate")
        .args(["--strict", "--kubernetes-version", version])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!("kubernetes-validate cannot run ({e}): install it with `bash scripts/setup.sh` (pip kubernetes-validate==1.37.0)")
        });
    let _ = std::fs::remove_dir_all(&dir);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), said)
}

#[test]
fn the_native_sidecar_rendering_is_valid_for_1_29_and_later() {
    let native = injected(true);
    let init = &native["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(init["name"], "eventplug");
    assert_eq!(init["restartPolicy"], "Always");
    for version in ["1.29.0", "1.33.0"] {
        let (ok, said) = validate(&native, version);
        assert!(
            ok,
            "the native-sidecar Deployment is not valid for {version}:\n{said}"
        );
    }
    let (ok, said) = validate(&native, "1.27.0");
    assert!(
        !ok,
        "1.27 had no restartPolicy on containers, yet the validator passed it:\n{said}"
    );
    assert!(said.contains("restartPolicy"), "{said}");
}

/// (kubernetes-validate 1.37.0 carries the schemas of 1.25 and later; 1.20 itself is checked by
/// the real API server in the harness tests.)
#[test]
fn the_first_container_rendering_is_valid_for_older_servers_too() {
    let classic = injected(false);
    let containers = &classic["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        containers[1]["name"], "eventplug",
        "merged after the chart's container: {containers}"
    );
    for version in ["1.25.0", "1.29.0"] {
        let (ok, said) = validate(&classic, version);
        assert!(
            ok,
            "the injected Deployment is not valid for {version}:\n{said}"
        );
    }
}
