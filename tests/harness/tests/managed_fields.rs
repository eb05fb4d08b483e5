//! What the operator reads from `managedFields` to decide who owns event-handler's `args`, checked
//! against what the test cluster's real 1.20 API server records for a chart-like field manager.
#![forbid(unsafe_code)]

use eventplug_harness::TestNamespace;
use eventplug_operator::redirect::args_owners;
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};
use serde_json::json;

fn event_handler(name: &str, args: Option<&[&str]>) -> serde_json::Value {
    let mut container = json!({
        "name": "teleport-plugin-event-handler",
        "image": "example.invalid/event-handler:1",
        "command": ["/usr/local/bin/teleport-plugin", "start", "--config", "/etc/teleport-event-handler.toml"],
    });
    if let Some(args) = args {
        container["args"] = json!(args);
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
        }
    })
}

#[tokio::test]
async fn the_owner_of_args_is_read_from_what_the_api_server_records() {
    let ns = TestNamespace::create("fields").await;
    let deployments: kube::Api<Deployment> = ns.api();
    let apply = |manager: &str| PatchParams::apply(manager).force();
    let with_args = event_handler("chart-args", Some(&["start", "--debug"]));
    let applied = match deployments
        .patch("chart-args", &apply("helm"), &Patch::Apply(&with_args))
        .await
    {
        Ok(d) => d,
        Err(e) => panic!("applying a Deployment as helm: {e}"),
    };
    assert_eq!(
        args_owners(&applied, "teleport-plugin-event-handler"),
        ["helm"]
    );
    let without = event_handler("chart-command", None);
    let applied = match deployments
        .patch("chart-command", &apply("helm"), &Patch::Apply(&without))
        .await
    {
        Ok(d) => d,
        Err(e) => panic!("applying a Deployment as helm: {e}"),
    };
    assert!(args_owners(&applied, "teleport-plugin-event-handler").is_empty());
    // The operator's own apply of just the args makes it their only owner besides nobody else.
    let ours = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "chart-command"},
        "spec": {"template": {"spec": {"containers": [{
            "name": "teleport-plugin-event-handler",
            "args": ["--fluentd-url=http://127.0.0.1:8888/events.log"],
        }]}}}
    });
    let applied = match deployments
        .patch(
            "chart-command",
            &apply(eventplug_operator::redirect::FIELD_MANAGER),
            &Patch::Apply(&ours),
        )
        .await
    {
        Ok(d) => d,
        Err(e) => panic!("applying the redirect: {e}"),
    };
    assert_eq!(
        args_owners(&applied, "teleport-plugin-event-handler"),
        [eventplug_operator::redirect::FIELD_MANAGER]
    );
}
