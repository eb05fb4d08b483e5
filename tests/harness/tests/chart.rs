//! The operator as users install it: `charts/eventplug-operator` installed by the real Helm
//! engine into the test cluster, the operator running as two pods of the image built from
//! `images/operator.Dockerfile` (leader election, a PodDisruptionBudget, the webhook through the
//! chart's Service), then upgraded and uninstalled. event-handler's Deployment is in the official
//! chart's shape.
//!
//! Mocked: only event-handler's binary (the stand-in, with its command line, flags, TOML and
//! delivery contract); Teleport is not needed by these paths.
#![forbid(unsafe_code)]

use std::time::Duration;

use eventplug_harness::event_handler::{
    APP, EVENT_HANDLER, SIDECAR, create, object, the_pod, wait_delivered,
};
use eventplug_harness::operator_release::{OperatorRelease, RELEASE, split_image, test_values};
use eventplug_harness::operator_scene::{
    READY, apply_plugin, chart_deployment, condition, containers, event_plugin, image_digest,
    marking_plugin, operator_scene, push,
};
use eventplug_operator::crd::EventPlugin;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

/// The sidecars' admin port in this test: not the default 9090, so that Ready (which needs the
/// operator's `/status` reads) proves the value reached the probes, the config and the reads.
const ADMIN_PORT: u16 = 9191;

#[tokio::test]
async fn the_chart_installs_an_operator_that_leads_injects_through_its_service_upgrades_and_uninstalls()
 {
    const N: usize = 10;
    let (ns, images, _fluentd) = operator_scene("chart").await;
    let (reference, _) = push(&ns, "mark", "v1", marking_plugin("seen-by-chart")).await;
    let deployments: Api<Deployment> = ns.api();
    let original = create(
        &deployments,
        &chart_deployment(APP, &images.event_handler, 1, N, APP),
    )
    .await;

    // Installed with two replicas: every pod Ready (helm waits), one of them holds the Lease. The
    // sidecars get another admin port than the default (probes, the operator's `/status` reads).
    let values = test_values(
        &ns,
        images,
        json!({"replicas": 2, "sidecar": {"adminPort": ADMIN_PORT}}),
    );
    let release = OperatorRelease::install(&ns, &values).await;
    let operator: Deployment = deployments
        .get(RELEASE)
        .await
        .unwrap_or_else(|e| panic!("the chart's Deployment: {e}"));
    let image = operator
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|p| p.containers[0].image.clone());
    assert_eq!(
        image.flatten().as_deref(),
        Some(images.operator.as_str()),
        "the operator runs the image built here"
    );
    let pods = release.pod_names().await;
    assert_eq!(pods.len(), 2, "two operator pods: {pods:?}");
    release
        .wait_leader_among(&pods, Duration::from_secs(60))
        .await;
    // 1.20 has no policy/v1: the chart rendered the budget the server has (k8s-openapi has no
    // v1beta1 types, so it is read as a dynamic object).
    let pdb = kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk(
        "policy",
        "v1beta1",
        "PodDisruptionBudget",
    ));
    let budgets: Api<kube::api::DynamicObject> = Api::namespaced_with(ns.client(), ns.name(), &pdb);
    let budget = budgets
        .get(RELEASE)
        .await
        .unwrap_or_else(|e| panic!("the PodDisruptionBudget of two replicas: {e}"));
    assert_eq!(
        budget.data["spec"]["minAvailable"],
        json!(1),
        "{:?}",
        budget.data
    );

    // An EventPlugin: the installed operator injects the sidecar and the plugin runs on events.
    let plugins: Api<EventPlugin> = ns.api();
    apply_plugin(
        &plugins,
        &event_plugin(
            "mark",
            json!({"module": {"reference": reference}, "target": {"deployment": APP},
                   "limits": {"memoryLimit": "16Mi", "concurrency": 2}}),
        ),
    )
    .await;
    release
        .wait("EventPlugin mark Ready", READY, || async {
            let plugin = plugins.get("mark").await?;
            match condition(&plugin, "Ready") {
                Some(("True", _, _)) => Ok(()),
                other => Err(format!("Ready is {other:?}; status {:?}", plugin.status).into()),
            }
        })
        .await;
    let injected = deployments
        .get(APP)
        .await
        .unwrap_or_else(|e| panic!("{APP}: {e}"));
    assert_eq!(containers(&injected), [SIDECAR, EVENT_HANDLER]);
    let sidecar_ports = injected
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.iter().find(|c| c.name == SIDECAR))
        .and_then(|c| c.ports.clone())
        .unwrap_or_default();
    assert_eq!(
        sidecar_ports
            .iter()
            .map(|p| (p.name.as_deref(), p.container_port))
            .collect::<Vec<_>>(),
        [(Some("eventplug-admin"), i32::from(ADMIN_PORT))],
        "the sidecar's admin port is the chart's sidecar.adminPort"
    );
    let pod = the_pod(&ns).await;
    let delivered = wait_delivered(&ns, &pod, N, READY).await;
    assert!(
        delivered.contains(&format!("all {N} events delivered")),
        "{delivered}"
    );

    // The webhook, reached by the API server through the chart's Service: a pod of the target
    // without the sidecar is refused (a dry run: admission runs, nothing is created).
    let hooks: Api<ValidatingWebhookConfiguration> = Api::all(ns.client());
    let hook = hooks
        .list(&ListParams::default())
        .await
        .unwrap_or_else(|e| panic!("listing webhook configurations: {e}"))
        .items
        .into_iter()
        .find(|h| {
            h.webhooks.iter().flatten().any(|w| {
                w.client_config
                    .service
                    .as_ref()
                    .is_some_and(|s| s.namespace == ns.name() && s.name == RELEASE)
            })
        })
        .unwrap_or_else(|| {
            panic!("no webhook configuration points at the chart's Service {RELEASE}")
        });
    let pods_api: Api<Pod> = ns.api();
    let bare: Pod = object(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "bare-", "labels": {"app.kubernetes.io/name": APP}},
        "spec": {"containers": [{"name": EVENT_HANDLER, "image": images.event_handler}]}}));
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    match pods_api.create(&dry_run, &bare).await {
        Err(kube::Error::Api(status)) => assert!(
            status.message.contains("no eventplug sidecar"),
            "{}",
            status.message
        ),
        other => panic!(
            "a target pod without the sidecar was not refused through the Service: {other:?}"
        ),
    }

    // `helm upgrade` to another operator image (this build pinned by its digest: a new image
    // reference) rolls the operator's pods onto it.
    let sets_before = eventplug_harness::operator_scene::replica_sets(&ns, APP).await;
    let digest = image_digest(&ns, &images.operator).await;
    let pinned = test_values(
        &ns,
        images,
        json!({"replicas": 2, "image": {"tag": digest}, "sidecar": {"adminPort": ADMIN_PORT}}),
    );
    release.upgrade(&pinned).await;
    let (repository, _) = split_image(&images.operator);
    let pinned_image = format!("{repository}@{digest}");
    let rolled = release.wait_replaced(&pods, 2).await;
    for pod in release.pods().await {
        let image = pod.spec.as_ref().map(|s| s.containers[0].image.clone());
        assert_eq!(
            image.flatten().as_deref(),
            Some(pinned_image.as_str()),
            "{} runs another image",
            pod.name_any()
        );
    }
    release
        .wait_leader_among(&rolled, Duration::from_secs(90))
        .await;

    // `helm upgrade` to other operator settings rolls the operator's pods; the plugin stays Ready
    // and event-handler is not rolled (the new operator renders the same pod).
    let upgraded = test_values(
        &ns,
        images,
        // A settings value (its checksum rolls the pods) and an environment value.
        json!({"replicas": 2, "image": {"tag": digest}, "sidecar": {"adminPort": ADMIN_PORT},
               "statusInterval": "3s", "log": {"format": "text"}}),
    );
    release.upgrade(&upgraded).await;
    let after = release.wait_replaced(&rolled, 2).await;
    let leader = release
        .wait_leader_among(&after, Duration::from_secs(90))
        .await;
    // `log.format: text` reached the new pods: lines for people, no JSON objects.
    release
        .wait_log(&leader, "leading", Duration::from_secs(60))
        .await;
    let log = release.log_of(&leader).await;
    assert!(
        !log.is_empty() && log.lines().all(|l| !l.trim_start().starts_with('{')),
        "log.format text still logs JSON:\n{log}"
    );
    let plugin = plugins
        .get("mark")
        .await
        .unwrap_or_else(|e| panic!("mark: {e}"));
    assert_eq!(
        condition(&plugin, "Ready").map(|c| c.0),
        Some("True"),
        "{:?}",
        plugin.status
    );
    assert_eq!(
        eventplug_harness::operator_scene::replica_sets(&ns, APP).await,
        sets_before,
        "the operator's upgrade rolled event-handler"
    );

    // Uninstall in the documented order: EventPlugins first (the operator takes the sidecar out),
    // then the chart; event-handler is as it was before the injection, nothing cluster-wide stays.
    plugins
        .delete("mark", &DeleteParams::default())
        .await
        .unwrap_or_else(|e| panic!("deleting mark: {e}"));
    release
        .wait(
            "the operator to let mark go and take the sidecar out",
            Duration::from_secs(120),
            || async {
                let left = plugins.list(&ListParams::default()).await?.items.len();
                let d = deployments.get(APP).await?;
                if left == 0 && containers(&d) == [EVENT_HANDLER] {
                    Ok(())
                } else {
                    Err(format!("{left} EventPlugins left, containers {:?}", containers(&d)).into())
                }
            },
        )
        .await;
    release.uninstall().await;
    let restored = deployments
        .get(APP)
        .await
        .unwrap_or_else(|e| panic!("{APP}: {e}"));
    assert_eq!(
        restored
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map(|p| &p.containers),
        original
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .map(|p| &p.containers),
        "event-handler's containers are the chart's again"
    );
    assert!(
        deployments
            .get_opt(RELEASE)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none(),
        "the operator's Deployment is gone"
    );
    let cluster_roles: Api<ClusterRole> = Api::all(ns.client());
    let leftover = cluster_roles
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={RELEASE}")))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .items
        .into_iter()
        .filter_map(|r| r.metadata.name)
        .filter(|name| name.starts_with(ns.name()))
        .count();
    assert_eq!(leftover, 0, "the chart's ClusterRole is gone");
    let cluster_bindings: Api<ClusterRoleBinding> = Api::all(ns.client());
    let cluster_name = format!("{}-{RELEASE}", ns.name());
    assert!(
        cluster_bindings
            .get_opt(&cluster_name)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none(),
        "the chart's ClusterRoleBinding {cluster_name} is gone"
    );
    assert!(
        hooks
            .get_opt(&hook.name_any())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none(),
        "the target's webhook configuration is gone with its last EventPlugin"
    );
}
