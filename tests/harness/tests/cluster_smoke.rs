//! Smoke test of the shared test cluster: what eventplug's Kubernetes tests rely on works on it.
//! Each test has a namespace of its own; they run side by side in the one cluster.
#![forbid(unsafe_code)]

use std::time::{Duration, Instant};

use eventplug_harness::{
    Attempt, TestNamespace, describe_pod, exec, wait_for_pod_completion, wait_for_pod_ready,
    wait_for_rollout, wait_until,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Service};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Api;
use kube::api::{ListParams, LogParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const ROLLOUT: Duration = Duration::from_secs(120);
const POD_READY: Duration = Duration::from_secs(90);

fn object<T: DeserializeOwned>(value: Value) -> T {
    match serde_json::from_value(value) {
        Ok(object) => object,
        Err(e) => panic!("test manifest does not parse: {e}"),
    }
}

async fn create<K>(api: &Api<K>, value: Value) -> K
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = object(value);
    match api.create(&PostParams::default(), &object).await {
        Ok(created) => created,
        Err(e) => panic!("creating {object:?}: {e}"),
    }
}

/// The one pod a Deployment's selector `app=<app>` matches.
async fn only_pod(pods: &Api<Pod>, app: &str) -> Pod {
    wait_until(
        &format!("exactly one pod labelled app={app}"),
        POD_READY,
        || async {
            let list = pods
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await?;
            match list.items.as_slice() {
                [pod] => Ok(pod.clone()),
                other => Err(format!("{} pods", other.len()).into()),
            }
        },
    )
    .await
}

fn pod_name(pod: &Pod) -> String {
    pod.metadata.name.clone().unwrap_or_default()
}

#[tokio::test]
async fn deployment_with_two_containers_sharing_loopback_rolls_out() {
    let started = Instant::now();
    let ns = TestNamespace::create("smoke-loopback").await;
    let image = ns.cluster().test_image();
    let deployments: Api<Deployment> = ns.api();
    create(
        &deployments,
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "loopback"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "loopback"}},
                "template": {
                    "metadata": {"labels": {"app": "loopback"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [
                            {
                                "name": "server",
                                "image": image,
                                "command": ["sh", "-c", "mkdir -p /tmp/www \
                                    && echo hello-over-loopback > /tmp/www/index.html \
                                    && exec httpd -f -p 127.0.0.1:8080 -h /tmp/www"]
                            },
                            {
                                "name": "reader",
                                "image": image,
                                "command": ["sh", "-c", "until wget -q -O /tmp/got http://127.0.0.1:8080/; \
                                    do sleep 0.2; done; echo \"reader got: $(cat /tmp/got)\"; \
                                    exec sleep 2147483647"],
                                "readinessProbe": {
                                    "exec": {"command": ["wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8080/"]},
                                    "periodSeconds": 1
                                }
                            }
                        ]
                    }
                }
            }
        }),
    )
    .await;
    wait_for_rollout(&deployments, "loopback", ROLLOUT).await;

    let pods: Api<Pod> = ns.api();
    let pod = pod_name(&only_pod(&pods, "loopback").await);
    let logs = wait_until("the reader's log line", POD_READY, || async {
        let logs = pods
            .logs(
                &pod,
                &LogParams {
                    container: Some("reader".to_owned()),
                    ..LogParams::default()
                },
            )
            .await?;
        if logs.contains("reader got:") {
            Ok(logs)
        } else {
            Err(format!("log so far: {logs:?}").into())
        }
    })
    .await;
    assert!(
        logs.contains("reader got: hello-over-loopback"),
        "the reader did not read the server over loopback: {logs:?}"
    );
    eprintln!(
        "loopback deployment rolled out and read in {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn configmap_update_reaches_the_running_pod() {
    let ns = TestNamespace::create("smoke-configmap").await;
    let image = ns.cluster().test_image();
    let config_maps: Api<ConfigMap> = ns.api();
    create(
        &config_maps,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "settings"},
            "data": {"greeting": "first"}
        }),
    )
    .await;
    let pods: Api<Pod> = ns.api();
    create(
        &pods,
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "consumer"},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "main",
                    "image": image,
                    "command": ["sleep", "2147483647"],
                    "volumeMounts": [{"name": "settings", "mountPath": "/config"}]
                }],
                "volumes": [{"name": "settings", "configMap": {"name": "settings"}}]
            }
        }),
    )
    .await;
    wait_for_pod_ready(&pods, "consumer", POD_READY).await;
    let read = || async {
        let out = exec(&pods, "consumer", "main", &["cat", "/config/greeting"]).await?;
        Attempt::Ok(out.stdout)
    };
    let first = wait_until("reading /config/greeting", POD_READY, read).await;
    assert_eq!(first, "first");

    let mut settings = match config_maps.get("settings").await {
        Ok(cm) => cm,
        Err(e) => panic!("reading the ConfigMap back: {e}"),
    };
    settings.data = Some([("greeting".to_owned(), "second".to_owned())].into());
    if let Err(e) = config_maps
        .replace("settings", &PostParams::default(), &settings)
        .await
    {
        panic!("updating the ConfigMap: {e}");
    }
    let changed = Instant::now();
    wait_until(
        "the ConfigMap update to reach /config/greeting in the running pod",
        Duration::from_secs(120),
        || async {
            let seen = read().await?;
            if seen == "second" {
                Ok(())
            } else {
                Err(format!("file still says {seen:?}").into())
            }
        },
    )
    .await;
    eprintln!(
        "ConfigMap update reached the pod in {:?}",
        changed.elapsed()
    );
    let pod = match pods.get("consumer").await {
        Ok(pod) => pod,
        Err(e) => panic!("reading the pod back: {e}"),
    };
    let restarts: i32 = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .sum();
    assert_eq!(
        restarts,
        0,
        "the update must not restart the pod: {}",
        describe_pod(&pod)
    );
}

#[tokio::test]
async fn killed_container_is_restarted_by_kubelet() {
    let ns = TestNamespace::create("smoke-restart").await;
    let image = ns.cluster().test_image();
    let pods: Api<Pod> = ns.api();
    create(
        &pods,
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "restarts"},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "main",
                    "image": image,
                    // The shell stays PID 1; the server it runs is what gets killed.
                    "command": ["sh", "-c", "httpd -f -p 127.0.0.1:8080 -h /tmp; echo server ended; exit 3"]
                }]
            }
        }),
    )
    .await;
    let pod = wait_for_pod_ready(&pods, "restarts", POD_READY).await;
    let restarts = |pod: &Pod| {
        pod.status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
            .map(|c| c.restart_count)
            .sum::<i32>()
    };
    assert_eq!(restarts(&pod), 0, "{}", describe_pod(&pod));

    let killed = wait_until("killing the server inside the pod", POD_READY, || async {
        let out = exec(&pods, "restarts", "main", &["killall", "-9", "httpd"]).await?;
        if out.success() {
            Ok(Instant::now())
        } else {
            Err(format!("killall: {:?} {:?}", out.stderr, out.status).into())
        }
    })
    .await;
    let pod = wait_until(
        "kubelet to restart the killed container",
        Duration::from_secs(90),
        || async {
            let pod = pods.get("restarts").await?;
            let status = pod
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .and_then(|c| c.first());
            let restarted = status.is_some_and(|c| {
                c.restart_count >= 1
                    && c.ready
                    && c.state.as_ref().and_then(|s| s.running.as_ref()).is_some()
            });
            if restarted {
                Ok(pod)
            } else {
                Err(describe_pod(&pod).into())
            }
        },
    )
    .await;
    let last_exit = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .and_then(|c| c.last_state.as_ref())
        .and_then(|s| s.terminated.as_ref())
        .map(|t| t.exit_code);
    assert_eq!(last_exit, Some(3), "{}", describe_pod(&pod));
    eprintln!("killed container restarted in {:?}", killed.elapsed());
}

#[tokio::test]
async fn pod_reaches_the_api_server_through_the_kubernetes_service() {
    let ns = TestNamespace::create("smoke-api").await;
    let image = ns.cluster().test_image();
    let roles: Api<Role> = ns.api();
    create(
        &roles,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]
        }),
    )
    .await;
    let bindings: Api<RoleBinding> = ns.api();
    create(
        &bindings,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "default-reads-pods"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": ns.name()}]
        }),
    )
    .await;
    // The pod asks the API server for itself, first without credentials, then with its
    // service-account token, over TLS verified with the mounted CA.
    let script = r#"
        sa=/var/run/secrets/kubernetes.io/serviceaccount
        url="https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/api/v1/namespaces/$(cat $sa/namespace)/pods/api-client"
        anonymous=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert $sa/ca.crt "$url")
        for attempt in $(seq 1 50); do
            token=$(curl -s -o /tmp/body -w '%{http_code}' --max-time 10 --cacert $sa/ca.crt \
                -H "Authorization: Bearer $(cat $sa/token)" "$url")
            [ "$token" = 200 ] && break
            sleep 0.2
        done
        echo "service=$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT anonymous=$anonymous token=$token"
        grep -q '"name": "api-client"' /tmp/body && echo "the answer names this pod"
    "#;
    let pods: Api<Pod> = ns.api();
    create(
        &pods,
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "api-client"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": image, "command": ["sh", "-c", script]}]
            }
        }),
    )
    .await;
    let pod = wait_for_pod_completion(&pods, "api-client", POD_READY).await;
    let logs = match pods.logs("api-client", &LogParams::default()).await {
        Ok(logs) => logs,
        Err(e) => panic!("reading the client's log: {e}"),
    };
    let services: Api<Service> = Api::namespaced(ns.client(), "default");
    let kubernetes = match services.get("kubernetes").await {
        Ok(service) => service,
        Err(e) => panic!("reading the kubernetes Service: {e}"),
    };
    let cluster_ip = kubernetes
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap_or_default();
    assert!(
        logs.contains(&format!("service={cluster_ip}:443 "))
            && logs.contains("token=200")
            && !logs.contains("anonymous=200")
            && logs.contains("the answer names this pod"),
        "the pod did not reach the API server through the kubernetes Service ({cluster_ip}) \
         with its token; its log: {logs:?}; {}",
        describe_pod(&pod)
    );
}

#[tokio::test]
async fn service_routes_pod_to_pod_and_back_to_itself() {
    let ns = TestNamespace::create("smoke-service").await;
    let image = ns.cluster().test_image();
    let deployments: Api<Deployment> = ns.api();
    create(
        &deployments,
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "terminationGracePeriodSeconds": 1,
                        "containers": [{
                            "name": "web",
                            "image": image,
                            "command": ["sh", "-c", "mkdir -p /tmp/www && echo \"hello from $HOSTNAME\" \
                                > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www"],
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}
                        }]
                    }
                }
            }
        }),
    )
    .await;
    let services: Api<Service> = ns.api();
    let service = create(
        &services,
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}
        }),
    )
    .await;
    let cluster_ip = service.spec.and_then(|s| s.cluster_ip).unwrap_or_default();
    assert!(!cluster_ip.is_empty(), "the Service got no cluster IP");
    wait_for_rollout(&deployments, "web", ROLLOUT).await;
    let pods: Api<Pod> = ns.api();
    let web = pod_name(&only_pod(&pods, "web").await);

    // Another pod -> the Service -> the web pod.
    let script = format!(
        "for attempt in $(seq 1 100); do curl -sf --max-time 2 http://{cluster_ip}/ && exit 0; \
         sleep 0.2; done; exit 1"
    );
    create(
        &pods,
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "client"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": image, "command": ["sh", "-c", script]}]
            }
        }),
    )
    .await;
    let client = wait_for_pod_completion(&pods, "client", POD_READY).await;
    let logs = match pods.logs("client", &LogParams::default()).await {
        Ok(logs) => logs,
        Err(e) => panic!("reading the client's log: {e}"),
    };
    assert!(
        logs.contains(&format!("hello from {web}")),
        "pod -> Service {cluster_ip} -> pod {web} failed: log {logs:?}; {}",
        describe_pod(&client)
    );

    // The web pod -> its own Service -> itself (hairpin).
    let url = format!("http://{cluster_ip}/");
    let answer = wait_until(
        "the web pod to reach itself through its Service",
        Duration::from_secs(30),
        || async {
            // (busybox's `wget -T` crashes; curl has a timeout that works)
            let out = exec(
                &pods,
                &web,
                "web",
                &["curl", "-sS", "--max-time", "2", &url],
            )
            .await?;
            if out.success() {
                Ok(out.stdout)
            } else {
                Err(format!("curl: {:?} {:?}", out.stderr, out.status).into())
            }
        },
    )
    .await;
    assert_eq!(answer.trim(), format!("hello from {web}"));
}
