//! The operator on the test cluster with real pods, installed as users install it: the chart
//! `charts/eventplug-operator` by the real Helm engine, the operator running as pods of the image
//! built from `images/operator.Dockerfile` (no process started by hand), against event-handler's
//! Deployment in the official chart's shape (the event-handler stand-in plays event-handler; nginx
//! with mTLS on the node's bridge plays fluentd), modules pushed to the cluster's real registry.
//!
//! Mocked: only event-handler's binary (the stand-in, with its command line, flags, TOML and
//! delivery contract); Teleport is not needed by these paths.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use eventplug_harness::event_handler::{
    APP, EVENT_HANDLER, PLUGIN_DIR, SIDECAR, admin_get, create, object, pod_ip, the_pod, uid,
    uid_of, wait_delivered,
};
use eventplug_harness::kill_container;
use eventplug_harness::operator_release::{OperatorRelease, RELEASE, split_image, test_values};
use eventplug_harness::operator_scene::{
    READY, apply_plugin, chart_deployment, condition, containers, event_plugin, marking_plugin,
    operator_scene, push, remove_all_plugins, replica_sets, wait_condition,
};
use eventplug_operator::crd::{EventPlugin, EventPluginTarget};
use eventplug_operator::{identity, inject, webhook};
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret};
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

#[tokio::test]
async fn an_event_plugin_is_injected_runs_changes_without_a_rollout_and_is_removed() {
    const N: usize = 20;
    let (ns, images, fluentd) = operator_scene("operator").await;
    let (annotate_ref, annotate_digest) =
        push(&ns, "annotate", "v1", marking_plugin("seen-by-annotate")).await;
    let (tag_ref, _) = push(&ns, "tag", "v1", marking_plugin("seen-by-tag")).await;

    // The chart's Deployment at zero replicas: no pod runs before the operator injected it.
    let deployments: Api<Deployment> = ns.api();
    let original = create(
        &deployments,
        &chart_deployment(APP, &images.event_handler, 0, N, APP),
    )
    .await;
    let operator = OperatorRelease::install(&ns, &test_values(&ns, images, json!({}))).await;
    let plugins: Api<EventPlugin> = ns.api();
    apply_plugin(
        &plugins,
        &event_plugin(
            "annotate",
            json!({
                "module": {"reference": annotate_ref},
                "target": {"deployment": APP},
                "failurePolicy": "FailClosed",
                "limits": {"memoryLimit": "16Mi", "concurrency": 2}
            }),
        ),
    )
    .await;

    // The operator injects: the sidecar first, event-handler redirected, its cursor on an emptyDir.
    let injected = operator
        .wait(
            "the operator to inject the sidecar",
            Duration::from_secs(60),
            || async {
                let d = deployments.get(APP).await?;
                if containers(&d) == [SIDECAR, EVENT_HANDLER] {
                    Ok(d)
                } else {
                    Err(format!("containers {:?}", containers(&d)).into())
                }
            },
        )
        .await;
    let pod_spec = injected
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default();
    let event_handler = pod_spec
        .containers
        .iter()
        .find(|c| c.name == EVENT_HANDLER)
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        event_handler.args.as_deref(),
        Some(
            &[
                "--fluentd-url=http://127.0.0.1:8888/test.log".to_string(),
                "--fluentd-session-url=http://127.0.0.1:8888/session".to_string()
            ][..]
        ),
        "the redirect flags"
    );
    assert!(
        event_handler
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == format!("{PLUGIN_DIR}/storage")),
        "event-handler's storage has no volume: {:?}",
        event_handler.volume_mounts
    );
    assert_eq!(inject::check_pod(&pod_spec, EVENT_HANDLER, true), Ok(()));

    // Now the pods: every event reaches fluentd through the plugin.
    if let Err(e) = deployments
        .patch(APP, &PatchParams::apply("eventplug-tests").force(), &Patch::Apply(json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": APP}, "spec": {"replicas": 1}})))
        .await
    {
        panic!("scaling to 1: {e}");
    }
    let scaled = Instant::now();
    let pod = the_pod(&ns).await;
    let ready = wait_condition(
        &plugins, &operator, "annotate", "Ready", "True", None, READY,
    )
    .await;
    let ready_after = scaled.elapsed();
    let status = ready.status.clone().unwrap_or_default();
    assert_eq!(
        status.resolved_digest.as_deref(),
        Some(annotate_digest.as_str())
    );
    assert_eq!(status.running.as_deref(), Some("1/1"));
    assert_eq!(
        status.target.as_deref(),
        Some(&*format!("deployment/{APP}"))
    );
    assert_eq!(condition(&ready, "Injected").map(|c| c.0), Some("True"));
    assert_eq!(
        condition(&ready, "DeliveryGuarantee").map(|c| c.1),
        Some("ContainerRestarts")
    );
    let log = wait_delivered(&ns, &pod, N, Duration::from_secs(60)).await;
    assert!(
        !log.contains("failed"),
        "event-handler had failed tries:\n{log}"
    );
    let received = fluentd.nginx.wait_received(N);
    assert_eq!(received.len(), N, "{received:#?}");
    for (n, (uri, body)) in received.iter().enumerate() {
        assert_eq!(uri, "/test.log");
        assert_eq!(uid_of(body), uid(n + 1));
        assert!(
            body.contains(r#""seen-by-annotate":"yes""#),
            "event {} not annotated: {body}",
            n + 1
        );
    }
    let sets = replica_sets(&ns, APP).await;
    let pods: Api<Pod> = ns.api();
    let running = match pods.get(&pod).await {
        Ok(p) => p,
        Err(e) => panic!("reading pod {pod}: {e}"),
    };
    let applied_from_api = || async {
        let (code, metrics) = match admin_get(&pod_ip(&running), "/metrics", None).await {
            Ok(answer) => answer,
            Err(e) => panic!("the sidecar's /metrics: {e}"),
        };
        assert_eq!(code, 200, "{metrics}");
        let count = metrics
            .lines()
            .find(|l| l.starts_with(r#"eventplug_configs_applied_total{source="api"}"#))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        (count, metrics)
    };
    let (from_api_before, _) = applied_from_api().await;

    let added = Instant::now();
    // A second plugin: applied through the config, no new ReplicaSet, same pod.
    apply_plugin(
        &plugins,
        &event_plugin(
            "tag",
            json!({
                "module": {"reference": tag_ref},
                "target": {"deployment": APP},
                "priority": 10,
                "limits": {"memoryLimit": "16Mi", "concurrency": 1}
            }),
        ),
    )
    .await;
    wait_condition(&plugins, &operator, "tag", "Ready", "True", None, READY).await;
    let live_after = added.elapsed();
    wait_condition(
        &plugins, &operator, "annotate", "Ready", "True", None, READY,
    )
    .await;
    assert_eq!(
        replica_sets(&ns, APP).await,
        sets,
        "a plugin-set change rolled the Deployment"
    );
    assert_eq!(
        the_pod(&ns).await,
        pod,
        "a plugin-set change replaced the pod"
    );

    eprintln!(
        "EventPlugin Ready {ready_after:?} after the Deployment was scaled up (one pod start); a second plugin running in the same pod {live_after:?} after it was applied"
    );

    // The change came through the API (the sidecar follows its Secret with its own token), not
    // kubelet's refresh of the mounted file; the token is the sidecar's alone.
    let (from_api, metrics) = applied_from_api().await;
    assert!(
        from_api > from_api_before,
        "the plugin-set change was not applied from the API source ({from_api_before} before, {from_api} after):\n{metrics}"
    );
    let spec = running.spec.clone().unwrap_or_default();
    let token_mount = |container: &str| -> Option<String> {
        spec.containers
            .iter()
            .find(|c| c.name == container)
            .and_then(|c| c.volume_mounts.as_ref())
            .and_then(|m| m.iter().find(|m| m.mount_path == identity::TOKEN_DIR))
            .map(|m| m.name.clone())
    };
    assert_eq!(token_mount(SIDECAR).as_deref(), Some("eventplug-api-token"));
    assert_ne!(
        token_mount(EVENT_HANDLER).as_deref(),
        Some("eventplug-api-token")
    );
    let account = identity::service_account_name(APP);
    let secrets: Api<Secret> = ns.api();
    match secrets.get(&identity::token_secret_name(APP)).await {
        Ok(token) => assert_eq!(
            token
                .annotations()
                .get("kubernetes.io/service-account.name"),
            Some(&account)
        ),
        Err(e) => panic!("the sidecar's token Secret: {e}"),
    }
    // The operator counts what it asks of the API server.
    let operator_metrics = operator.metrics().await;
    let count = |method: &str| -> u64 {
        operator_metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "eventplug_operator_api_requests_total{{method=\"{method}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert!(
        count("GET") > 0 && count("PATCH") > 0,
        "API requests not counted:\n{operator_metrics}"
    );
    // Its Role: the target's config Secret and module ConfigMaps by name, nothing else (asked of
    // the API server's own authorizer, as the sidecar's ServiceAccount).
    let subject = format!("system:serviceaccount:{}:{account}", ns.name());
    let reviews: Api<SubjectAccessReview> = Api::all(ns.client().clone());
    let can = |verb: &'static str, resource: &'static str, name: Option<String>| {
        let reviews = reviews.clone();
        let review: SubjectAccessReview = object(json!({
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": subject, "resourceAttributes": {
                "namespace": ns.name(), "verb": verb, "resource": resource, "name": name}}
        }));
        async move {
            match reviews.create(&PostParams::default(), &review).await {
                Ok(answer) => answer.status.is_some_and(|s| s.allowed),
                Err(e) => panic!("a SubjectAccessReview of {verb} {resource}: {e}"),
            }
        }
    };
    let config_secret = Some(inject::secret_name(APP));
    let modules_0 = Some(inject::modules_config_map_name(APP, 0));
    for verb in ["get", "list", "watch"] {
        assert!(
            can(verb, "secrets", config_secret.clone()).await,
            "the sidecar may not {verb} its config Secret"
        );
    }
    assert!(can("get", "configmaps", modules_0).await);
    for (verb, resource, name) in [
        ("get", "secrets", Some(identity::token_secret_name(APP))),
        ("list", "secrets", None),
        ("update", "secrets", config_secret.clone()),
        ("get", "configmaps", Some("unrelated".to_string())),
        ("get", "pods", None),
    ] {
        assert!(
            !can(verb, resource, name.clone()).await,
            "the sidecar may {verb} {resource} {name:?}"
        );
    }

    // The sidecar killed (SIGKILL through containerd, as a crash or the OOM killer): kubelet
    // restarts it in the same pod, it comes back with both plugins at the rendered revision, and
    // the EventPlugins are Ready again without a rollout.
    if let Err(e) = kill_container(ns.cluster(), &pods, &pod, SIDECAR, "SIGKILL").await {
        panic!("killing the sidecar: {e}");
    }
    operator
        .wait(
            "the killed sidecar to be restarted and Ready",
            Duration::from_secs(120),
            || async {
                let p = pods.get(&pod).await?;
                let sidecar = p
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|c| c.iter().find(|c| c.name == SIDECAR).cloned());
                match sidecar {
                    Some(c) if c.restart_count >= 1 && c.ready => Ok(()),
                    other => Err(format!(
                        "sidecar restarts {:?}, ready {:?}",
                        other.as_ref().map(|c| c.restart_count),
                        other.as_ref().map(|c| c.ready)
                    )
                    .into()),
                }
            },
        )
        .await;
    for name in ["annotate", "tag"] {
        wait_condition(&plugins, &operator, name, "Ready", "True", None, READY).await;
    }
    assert_eq!(the_pod(&ns).await, pod, "the kill replaced the pod");
    assert_eq!(
        replica_sets(&ns, APP).await,
        sets,
        "the kill rolled the Deployment"
    );

    // The webhook: a pod of the target without the sidecar is refused, naming why; a pod of no
    // target is not (both as dry runs: admission runs, nothing is created).
    let pods: Api<Pod> = ns.api();
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let bare = |labels: Value| -> Pod {
        object(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"generateName": "bare-", "labels": labels},
            "spec": {"containers": [{"name": EVENT_HANDLER, "image": images.event_handler}]}}))
    };
    match pods
        .create(&dry_run, &bare(json!({"app.kubernetes.io/name": APP})))
        .await
    {
        Err(kube::Error::Api(status)) => {
            assert!(matches!(status.code, 400 | 403), "{status:?}");
            assert!(
                status.message.contains("no eventplug sidecar") && status.message.contains(APP),
                "{}",
                status.message
            );
        }
        other => panic!("a target pod without the sidecar was not refused: {other:?}"),
    }
    if let Err(e) = pods
        .create(
            &dry_run,
            &bare(json!({"app.kubernetes.io/name": "unrelated"})),
        )
        .await
    {
        panic!("a pod of no target was refused: {e}");
    }

    // `kubectl replace` with the chart's template (no sidecar): its pods are refused, the injected
    // pod keeps serving, and the operator applies the injection again.
    let mut replaced = original.clone();
    replaced.metadata.resource_version = match deployments.get(APP).await {
        Ok(d) => d.metadata.resource_version,
        Err(e) => panic!("reading the Deployment: {e}"),
    };
    if let Some(spec) = replaced.spec.as_mut() {
        spec.replicas = Some(1);
    }
    if let Err(e) = deployments
        .replace(APP, &PostParams::default(), &replaced)
        .await
    {
        panic!("replacing the Deployment: {e}");
    }
    operator
        .wait(
            "the operator to inject the replaced Deployment again",
            Duration::from_secs(60),
            || async {
                let d = deployments.get(APP).await?;
                if containers(&d) == [SIDECAR, EVENT_HANDLER] {
                    Ok(())
                } else {
                    Err(format!("containers {:?}", containers(&d)).into())
                }
            },
        )
        .await;
    wait_condition(
        &plugins, &operator, "annotate", "Ready", "True", None, READY,
    )
    .await;
    let running: Vec<Pod> = match pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/name={APP}")))
        .await
    {
        Ok(list) => list.items,
        Err(e) => panic!("listing pods: {e}"),
    };
    for p in &running {
        let names: Vec<&str> = p
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            names,
            [SIDECAR, EVENT_HANDLER],
            "a pod of the target runs without the sidecar: {}",
            p.name_any()
        );
    }
    assert!(
        running.iter().any(|p| p.name_any() == pod),
        "the injected pod was replaced"
    );

    // The operator killed (SIGKILL) and started again by kubelet: its webhook refuses at once
    // (its CA kept in a Secret, what the pods must have read back from the configurations), and
    // nothing rolls.
    operator.kill_leader().await;
    operator
        .wait(
            "the restarted operator's webhook to refuse a pod without the sidecar",
            Duration::from_secs(60),
            || async {
                match pods
                    .create(&dry_run, &bare(json!({"app.kubernetes.io/name": APP})))
                    .await
                {
                    Err(kube::Error::Api(status))
                        if status.message.contains("no eventplug sidecar") =>
                    {
                        Ok(())
                    }
                    other => Err(format!("{other:?}").into()),
                }
            },
        )
        .await;
    wait_condition(
        &plugins, &operator, "annotate", "Ready", "True", None, READY,
    )
    .await;
    assert_eq!(the_pod(&ns).await, pod, "the restart replaced the pod");

    // Kubernetes Events said so.
    let events: Api<Event> = ns.api();
    let said: Vec<String> = match events.list(&ListParams::default()).await {
        Ok(list) => list
            .items
            .into_iter()
            .filter(|e| e.involved_object.name.as_deref() == Some("annotate"))
            .filter_map(|e| e.reason)
            .collect(),
        Err(e) => panic!("listing events: {e}"),
    };
    assert!(
        said.iter().any(|r| r == "Running"),
        "no Running event for annotate: {said:?}"
    );

    // A plugin moved to another target leaves this one's chain (and the other one is injected).
    create(
        &deployments,
        &chart_deployment("second", &images.event_handler, 0, 1, APP),
    )
    .await;
    let mut moved = event_plugin(
        "tag",
        json!({
            "module": {"reference": tag_ref},
            "target": {"deployment": "second"},
            "priority": 10,
            "limits": {"memoryLimit": "16Mi", "concurrency": 1}
        }),
    );
    moved.metadata.resource_version = None;
    apply_plugin(&plugins, &moved).await;
    let secrets: Api<Secret> = ns.api();
    operator
        .wait(
            "tag to leave the first target's chain",
            Duration::from_secs(60),
            || async {
                let chain = |secret: Option<Secret>| -> Vec<String> {
                    secret
                        .and_then(|s| s.data)
                        .and_then(|d| d.get(inject::CONFIG_KEY).cloned())
                        .and_then(|text| String::from_utf8(text.0).ok())
                        .and_then(|text| eventplug_contract::SidecarConfig::parse(&text).ok())
                        .map(|c| c.plugins.into_iter().map(|p| p.name).collect())
                        .unwrap_or_default()
                };
                let first = chain(secrets.get_opt(&inject::secret_name(APP)).await?);
                let second = chain(secrets.get_opt(&inject::secret_name("second")).await?);
                if first == ["annotate"] && second == ["tag"] {
                    Ok(())
                } else {
                    Err(format!("first target runs {first:?}, the second {second:?}").into())
                }
            },
        )
        .await;

    // Removal: both go; the Deployment's spec is the chart's again and the owned objects are gone.
    for name in ["annotate", "tag"] {
        if let Err(e) = plugins.delete(name, &DeleteParams::default()).await {
            panic!("deleting {name}: {e}");
        }
    }
    let restored = operator
        .wait(
            "the injection to be removed",
            Duration::from_secs(60),
            || async {
                let left = plugins.list(&ListParams::default()).await?.items.len();
                let d = deployments.get(APP).await?;
                if left == 0 && containers(&d) == [EVENT_HANDLER] {
                    Ok(d)
                } else {
                    Err(format!("{left} EventPlugins left; containers {:?}", containers(&d)).into())
                }
            },
        )
        .await;
    match deployments.get("second").await {
        Ok(d) => assert_eq!(
            containers(&d),
            [EVENT_HANDLER],
            "the second target keeps its sidecar"
        ),
        Err(e) => panic!("reading the second Deployment: {e}"),
    }
    let template = |d: &Deployment| {
        let mut spec =
            serde_json::to_value(d.spec.as_ref().map(|s| &s.template)).unwrap_or_default();
        // What the chart's owner changed (replicas) is outside the template.
        if let Some(labels) = spec
            .pointer_mut("/metadata/labels")
            .and_then(Value::as_object_mut)
        {
            labels.remove(inject::TARGET_LABEL);
        }
        spec
    };
    assert_eq!(
        template(&restored),
        template(&original),
        "the pod template is not as before injection"
    );
    assert!(
        restored
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.labels.as_ref())
            .is_none_or(|l| !l.contains_key(inject::TARGET_LABEL)),
        "the target label is left"
    );
    let config_maps: Api<ConfigMap> = ns.api();
    let secret = inject::secret_name(APP);
    assert!(
        matches!(secrets.get_opt(&secret).await, Ok(None)),
        "Secret {secret} is left"
    );
    for index in 0..eventplug_operator::modules::MODULE_CONFIG_MAPS {
        let name = inject::modules_config_map_name(APP, index);
        assert!(
            matches!(config_maps.get_opt(&name).await, Ok(None)),
            "ConfigMap {name} is left"
        );
    }
    // Out of the webhook's scope again: the chart's own pods are created.
    let hooks: Api<ValidatingWebhookConfiguration> = Api::all(ns.client());
    let hook = webhook::configuration_name(ns.name(), APP);
    assert!(
        matches!(hooks.get_opt(&hook).await, Ok(None)),
        "{hook} is left"
    );
    // The API server drops a deleted configuration a moment later.
    operator
        .wait(
            "a pod of the former target to be admitted",
            Duration::from_secs(30),
            || async {
                pods.create(&dry_run, &bare(json!({"app.kubernetes.io/name": APP})))
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string().into())
            },
        )
        .await;
    operator.uninstall().await;
}

#[tokio::test]
async fn bad_event_plugins_get_a_condition_naming_what_is_wrong_and_no_half_applied_deployment() {
    let (ns, images, _fluentd) = operator_scene("operator-bad").await;
    let deployments: Api<Deployment> = ns.api();
    create(
        &deployments,
        &chart_deployment(APP, &images.event_handler, 0, 1, APP),
    )
    .await;
    create(
        &deployments,
        &chart_deployment("other", &images.event_handler, 0, 1, APP),
    )
    .await;
    // A Deployment whose TOML ConfigMap does not exist: its upstream cannot be read.
    let unreadable = create(
        &deployments,
        &chart_deployment("no-toml", &images.event_handler, 0, 1, "missing-toml"),
    )
    .await;
    // A target whose event-handler already declares the sidecar's admin port.
    let mut taken = chart_deployment("port-taken", &images.event_handler, 0, 1, APP);
    if let Some(c) = taken
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .and_then(|p| p.containers.first_mut())
    {
        c.ports = Some(vec![object(
            json!({"name": "admin", "containerPort": 9090}),
        )]);
    }
    create(&deployments, &taken).await;
    // A target that asks for more sidecar CPU than the platform's limit.
    create(
        &deployments,
        &chart_deployment("greedy", &images.event_handler, 0, 1, APP),
    )
    .await;
    let targets: Api<EventPluginTarget> = ns.api();
    if let Err(e) = targets
        .create(
            &PostParams::default(),
            &object(
                json!({"apiVersion": "eventplug.dev/v1alpha1", "kind": "EventPluginTarget",
                "metadata": {"name": "greedy"}, "spec": {"sidecar": {"cpu": "2"}}}),
            ),
        )
        .await
    {
        panic!("creating EventPluginTarget greedy: {e}");
    }
    let (good_ref, _) = push(&ns, "good", "v1", marking_plugin("x")).await;
    let (broken_ref, _) = push(
        &ns,
        "broken",
        "v1",
        b"\0asm but not really a module".to_vec(),
    )
    .await;
    let registry = ns.cluster().registry();
    let operator = OperatorRelease::install(
        &ns,
        &test_values(
            &ns,
            images,
            json!({"sidecar": {"resources": {"cpuLimit": "500m"}}}),
        ),
    )
    .await;
    let plugins: Api<EventPlugin> = ns.api();
    let cases = [
        (
            "no-such-tag",
            json!({"module": {"reference": format!("{registry}/plugins/{}-good:v9", ns.name())}, "target": {"deployment": APP}}),
            "ModuleResolved",
            "ModuleNotFound",
        ),
        (
            "not-a-module",
            json!({"module": {"reference": broken_ref}, "target": {"deployment": APP}}),
            "ModuleResolved",
            "ModuleInvalid",
        ),
        (
            "elsewhere",
            json!({"module": {"reference": "registry.example:5000/plugins/p:v1"}, "target": {"deployment": APP}}),
            "ModuleResolved",
            "RegistryNotAllowed",
        ),
        (
            "no-target",
            json!({"module": {"reference": good_ref}, "target": {"deployment": "nope"}}),
            "Injected",
            "TargetNotFound",
        ),
        (
            "no-container",
            json!({"module": {"reference": good_ref}, "target": {"deployment": "other", "container": "nope"}}),
            "Injected",
            "ContainerNotFound",
        ),
        (
            "both-targets",
            json!({"module": {"reference": good_ref}, "target": {"deployment": APP, "selector": {"matchLabels": {"a": "b"}}}}),
            "Injected",
            "InvalidTarget",
        ),
        (
            "unreadable",
            json!({"module": {"reference": good_ref}, "target": {"deployment": "no-toml"}}),
            "Injected",
            "UpstreamConfigUnreadable",
        ),
        (
            "too-big",
            json!({"module": {"reference": good_ref}, "target": {"deployment": APP}, "limits": {"memoryLimit": "1Gi"}}),
            "ModuleResolved",
            "PolicyExceeded",
        ),
        (
            "greedy-cpu",
            json!({"module": {"reference": good_ref}, "target": {"deployment": "greedy"}}),
            "Injected",
            "SidecarCpuAboveLimit",
        ),
        (
            "port-taken",
            json!({"module": {"reference": good_ref}, "target": {"deployment": "port-taken"}}),
            "Injected",
            "AdminPortTaken",
        ),
    ];
    for (name, spec, _, _) in &cases {
        apply_plugin(&plugins, &event_plugin(name, spec.clone())).await;
    }
    for (name, _, kind, reason) in &cases {
        let plugin = wait_condition(
            &plugins,
            &operator,
            name,
            kind,
            "False",
            Some(reason),
            Duration::from_secs(60),
        )
        .await;
        let (_, _, message) = condition(&plugin, kind).unwrap_or_default();
        assert!(!message.is_empty(), "{name}: {kind} has no message");
        assert_eq!(
            condition(&plugin, "Ready").map(|c| c.0),
            Some("False"),
            "{name}"
        );
    }
    // The unreadable target was left as it was: nothing half-applied.
    let now = match deployments.get("no-toml").await {
        Ok(d) => d,
        Err(e) => panic!("reading no-toml: {e}"),
    };
    assert_eq!(containers(&now), [EVENT_HANDLER]);
    assert_eq!(
        serde_json::to_value(now.spec.as_ref().map(|s| &s.template)).ok(),
        serde_json::to_value(unreadable.spec.as_ref().map(|s| &s.template)).ok()
    );
    for untouched in ["greedy", "port-taken"] {
        match deployments.get(untouched).await {
            Ok(d) => assert_eq!(containers(&d), [EVENT_HANDLER], "{untouched} was injected"),
            Err(e) => panic!("reading {untouched}: {e}"),
        }
    }
    // Every one of them can be deleted: their finalizers complete, also where no config was
    // ever made.
    for (name, _, _, _) in &cases {
        if let Err(e) = plugins.delete(name, &DeleteParams::default()).await {
            panic!("deleting {name}: {e}");
        }
    }
    operator
        .wait(
            "every EventPlugin to be gone",
            Duration::from_secs(60),
            || async {
                let left: Vec<String> = plugins
                    .list(&ListParams::default())
                    .await?
                    .items
                    .iter()
                    .map(ResourceExt::name_any)
                    .collect();
                if left.is_empty() {
                    Ok(())
                } else {
                    Err(format!("left: {left:?}").into())
                }
            },
        )
        .await;
    operator.uninstall().await;
}

#[tokio::test]
async fn a_fail_closed_plugin_without_its_module_stops_the_stream_until_it_can_run() {
    const N: usize = 10;
    let (ns, images, fluentd) = operator_scene("operator-closed").await;

    // event-handler runs before any EventPlugin: its events reach fluentd as they are.
    let deployments: Api<Deployment> = ns.api();
    let mut chart = chart_deployment(APP, &images.event_handler, 1, N, APP);
    if let Some(c) = chart
        .spec
        .as_mut()
        .and_then(|s| s.template.spec.as_mut())
        .and_then(|p| p.containers.first_mut())
    {
        // Quicker tries than event-handler's 1 s..10 s, so the test sees them sooner.
        for (name, value) in [("STANDIN_RETRY_BASE", "200ms"), ("STANDIN_RETRY_MAX", "1s")] {
            c.env
                .get_or_insert_with(Vec::new)
                .push(object(json!({"name": name, "value": value})));
        }
    }
    create(&deployments, &chart).await;
    let before = the_pod(&ns).await;
    wait_delivered(&ns, &before, N, Duration::from_secs(60)).await;
    assert_eq!(fluentd.nginx.wait_received(N).len(), N);
    let sets_before = replica_sets(&ns, APP).await;

    // A redactor whose module is not in the registry yet.
    let registry = ns.cluster().registry();
    let reference = format!("{registry}/plugins/{}-late:v1", ns.name());
    let operator = OperatorRelease::install(&ns, &test_values(&ns, images, json!({}))).await;
    let plugins: Api<EventPlugin> = ns.api();
    apply_plugin(
        &plugins,
        &event_plugin(
            "redact",
            json!({
                "module": {"reference": reference},
                "target": {"deployment": APP},
                "failurePolicy": "FailClosed",
                "limits": {"memoryLimit": "16Mi", "concurrency": 1}
            }),
        ),
    )
    .await;
    wait_condition(
        &plugins,
        &operator,
        "redact",
        "ModuleResolved",
        "False",
        Some("ModuleNotFound"),
        Duration::from_secs(60),
    )
    .await;

    // Injected in one rollout, not left paused; the pod from before is gone (the webhook refuses
    // its replacement), though the new pod cannot become Ready.
    let pods: Api<Pod> = ns.api();
    let after = operator
        .wait(
            "the pod from before to be replaced by an injected one",
            Duration::from_secs(120),
            || async {
                let list = pods
                    .list(&ListParams::default().labels(&format!("app.kubernetes.io/name={APP}")))
                    .await?;
                let names: Vec<String> = list.items.iter().map(ResourceExt::name_any).collect();
                let injected: Vec<&Pod> = list
                    .items
                    .iter()
                    .filter(|p| {
                        p.spec
                            .iter()
                            .flat_map(|s| s.containers.iter())
                            .any(|c| c.name == SIDECAR)
                    })
                    .collect();
                match injected.as_slice() {
                    [only] if names.len() == 1 => Ok(only.name_any()),
                    _ => Err(format!("pods {names:?}").into()),
                }
            },
        )
        .await;
    let sets_after = replica_sets(&ns, APP).await;
    assert_eq!(
        sets_after.len(),
        sets_before.len() + 1,
        "the injection rolled more than once: {sets_after:?}"
    );
    match deployments.get(APP).await {
        Ok(d) => assert_eq!(d.spec.as_ref().and_then(|s| s.paused), None, "left paused"),
        Err(e) => panic!("reading the Deployment: {e}"),
    }

    // Stopped: event-handler's tries are refused, and nothing more reaches fluentd.
    let log_has = |text: &'static str| {
        let pods = pods.clone();
        let pod = after.clone();
        async move {
            let params = LogParams {
                container: Some(EVENT_HANDLER.into()),
                ..LogParams::default()
            };
            let log = pods.logs(&pod, &params).await?;
            if log.contains(text) {
                Ok(())
            } else {
                Err(format!("not yet; its log ends {:?}", log.lines().last()).into())
            }
        }
    };
    // event-handler starts once the sidecar's postStart hook gives up waiting for it to be ready
    // (60 s: a stopped sidecar never is), then its tries get 503.
    operator
        .wait(
            "event-handler's tries to be refused with 503",
            Duration::from_secs(150),
            || log_has("503"),
        )
        .await;
    assert_eq!(
        fluentd.nginx.received().len(),
        N,
        "an event passed while the redactor could not run"
    );

    // The module arrives: the next reconcile resolves it and every event goes through it.
    let (_, digest) = push(&ns, "late", "v1", marking_plugin("redacted")).await;
    let ready = wait_condition(&plugins, &operator, "redact", "Ready", "True", None, READY).await;
    assert_eq!(
        ready.status.and_then(|s| s.resolved_digest).as_deref(),
        Some(digest.as_str())
    );
    let received = operator
        .wait(
            "every event of the injected pod to reach fluentd",
            READY,
            || async {
                let received = fluentd.nginx.received();
                if received.len() >= 2 * N {
                    Ok(received)
                } else {
                    Err(format!("{} of {} received", received.len(), 2 * N).into())
                }
            },
        )
        .await;
    let after_injection = &received[N..];
    let uids: std::collections::BTreeSet<String> =
        after_injection.iter().map(|(_, b)| uid_of(b)).collect();
    assert_eq!(
        uids.len(),
        N,
        "every event once (at most a resend of one): {after_injection:#?}"
    );
    for (_, body) in after_injection {
        assert!(
            body.contains(r#""redacted":"yes""#),
            "an event reached fluentd without the redactor: {body}"
        );
    }
    remove_all_plugins(&plugins, &operator).await;
    operator.uninstall().await;
}

#[tokio::test]
async fn two_replicas_one_leads_and_the_other_takes_over() {
    let (ns, images, _fluentd) = operator_scene("operator-ha").await;
    let deployments: Api<Deployment> = ns.api();
    create(
        &deployments,
        &chart_deployment(APP, &images.event_handler, 0, 1, APP),
    )
    .await;
    let (reference, _) = push(&ns, "ha", "v1", marking_plugin("ha")).await;
    // Two replicas with a short lease, so that a takeover is quick.
    let operator = OperatorRelease::install(
        &ns,
        &test_values(
            &ns,
            images,
            json!({"replicas": 2, "leaderElection": {"leaseDuration": "4s", "renewInterval": "1s"}}),
        ),
    )
    .await;
    let pods = operator.pod_names().await;
    assert_eq!(pods.len(), 2, "two operator pods: {pods:?}");
    let first = operator
        .wait_leader_among(&pods, Duration::from_secs(60))
        .await;
    let Some(second) = pods.iter().find(|p| **p != first).cloned() else {
        panic!("no second operator pod beside {first}: {pods:?}");
    };
    operator
        .wait_log(&first, r#""message":"leading""#, Duration::from_secs(30))
        .await;
    operator
        .wait_log(&second, "waiting to lead", Duration::from_secs(30))
        .await;

    let plugins: Api<EventPlugin> = ns.api();
    let spec = |priority: i32| {
        json!({
            "module": {"reference": reference},
            "target": {"deployment": APP},
            "priority": priority
        })
    };
    apply_plugin(&plugins, &event_plugin("ha", spec(0))).await;
    wait_condition(
        &plugins,
        &operator,
        "ha",
        "Injected",
        "True",
        None,
        Duration::from_secs(60),
    )
    .await;
    let second_log = operator.log_of(&second).await;
    assert!(
        !second_log.contains(r#""message":"leading""#),
        "both replicas lead:\n{second_log}"
    );

    // The leader frozen (SIGSTOP: it stops renewing, as a hung process does, and its pod stays,
    // so no replacement pod is started): the other replica takes the lease once it expires and
    // goes on reconciling. (kubelet's liveness probe restarts the frozen one later; it then
    // finds the lease taken and waits.)
    assert_eq!(operator.freeze_leader().await, first);
    let leases: Api<Lease> = ns.api();
    operator
        .wait(
            "the other replica to take the Lease",
            Duration::from_secs(60),
            || async {
                let holder = leases
                    .get(RELEASE)
                    .await?
                    .spec
                    .and_then(|s| s.holder_identity);
                if holder.as_ref() == Some(&second) {
                    Ok(())
                } else {
                    Err(format!("holder {holder:?}").into())
                }
            },
        )
        .await;
    operator
        .wait_log(&second, r#""message":"leading""#, Duration::from_secs(30))
        .await;
    apply_plugin(&plugins, &event_plugin("ha", spec(5))).await;
    let generation = match plugins.get("ha").await {
        Ok(p) => p.metadata.generation,
        Err(e) => panic!("reading the EventPlugin: {e}"),
    };
    operator
        .wait(
            "the new leader to reconcile the change",
            Duration::from_secs(60),
            || async {
                let p = plugins.get("ha").await?;
                let observed = p.status.as_ref().and_then(|s| s.observed_generation);
                if observed == generation {
                    Ok(())
                } else {
                    Err(format!("observed {observed:?} of {generation:?}").into())
                }
            },
        )
        .await;
    // The webhook still answers for the target through the chart's Service (once the frozen
    // pod's readiness probe has taken it out of the Service's endpoints, if a call went there).
    let pods: Api<Pod> = ns.api();
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let bare: Pod = object(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"generateName": "bare-", "labels": {"app.kubernetes.io/name": APP}},
        "spec": {"containers": [{"name": EVENT_HANDLER, "image": images.event_handler}]}}));
    operator
        .wait(
            "the webhook to refuse a pod without the sidecar",
            Duration::from_secs(120),
            || async {
                match pods.create(&dry_run, &bare).await {
                    Err(kube::Error::Api(status))
                        if status.message.contains("no eventplug sidecar") =>
                    {
                        Ok(())
                    }
                    other => Err(format!("{other:?}").into()),
                }
            },
        )
        .await;
    // Removed by the leader, so no configuration outlives the test.
    if let Err(e) = plugins.delete("ha", &DeleteParams::default()).await {
        panic!("deleting the EventPlugin: {e}");
    }
    operator
        .wait(
            "the EventPlugin to be gone",
            Duration::from_secs(60),
            || async {
                match plugins.get_opt("ha").await? {
                    None => Ok(()),
                    Some(_) => Err("still there".into()),
                }
            },
        )
        .await;
    operator.uninstall().await;
}

/// The sidecar image of a Deployment's pod template.
fn sidecar_image(deployment: &Deployment) -> Option<String> {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.iter().find(|c| c.name == SIDECAR))
        .and_then(|c| c.image.clone())
}

/// The `apiVersion` of the config the operator rendered for target `name`.
async fn rendered_api_version(ns: &eventplug_harness::TestNamespace, name: &str) -> String {
    let secrets: Api<Secret> = ns.api();
    let secret = match secrets.get(&inject::secret_name(name)).await {
        Ok(s) => s,
        Err(e) => panic!("the config Secret of {name}: {e}"),
    };
    let text = secret
        .data
        .as_ref()
        .and_then(|d| d.get(inject::CONFIG_KEY))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        .unwrap_or_default();
    match eventplug_contract::SidecarConfig::parse(&text) {
        Ok(config) => config.api_version,
        Err(e) => panic!("the config of {name} does not parse: {e}\n{text}"),
    }
}

#[tokio::test]
async fn a_helm_upgrade_to_a_new_sidecar_image_rolls_one_target_at_a_time_with_configs_older_sidecars_read()
 {
    const N: usize = 5;
    let (ns, images, fluentd) = operator_scene("operator-upgrade").await;
    let (reference, _) = push(&ns, "mark", "v1", marking_plugin("marked")).await;
    let deployments: Api<Deployment> = ns.api();
    let targets = ["eh-a", "eh-b"];
    for target in targets {
        create(
            &deployments,
            &chart_deployment(target, &images.event_handler, 0, N, APP),
        )
        .await;
    }
    let plugins: Api<EventPlugin> = ns.api();
    let v1 = eventplug_contract::API_VERSION_V1ALPHA1;
    let v2 = eventplug_contract::API_VERSION_V1ALPHA2;

    // The previous release: its sidecar reads v1alpha1 only, and the chart told the operator so.
    let (previous_repository, previous_tag) = split_image(&images.sidecar_previous);
    let operator = OperatorRelease::install(
        &ns,
        &test_values(
            &ns,
            images,
            json!({"sidecar": {
                "image": {"repository": previous_repository, "tag": previous_tag},
                "configApiVersion": v1
            }}),
        ),
    )
    .await;
    for target in targets {
        apply_plugin(
            &plugins,
            &event_plugin(
                &format!("mark-{target}"),
                json!({"module": {"reference": reference}, "target": {"deployment": target}}),
            ),
        )
        .await;
    }
    // Scaled up once injected, so that no pod ever ran without the plugin.
    for target in targets {
        wait_condition(
            &plugins,
            &operator,
            &format!("mark-{target}"),
            "Injected",
            "True",
            None,
            READY,
        )
        .await;
        let scale = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": target}, "spec": {"replicas": 1}});
        if let Err(e) = deployments
            .patch(
                target,
                &PatchParams::apply("eventplug-tests").force(),
                &Patch::Apply(scale),
            )
            .await
        {
            panic!("scaling {target} to 1: {e}");
        }
    }
    for target in targets {
        wait_condition(
            &plugins,
            &operator,
            &format!("mark-{target}"),
            "Ready",
            "True",
            None,
            READY,
        )
        .await;
        assert_eq!(rendered_api_version(&ns, target).await, v1);
    }
    let sets_before = [
        replica_sets(&ns, targets[0]).await,
        replica_sets(&ns, targets[1]).await,
    ];

    // `helm upgrade` to this release's sidecar image (the chart's default values): one target
    // rolls to it while the other keeps the older one, says so, and is still given the config
    // version its sidecars read.
    operator.upgrade(&test_values(&ns, images, json!({}))).await;
    let (first, second) = operator
        .wait(
            "one target rolling while the other waits its turn",
            READY,
            || async {
                let mut images_now = Vec::new();
                for target in targets {
                    images_now.push(sidecar_image(&deployments.get(target).await?));
                }
                let rolled: Vec<usize> = (0..2)
                    .filter(|i| images_now[*i].as_deref() == Some(images.sidecar.as_str()))
                    .collect();
                let [first] = rolled[..] else {
                    return Err(format!("sidecar images {images_now:?}").into());
                };
                let second = 1 - first;
                let waiting = plugins.get(&format!("mark-{}", targets[second])).await?;
                match condition(&waiting, "SidecarOutdated") {
                    Some(("True", "Outdated", message)) if message.contains("waiting for") => {
                        Ok((targets[first], targets[second]))
                    }
                    other => Err(format!("{} SidecarOutdated {other:?}", targets[second]).into()),
                }
            },
        )
        .await;
    assert_eq!(
        sidecar_image(&deployments.get(second).await.unwrap_or_default()).as_deref(),
        Some(images.sidecar_previous.as_str()),
        "{second} rolled before its turn"
    );
    assert_eq!(
        rendered_api_version(&ns, second).await,
        v1,
        "{second}'s older sidecars were given a config they do not read"
    );
    let waiting = usize::from(second == targets[1]);
    assert_eq!(
        replica_sets(&ns, second).await,
        sets_before[waiting],
        "{second}'s pod template changed while it waited its turn"
    );

    // Then the other; at the end both run this release's sidecar on the newest config version.
    for target in [first, second] {
        let name = format!("mark-{target}");
        operator
            .wait(
                &format!("{name} Ready on the new sidecar image with a v1alpha2 config"),
                READY,
                || async {
                    let plugin = plugins.get(&name).await?;
                    let version = rendered_api_version(&ns, target).await;
                    match (
                        condition(&plugin, "Ready"),
                        condition(&plugin, "SidecarOutdated"),
                    ) {
                        (Some(("True", _, _)), Some(("False", _, _))) if version == v2 => Ok(()),
                        other => Err(format!(
                            "Ready, SidecarOutdated: {other:?}; config {version}"
                        )
                        .into()),
                    }
                },
            )
            .await;
        assert_eq!(rendered_api_version(&ns, target).await, v2);
        assert_eq!(
            sidecar_image(&deployments.get(target).await.unwrap_or_default()).as_deref(),
            Some(images.sidecar.as_str())
        );
    }
    // Every event that reached fluentd went through the plugin, before, during and after.
    let received = fluentd.nginx.wait_received(2 * N);
    assert!(received.len() >= 2 * N, "{received:#?}");
    for (_, body) in &received {
        assert!(
            body.contains(r#""marked":"yes""#),
            "an event passed unmarked: {body}"
        );
    }
    remove_all_plugins(&plugins, &operator).await;
    operator.uninstall().await;
}
