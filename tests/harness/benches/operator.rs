//! The operator at scale, on the test cluster with real pods (`cargo bench -p eventplug-harness
//! --bench operator`; `scripts/bench-operator.sh` builds the images first), the operator installed
//! from the chart as users install it (its image holds the release build; its memory read from
//! its process on this machine, the node): 100
//! EventPlugins over 10 event-handler Deployments (one pod each), beside 5,000 unrelated
//! ConfigMaps in the same namespace. Measures the time from the last apply to every EventPlugin
//! Ready (which includes each target's one rollout), the time for a config change of all 100 to
//! be running in every sidecar, and the operator's memory. Prints; asserts nothing. Ten plugins in
//! one chain must fit event-handler's 30 s budget (maxWait + 3 × timeout each), so they are
//! given 500 ms and 50 ms (the defaults, 2 s and 100 ms, fit nine).

use std::time::{Duration, Instant};

use eventplug_harness::event_handler::create;
use eventplug_harness::operator_release::{OperatorRelease, test_values};
use eventplug_harness::operator_scene::{
    apply_plugin, chart_deployment, event_plugin, marking_plugin, operator_scene, push,
    remove_all_plugins,
};
use eventplug_operator::crd::EventPlugin;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

const TARGETS: usize = 10;
const PER_TARGET: usize = 10;
const UNRELATED: usize = 5_000;

fn memory_of(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| "?".into())
    };
    format!("RSS {} (peak {})", field("VmRSS:"), field("VmHWM:"))
}

/// Applies the 100 EventPlugins, ten per target, with config `{"round": round}`.
async fn apply_all(plugins: &Api<EventPlugin>, reference: &str, round: u32) {
    for t in 0..TARGETS {
        for p in 0..PER_TARGET {
            let spec = json!({
                "module": {"reference": reference},
                "target": {"deployment": format!("event-handler-{t}")},
                "priority": p,
                "config": {"round": round},
                "limits": {"memoryLimit": "8Mi", "concurrency": 1, "timeout": "50ms", "maxWait": "500ms"}
            });
            apply_plugin(plugins, &event_plugin(&format!("p{t}-{p}"), spec)).await;
        }
    }
}

/// Waits until every EventPlugin is Ready at its current generation; how long it took.
async fn all_ready(
    plugins: &Api<EventPlugin>,
    operator: &OperatorRelease<'_>,
    since: Instant,
) -> Duration {
    operator
        .wait(
            "every EventPlugin to be Ready",
            Duration::from_secs(600),
            || async {
                let list = plugins.list(&ListParams::default()).await?;
                let ready = list
                    .items
                    .iter()
                    .filter(|p| {
                        let status = p.status.as_ref();
                        status.and_then(|s| s.observed_generation) == p.metadata.generation
                            && status.is_some_and(|s| {
                                s.conditions
                                    .iter()
                                    .any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                    })
                    .count();
                if ready == TARGETS * PER_TARGET {
                    Ok(since.elapsed())
                } else {
                    Err(format!("{ready} of {} Ready", TARGETS * PER_TARGET).into())
                }
            },
        )
        .await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        // `cargo test --benches` runs bench targets without --bench: nothing to measure then.
        return;
    }
    let (ns, images, _fluentd) = operator_scene("bench-operator").await;
    let (reference, _) = push(&ns, "bench", "v1", marking_plugin("bench")).await;

    let config_maps: Api<ConfigMap> = ns.api();
    let started = Instant::now();
    futures::stream::iter(0..UNRELATED)
        .for_each_concurrent(16, |i| {
            let config_maps = config_maps.clone();
            async move {
                let map: ConfigMap = serde_json::from_value(json!({
                    "metadata": {"name": format!("unrelated-{i}")},
                    "data": {"value": "x".repeat(200)}
                }))
                .unwrap_or_default();
                if let Err(e) = config_maps.create(&PostParams::default(), &map).await {
                    panic!("creating unrelated ConfigMap {i}: {e}");
                }
            }
        })
        .await;
    eprintln!(
        "{UNRELATED} unrelated ConfigMaps in {:?}",
        started.elapsed()
    );

    let deployments: Api<Deployment> = ns.api();
    for t in 0..TARGETS {
        let name = format!("event-handler-{t}");
        create(
            &deployments,
            &chart_deployment(
                &name,
                &images.event_handler,
                1,
                5,
                "teleport-plugin-event-handler",
            ),
        )
        .await;
    }
    let operator = OperatorRelease::install(&ns, &test_values(&ns, images, json!({}))).await;
    let plugins: Api<EventPlugin> = ns.api();
    apply_all(&plugins, &reference, 1).await;
    let applied = Instant::now();
    let ready = all_ready(&plugins, &operator, applied).await;
    println!(
        "{} EventPlugins over {TARGETS} Deployments (one pod each, {UNRELATED} unrelated ConfigMaps): all Ready {ready:.1?} after the last apply",
        TARGETS * PER_TARGET
    );
    println!(
        "operator after Ready: {}",
        memory_of(operator.leader_pid().await)
    );

    // A config change of every plugin, live in every sidecar (no rollout).
    apply_all(&plugins, &reference, 2).await;
    let changed = Instant::now();
    let live = all_ready(&plugins, &operator, changed).await;
    println!(
        "a config change of all {} running in every sidecar {live:.1?} after the last apply",
        TARGETS * PER_TARGET
    );
    println!(
        "operator at the end: {}",
        memory_of(operator.leader_pid().await)
    );
    let metrics = operator.metrics().await;
    let total = |prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let requests = total("eventplug_operator_api_requests_total");
    let reconciles = total("eventplug_operator_reconciles_total");
    println!(
        "API requests: {requests} for {reconciles} reconciles ({:.1} per reconcile)",
        requests / reconciles.max(1.0)
    );
    println!(
        "target reconciles: {} ran, {} shared",
        total("eventplug_operator_target_reconciles_total{outcome=\"ran\"}"),
        total("eventplug_operator_target_reconciles_total{outcome=\"shared\"}")
    );
    println!("operator metrics:\n{metrics}");
    remove_all_plugins(&plugins, &operator).await;
    operator.uninstall().await;
}
