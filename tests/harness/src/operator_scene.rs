//! The scene of the operator's tests and benchmarks with real pods: a fresh namespace with the
//! CRDs, fluentd and event-handler's chart inputs, modules pushed to the cluster's registry,
//! event-handler's Deployment in the official chart's shape, and the EventPlugins' conditions
//! waited on (through the installed operator, [`OperatorRelease`], whose logs a failure shows).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::event_handler::{
    EVENT_HANDLER, Fluentd, PLUGIN_DIR, create_chart_inputs, install_crds, object,
};
use crate::operator_release::OperatorRelease;
use crate::{EventplugImages, TestNamespace};
use eventplug_oci::{HostSettings, PushRequest, Reference, Registry, RegistrySettings};
use eventplug_operator::crd::{EventPlugin, EventPluginTarget};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use kube::CustomResourceExt;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

/// What every operator test starts from: a fresh namespace, the sidecar and event-handler images
/// in the cluster's registry, the operator's CRDs, fluentd (nginx with mTLS on the bridge) and the
/// chart's objects besides its Deployment.
pub async fn operator_scene(prefix: &str) -> (TestNamespace, &'static EventplugImages, Fluentd) {
    let ns = TestNamespace::create(prefix).await;
    let images = EventplugImages::shared().await;
    install_crds(
        ns.client(),
        vec![EventPlugin::crd(), EventPluginTarget::crd()],
    )
    .await;
    let fluentd = Fluentd::start(ns.cluster().node_ip());
    create_chart_inputs(&ns, &fluentd).await;
    (ns, images, fluentd)
}

/// How long an EventPlugin may take to become Ready (one rollout, image pulls from the local
/// registry, a status poll).
pub const READY: Duration = Duration::from_secs(180);

/// A plugin that sets `mark` to `"yes"` on every `user.login` event.
pub fn marking_plugin(mark: &str) -> Vec<u8> {
    let wat = eventplug_test_support::branching_plugin(
        "",
        "user.login",
        &eventplug_test_support::set_response(mark, "\"yes\""),
        &Default::default(),
        "",
    );
    wat::parse_str(&wat).unwrap_or_else(|e| panic!("the plugin's WAT does not parse: {e}"))
}

/// A client of the cluster's plain-HTTP registry.
pub fn cluster_registry(ns: &TestNamespace) -> Registry {
    Registry::new(RegistrySettings {
        hosts: [(
            ns.cluster().registry().to_owned(),
            HostSettings {
                plain_http: true,
                ca: None,
            },
        )]
        .into(),
        progress: false,
        ..RegistrySettings::default()
    })
}

/// The manifest digest an image reference of the cluster's registry (`host/repo:tag`) points at.
pub async fn image_digest(ns: &TestNamespace, image: &str) -> String {
    let reference: Reference = image
        .parse()
        .unwrap_or_else(|e| panic!("image reference {image}: {e}"));
    cluster_registry(ns)
        .resolve(&reference)
        .await
        .unwrap_or_else(|e| panic!("resolving {image} in the cluster's registry: {e}"))
}

/// Pushes `module` to the cluster's registry as `plugins/<repository>:<tag>`; returns the tag
/// reference and the manifest digest.
pub async fn push(
    ns: &TestNamespace,
    repository: &str,
    tag: &str,
    module: Vec<u8>,
) -> (String, String) {
    let registry = cluster_registry(ns);
    let host = ns.cluster().registry();
    let text = format!("{host}/plugins/{}-{repository}:{tag}", ns.name());
    let reference: Reference = text
        .parse()
        .unwrap_or_else(|e| panic!("reference {text}: {e}"));
    let pushed = registry
        .push(
            &reference,
            PushRequest {
                module,
                file_name: "plugin.wasm".into(),
                annotations: BTreeMap::new(),
            },
        )
        .await
        .unwrap_or_else(|e| panic!("pushing {text}: {e}"));
    let digest = pushed
        .digest()
        .unwrap_or_else(|| panic!("{text} was pushed without a digest"))
        .to_owned();
    (text, digest)
}

/// event-handler's Deployment as the official chart renders it (FACTS: the chart's command and no
/// args, the TOML by subPath, the certificate Secret file by file, every volume 0600), with the
/// stand-in generating `events` login events.
pub fn chart_deployment(
    name: &str,
    image: &str,
    replicas: i32,
    events: usize,
    toml: &str,
) -> Deployment {
    let cert = |file: &str| json!({"name": "fluentd-cert", "mountPath": format!("{PLUGIN_DIR}/{file}"), "subPath": file});
    object(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app.kubernetes.io/name": name}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": name}},
                "spec": {
                    "securityContext": {},
                    "containers": [{
                        "name": EVENT_HANDLER,
                        "image": image,
                        "command": ["/usr/local/bin/teleport-plugin", "start", "--config", "/etc/teleport-event-handler.toml"],
                        "env": [
                            {"name": "TELEPORT_PLUGIN_FAIL_FAST", "value": "true"},
                            {"name": "STANDIN_GENERATE", "value": events.to_string()}
                        ],
                        "ports": [{"name": "http", "containerPort": 80}],
                        "volumeMounts": [
                            {"name": "config", "mountPath": "/etc/teleport-event-handler.toml", "subPath": "teleport-event-handler.toml"},
                            {"name": "auth-id", "mountPath": format!("{PLUGIN_DIR}/teleport-identity")},
                            cert("ca.crt"), cert("client.crt"), cert("client.key")
                        ]
                    }],
                    "volumes": [
                        {"name": "config", "configMap": {"name": toml, "defaultMode": 384}},
                        {"name": "auth-id", "secret": {"secretName": "teleport-event-handler-identity", "defaultMode": 384}},
                        {"name": "fluentd-cert", "secret": {"secretName": "teleport-event-handler-client-tls", "defaultMode": 384}}
                    ]
                }
            }
        }
    }))
}

/// An EventPlugin named `name` with `spec`.
pub fn event_plugin(name: &str, spec: Value) -> EventPlugin {
    object(json!({
        "apiVersion": "eventplug.dev/v1alpha1",
        "kind": "EventPlugin",
        "metadata": {"name": name},
        "spec": spec,
    }))
}

/// Applies `plugin` (server-side, forced), panicking with the reason when refused.
pub async fn apply_plugin(api: &Api<EventPlugin>, plugin: &EventPlugin) {
    let name = plugin.name_any();
    if let Err(e) = api
        .patch(
            &name,
            &PatchParams::apply("eventplug-tests").force(),
            &Patch::Apply(plugin),
        )
        .await
    {
        panic!("applying EventPlugin {name}: {e}");
    }
}

/// The status, reason and message of condition `kind`.
pub fn condition<'a>(plugin: &'a EventPlugin, kind: &str) -> Option<(&'a str, &'a str, &'a str)> {
    plugin
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
}

/// Waits until EventPlugin `name`'s condition `kind` has `status` and `reason` (any reason when
/// `None`); returns the EventPlugin.
pub async fn wait_condition(
    api: &Api<EventPlugin>,
    operator: &OperatorRelease<'_>,
    name: &str,
    kind: &str,
    status: &str,
    reason: Option<&str>,
    timeout: Duration,
) -> EventPlugin {
    operator
        .wait(
            &format!("EventPlugin {name} {kind}={status}"),
            timeout,
            || async {
                let plugin = api.get(name).await?;
                match condition(&plugin, kind) {
                    Some((s, r, _)) if s == status && reason.is_none_or(|want| want == r) => {
                        Ok(plugin)
                    }
                    other => Err(format!("{kind} is {other:?}; status {:?}", plugin.status).into()),
                }
            },
        )
        .await
}

/// The names of the Deployment's pod template containers.
pub fn containers(deployment: &Deployment) -> Vec<String> {
    deployment
        .spec
        .iter()
        .filter_map(|s| s.template.spec.as_ref())
        .flat_map(|p| p.containers.iter().map(|c| c.name.clone()))
        .collect()
}

/// The ReplicaSets of the chart-shaped Deployment `name`.
pub async fn replica_sets(ns: &TestNamespace, name: &str) -> Vec<String> {
    let api: Api<ReplicaSet> = ns.api();
    match api
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/name={name}")))
        .await
    {
        Ok(list) => list.items.iter().map(ResourceExt::name_any).collect(),
        Err(e) => panic!("listing ReplicaSets: {e}"),
    }
}

/// Deletes every EventPlugin of the namespace and waits until the operator has let them go (their
/// finalizers), so the test namespace can be deleted after the operator stops.
pub async fn remove_all_plugins(api: &Api<EventPlugin>, operator: &OperatorRelease<'_>) {
    if let Err(e) = api
        .delete_collection(&kube::api::DeleteParams::default(), &ListParams::default())
        .await
    {
        panic!("deleting the EventPlugins: {e}");
    }
    operator
        .wait(
            "the operator to let every EventPlugin go",
            Duration::from_secs(120),
            || async {
                let left = api.list(&ListParams::default()).await?;
                if left.items.is_empty() {
                    Ok(())
                } else {
                    Err(format!("{} left", left.items.len()).into())
                }
            },
        )
        .await;
}
