//! The operator installed for real: `charts/eventplug-operator` installed into a test namespace by
//! the real Helm engine (`tests/chart/release.py`, PyPI helm-python-sdk), the operator running
//! there as pods of the image built from `images/operator.Dockerfile`, scoped to that namespace.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::event_handler::{http_get, pod_ip};
use crate::{EventplugImages, TestNamespace, container_pid, describe_pod, kill_container};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};

/// The release's name; its objects are named `eventplug-operator` (the chart's name holds it).
pub const RELEASE: &str = "eventplug-operator";

/// The operator's container in its pods.
pub const CONTAINER: &str = "operator";

/// The port of the operator's `/metrics` (the chart's `metrics.port` default).
pub const METRICS_PORT: u16 = 8080;

/// The label selector of the release's operator pods.
pub const POD_SELECTOR: &str =
    "app.kubernetes.io/name=eventplug-operator,app.kubernetes.io/instance=eventplug-operator";

/// A Helm release of the operator chart in one test namespace.
///
/// Dropped while still installed (a test that failed before its uninstall), it lets its
/// EventPlugins go while its operator runs and uninstalls itself, so that no finalizer holds the
/// namespace and no cluster-scoped object of the chart stays (unless the failed test's namespace
/// is kept: `EVENTPLUG_KEEP_FAILED_NAMESPACES=1`).
pub struct OperatorRelease<'a> {
    ns: &'a TestNamespace,
    installed: AtomicBool,
}

/// The chart's values for a test namespace: the images built here, the namespace as the only
/// allowed one, the cluster's plain-HTTP registry, a short status interval, debug logs; `extra`
/// merged over them (objects key by key).
pub fn test_values(ns: &TestNamespace, images: &EventplugImages, extra: Value) -> Value {
    let registry = ns.cluster().registry();
    let (repository, tag) = split_image(&images.operator);
    let (sidecar_repository, sidecar_tag) = split_image(&images.sidecar);
    let mut values = json!({
        "image": {"repository": repository, "tag": tag},
        "sidecar": {"image": {"repository": sidecar_repository, "tag": sidecar_tag}},
        "policy": {"allowedNamespaces": [ns.name()], "allowedRegistries": [registry]},
        "registries": {registry: {"plainHttp": true}},
        "statusInterval": "2s",
        "log": {"level": "info,eventplug_operator=debug"},
    });
    merge(&mut values, extra);
    values
}

/// The script that installs, upgrades and uninstalls the chart with the real Helm engine.
const RELEASE_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../chart/release.py");

/// `release.py VERB RELEASE NAMESPACE` against the cluster of `kubeconfig`.
pub(crate) fn release_command(verb: &str, namespace: &str, kubeconfig: &Path) -> Command {
    let mut command = Command::new("python3");
    command
        .arg(RELEASE_SCRIPT)
        .args([verb, RELEASE, namespace])
        .env("KUBECONFIG", kubeconfig);
    command
}

/// `host:port/repo:tag` → (`host:port/repo`, `tag`).
pub fn split_image(image: &str) -> (String, String) {
    match image.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => (repository.to_owned(), tag.to_owned()),
        _ => panic!("{image} has no tag"),
    }
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(into), Value::Object(from)) => {
            for (key, value) in from {
                merge(into.entry(key).or_insert(Value::Null), value);
            }
        }
        (into, from) => *into = from,
    }
}

impl<'a> OperatorRelease<'a> {
    /// `helm install` with `values`, waiting until the release's objects are ready.
    pub async fn install(ns: &'a TestNamespace, values: &Value) -> Self {
        let release = Self {
            ns,
            installed: AtomicBool::new(true),
        };
        release.helm("install", Some(values)).await;
        release
    }

    /// `helm upgrade` to `values` (not reused: give them all), waiting until ready.
    pub async fn upgrade(&self, values: &Value) {
        self.helm("upgrade", Some(values)).await;
    }

    /// `helm uninstall`, waiting until the release's objects are gone.
    pub async fn uninstall(&self) {
        self.helm("uninstall", None).await;
        self.installed.store(false, Ordering::Relaxed);
    }

    async fn helm(&self, verb: &str, values: Option<&Value>) {
        let script = RELEASE_SCRIPT;
        let mut command = release_command(verb, self.ns.name(), self.ns.cluster().kubeconfig());
        if let Some(values) = values {
            command.arg(values.to_string());
        }
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .unwrap_or_else(|e| panic!("waiting for {script}: {e}"))
            .unwrap_or_else(|e| {
                panic!("running {script}: {e} (python3 with helm-python-sdk: scripts/setup.sh)")
            });
        assert!(
            output.status.success(),
            "helm {verb} {RELEASE} failed: {}{}\n--- operator logs:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.logs().await
        );
    }

    /// The release's operator pods that are not being deleted.
    pub async fn pods(&self) -> Vec<Pod> {
        let api: Api<Pod> = self.ns.api();
        match api.list(&ListParams::default().labels(POD_SELECTOR)).await {
            Ok(list) => list
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect(),
            Err(e) => panic!("listing the operator's pods: {e}"),
        }
    }

    /// The last lines of every operator pod's log (for failure messages).
    pub async fn logs(&self) -> String {
        let api: Api<Pod> = self.ns.api();
        let Ok(list) = api.list(&ListParams::default().labels(POD_SELECTOR)).await else {
            return "(the operator's pods could not be listed)".into();
        };
        let mut out = String::new();
        for pod in list.items {
            let name = pod.metadata.name.unwrap_or_default();
            let params = LogParams {
                tail_lines: Some(30),
                ..LogParams::default()
            };
            let log = api
                .logs(&name, &params)
                .await
                .unwrap_or_else(|e| format!("(no log: {e})"));
            out.push_str(&format!("--- {name}\n{log}\n"));
        }
        out
    }

    /// Waits for `attempt` with a deadline; on failure panics with the operator pods' logs.
    pub async fn wait<T, F, Fut>(&self, what: &str, timeout: Duration, attempt: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = crate::Attempt<T>>,
    {
        crate::wait_or_panic(what, timeout, attempt, || async {
            format!("--- operator logs:\n{}", self.logs().await)
        })
        .await
    }

    /// The names of the release's operator pods that are not being deleted.
    pub async fn pod_names(&self) -> BTreeSet<String> {
        self.pods()
            .await
            .iter()
            .map(ResourceExt::name_any)
            .collect()
    }

    /// Waits until the release runs `replicas` pods, none of them one of `before` (after a
    /// `helm upgrade`, which waited for them to be Ready: the rollout done); returns their names.
    pub async fn wait_replaced(
        &self,
        before: &BTreeSet<String>,
        replicas: usize,
    ) -> BTreeSet<String> {
        self.wait(
            "the operator's pods to be replaced",
            Duration::from_secs(180),
            || async {
                let now = self.pod_names().await;
                if now.len() == replicas && now.is_disjoint(before) {
                    Ok(now)
                } else {
                    Err(format!("pods {now:?}, before {before:?}").into())
                }
            },
        )
        .await
    }

    /// The pod that holds the release's Lease now (panics when none does).
    pub async fn leader(&self) -> String {
        let leases: Api<Lease> = self.ns.api();
        match leases.get(RELEASE).await {
            Ok(lease) => lease
                .spec
                .and_then(|s| s.holder_identity)
                .unwrap_or_else(|| panic!("the Lease {RELEASE} has no holder")),
            Err(e) => panic!("reading the Lease {RELEASE}: {e}"),
        }
    }

    /// Kills the leader's operator process with SIGKILL (no clean shutdown: what a crash does)
    /// and waits until kubelet has started it again in the same pod and it is Ready; returns the
    /// pod.
    pub async fn kill_leader(&self) -> String {
        let pod = self.leader().await;
        let api: Api<Pod> = self.ns.api();
        let restarts = |p: &Pod| {
            p.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
                .find(|c| c.name == CONTAINER)
                .map(|c| (c.restart_count, c.ready))
        };
        let before = match api.get(&pod).await {
            Ok(p) => restarts(&p).map_or(0, |(n, _)| n),
            Err(e) => panic!("reading the leader {pod}: {e}"),
        };
        if let Err(e) = kill_container(self.ns.cluster(), &api, &pod, CONTAINER, "SIGKILL").await {
            panic!("{e}");
        }
        self.wait(
            &format!("the operator in {pod} to be started again and Ready"),
            Duration::from_secs(120),
            || async {
                let p = api.get(&pod).await?;
                match restarts(&p) {
                    Some((n, true)) if n > before => Ok(()),
                    _ => Err(describe_pod(&p).into()),
                }
            },
        )
        .await;
        pod
    }

    /// Freezes the leader's operator process (SIGSTOP, through containerd): it stops renewing
    /// the Lease and answering, as a hung process does, while its pod stays (so no replacement is
    /// started); kubelet's liveness probe restarts it later. Returns the pod.
    pub async fn freeze_leader(&self) -> String {
        let pod = self.leader().await;
        let api: Api<Pod> = self.ns.api();
        if let Err(e) = kill_container(self.ns.cluster(), &api, &pod, CONTAINER, "SIGSTOP").await {
            panic!("{e}");
        }
        pod
    }

    async fn leader_pod(&self) -> Pod {
        let pod = self.leader().await;
        let api: Api<Pod> = self.ns.api();
        api.get(&pod)
            .await
            .unwrap_or_else(|e| panic!("reading the leader {pod}: {e}"))
    }

    /// The process id, on this machine (the node), of the leader's operator.
    pub async fn leader_pid(&self) -> u32 {
        let pod = self.leader_pod().await;
        container_pid(&pod, CONTAINER).unwrap_or_else(|| {
            panic!(
                "no process of {}'s operator: {}",
                pod.name_any(),
                describe_pod(&pod)
            )
        })
    }

    /// The leader's `/metrics`, fetched from its pod over the cluster bridge.
    pub async fn metrics(&self) -> String {
        let address = format!("{}:{METRICS_PORT}", pod_ip(&self.leader_pod().await));
        match http_get(&address, "/metrics", None).await {
            Ok((200, body)) => body,
            Ok((code, body)) => panic!("GET {address}/metrics: {code} {body}"),
            Err(e) => panic!("GET {address}/metrics: {e}"),
        }
    }

    /// The whole log of the operator container of `pod` (panics when it cannot be read).
    pub async fn log_of(&self, pod: &str) -> String {
        self.try_log_of(pod)
            .await
            .unwrap_or_else(|e| panic!("reading the log of {pod}: {e}"))
    }

    async fn try_log_of(&self, pod: &str) -> Result<String, kube::Error> {
        let api: Api<Pod> = self.ns.api();
        let params = LogParams {
            container: Some(CONTAINER.into()),
            ..LogParams::default()
        };
        api.logs(pod, &params).await
    }

    /// Waits until the log of `pod` has a line with `text`.
    pub async fn wait_log(&self, pod: &str, text: &str, timeout: Duration) {
        self.wait(&format!("{pod} to log {text:?}"), timeout, || async {
            if self.try_log_of(pod).await?.contains(text) {
                Ok(())
            } else {
                Err("not yet".into())
            }
        })
        .await;
    }

    /// Waits until one of `pods` holds the release's Lease; returns its name.
    pub async fn wait_leader_among(&self, pods: &BTreeSet<String>, timeout: Duration) -> String {
        let leases: Api<Lease> = self.ns.api();
        self.wait("an operator pod to hold the Lease", timeout, || async {
            let lease = leases.get(RELEASE).await?;
            match lease.spec.and_then(|s| s.holder_identity) {
                Some(holder) if pods.contains(&holder) => Ok(holder),
                other => Err(format!("holder {other:?}, pods {pods:?}").into()),
            }
        })
        .await
    }
}

impl Drop for OperatorRelease<'_> {
    fn drop(&mut self) {
        if !self.installed.load(Ordering::Relaxed)
            || (std::thread::panicking()
                && std::env::var(crate::KEEP_FAILED_ENV).as_deref() == Ok("1"))
        {
            return;
        }
        // Drop cannot await, and the test's runtime may be the thread dropping this: from a
        // thread of its own, with a runtime and client of its own.
        let namespace = self.ns.name().to_owned();
        let cluster = self.ns.cluster();
        let done = std::thread::spawn(move || {
            if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                runtime.block_on(async {
                    if let Ok(client) = cluster.client().await {
                        crate::release_plugins(&client, &namespace).await;
                    }
                });
            }
            release_command("uninstall", &namespace, cluster.kubeconfig())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        })
        .join();
        if !matches!(done, Ok(Ok(status)) if status.success()) {
            eprintln!(
                "could not uninstall release {RELEASE} of {}: {done:?}",
                self.ns.name()
            );
        }
    }
}
