//! The Kubernetes demo (`scripts/demo.sh`, the README's first command): the operator chart
//! installed into the local cluster, the bundled `redact` and `skip` examples pushed to its
//! registry, event-handler (the stand-in) in the official chart's shape, two EventPlugins, the
//! bundled sample events replayed through event-handler, and a summary of what reached fluentd.
//!
//! Stand-ins: event-handler's binary (tests/stand-ins/event-handler, same flags, TOML and
//! delivery contract) and fluentd (nginx with mTLS on the node's bridge); everything else is real.

use std::collections::BTreeMap;

use crate::event_handler::{
    APP, EVENT_HANDLER, Fluentd, SIDECAR, create, create_chart_inputs, object, the_pod,
    wait_delivered,
};
use crate::operator_release::{OperatorRelease, test_values};
use crate::operator_scene::{
    READY, apply_plugin, chart_deployment, condition, containers, event_plugin, push,
};
use crate::{EventplugImages, TestNamespace};
use eventplug_operator::crd::EventPlugin;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

/// What the demo's events became on their way to fluentd.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Events event-handler sent.
    pub sent: usize,
    /// Reached fluentd unchanged.
    pub forwarded: usize,
    /// Reached fluentd changed by a plugin.
    pub modified: usize,
    /// Never reached fluentd (a plugin skipped them).
    pub skipped: usize,
    /// One modified event: (as event-handler sent it, as fluentd received it).
    pub example: Option<(Value, Value)>,
    /// Values of redacted fields found anywhere in what fluentd received (must be empty).
    pub leaked: Vec<String>,
    /// Bodies fluentd received that are not an event event-handler sent (must be empty).
    pub unexpected: usize,
    /// Events that should have been skipped (the skip example's user's logins).
    pub expected_skips: usize,
}

/// The fields the demo's redact plugin masks.
pub const REDACTED: [&str; 2] = ["addr.remote", "user_agent"];

/// The user whose logins the skip example drops.
pub const SKIPPED_USER: &str = "secret-santa";

/// Runs the demo in `ns` with the compiled `redact` and `skip` modules and the sample `events`
/// (one JSON object a line). Leaves the namespace, the release and the EventPlugins in place.
pub async fn run(ns: &TestNamespace, redact: Vec<u8>, skip: Vec<u8>, events: &str) -> Summary {
    let images = EventplugImages::shared().await;
    step("installing the operator chart (charts/eventplug-operator, the real Helm engine)");
    let release = OperatorRelease::install(ns, &test_values(ns, images, json!({}))).await;

    step("pushing the redact and skip examples to the cluster's registry (OCI, CNCF wasm layout)");
    let (redact_ref, redact_digest) = push(ns, "redact", "v1", redact).await;
    let (skip_ref, _) = push(ns, "skip", "v1", skip).await;
    println!("    {redact_ref} = {redact_digest}\n    {skip_ref}");

    step("deploying event-handler (the stand-in) in the official chart's shape, at 0 replicas");
    let fluentd = Fluentd::start(ns.cluster().node_ip());
    create_chart_inputs(ns, &fluentd).await;
    let config_maps: Api<ConfigMap> = ns.api();
    create(
        &config_maps,
        &object(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "sample-events"}, "data": {"sample.jsonl": events}})),
    )
    .await;
    let deployments: Api<Deployment> = ns.api();
    create(
        &deployments,
        &replaying(chart_deployment(APP, &images.event_handler, 0, 0, APP)),
    )
    .await;

    step("applying two EventPlugins: redact (FailClosed) and skip");
    let plugins: Api<EventPlugin> = ns.api();
    apply_plugin(
        &plugins,
        &event_plugin(
            "redact",
            json!({"module": {"reference": redact_ref}, "target": {"deployment": APP},
                   "priority": -10, "failurePolicy": "FailClosed",
                   "config": {"fields": REDACTED},
                   "limits": {"memoryLimit": "32Mi", "concurrency": 2}}),
        ),
    )
    .await;
    apply_plugin(
        &plugins,
        &event_plugin(
            "skip",
            json!({"module": {"reference": skip_ref}, "target": {"deployment": APP},
                   "events": ["user.login"], "limits": {"memoryLimit": "32Mi", "concurrency": 2}}),
        ),
    )
    .await;
    // At 0 replicas no event can pass unfiltered: the sidecar goes in first, then event-handler
    // starts, and its events wait in the sidecar until redact (FailClosed) runs.
    release
        .wait("the operator to inject the sidecar", READY, || async {
            let d = deployments.get(APP).await?;
            if containers(&d).first().map(String::as_str) == Some(SIDECAR) {
                Ok(())
            } else {
                Err(format!("containers {:?}", containers(&d)).into())
            }
        })
        .await;
    step("starting event-handler: it replays the sample events through the sidecar to fluentd");
    deployments
        .patch(
            APP,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap_or_else(|e| panic!("scaling {APP} to 1: {e}"));
    for name in ["redact", "skip"] {
        release
            .wait(&format!("EventPlugin {name} Ready"), READY, || async {
                let plugin = plugins.get(name).await?;
                match condition(&plugin, "Ready") {
                    Some(("True", _, _)) => Ok(()),
                    other => Err(format!("Ready is {other:?}").into()),
                }
            })
            .await;
    }
    println!("{}", kubectl(ns, &["get", "evp"]));
    let sent: Vec<Value> = events
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("a sample event: {e}")))
        .collect();
    let pod = the_pod(ns).await;
    wait_delivered(ns, &pod, sent.len(), READY).await;
    // nginx logs a request just after answering it: wait for as many as should arrive (every
    // event but the skipped user's logins); what arrived is then compared event by event.
    let expected = sent
        .iter()
        .filter(|e| !(e["event"] == "user.login" && e["user"] == SKIPPED_USER))
        .count();
    let bodies: Vec<String> = fluentd
        .nginx
        .wait_received(expected)
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    let mut summary = summarize(&sent, &bodies);
    summary.expected_skips = sent.len() - expected;
    summary
}

/// Compares what fluentd received with what event-handler sent, event by event (by `uid`), and
/// searches every received body, whatever its shape, for the values redact was to mask.
fn summarize(sent: &[Value], bodies: &[String]) -> Summary {
    let mut summary = Summary {
        sent: sent.len(),
        ..Summary::default()
    };
    let mut received: BTreeMap<String, Value> = BTreeMap::new();
    for body in bodies {
        match serde_json::from_str::<Value>(body) {
            Ok(v) if v["uid"].is_string() => {
                received.insert(v["uid"].as_str().unwrap_or_default().to_owned(), v);
            }
            _ => summary.unexpected += 1,
        }
    }
    for event in sent {
        let uid = event["uid"].as_str().unwrap_or_default();
        match received.get(uid) {
            None => summary.skipped += 1,
            Some(got) if got == event => summary.forwarded += 1,
            Some(got) => {
                summary.modified += 1;
                if summary.example.is_none() {
                    summary.example = Some((event.clone(), got.clone()));
                }
            }
        }
        for field in REDACTED {
            if let Some(Value::String(secret)) = event.get(field) {
                let escaped = serde_json::to_string(secret).unwrap_or_default();
                let escaped = escaped.trim_matches('"');
                if bodies
                    .iter()
                    .any(|b| b.contains(secret.as_str()) || b.contains(escaped))
                {
                    summary.leaked.push(format!("{uid}: {field}"));
                }
            }
        }
    }
    summary
}

/// The chart's Deployment with the stand-in replaying `sample-events` instead of generating.
fn replaying(mut deployment: Deployment) -> Deployment {
    let pod = deployment
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .unwrap_or_else(|| panic!("the chart's Deployment has no pod spec"));
    pod.volumes.get_or_insert_with(Vec::new).push(object(
        json!({"name": "sample-events", "configMap": {"name": "sample-events"}}),
    ));
    let container = pod
        .containers
        .iter_mut()
        .find(|c| c.name == EVENT_HANDLER)
        .unwrap_or_else(|| panic!("no {EVENT_HANDLER} container"));
    container
        .volume_mounts
        .get_or_insert_with(Vec::new)
        .push(object(
            json!({"name": "sample-events", "mountPath": "/var/lib/demo", "readOnly": true}),
        ));
    for env in container.env.iter_mut().flatten() {
        if env.name == "STANDIN_GENERATE" {
            env.name = "STANDIN_EVENTS".into();
            env.value = Some("/var/lib/demo/sample.jsonl".into());
        }
    }
    deployment
}

/// `kubectl ARGS -n <ns>` with the cluster's kubeconfig; its output, or why it failed.
pub fn kubectl(ns: &TestNamespace, args: &[&str]) -> String {
    match std::process::Command::new("kubectl")
        .args(args)
        .args(["-n", ns.name()])
        .env("KUBECONFIG", ns.cluster().kubeconfig())
        .output()
    {
        Ok(out) => format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => format!("(kubectl: {e})"),
    }
}

fn step(what: &str) {
    println!("==> {what}");
}
