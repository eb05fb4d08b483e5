//! The operator installed for real: `charts/eventplug-operator` installed into a test namespace by
//! the real Helm engine (`tests/chart/release.py`, PyPI helm-python-sdk), the operator running
//! there as pods of the image built from `images/operator.Dockerfile`, scoped to that namespace.

use std::process::Command;
use std::time::Duration;

use crate::{EventplugImages, TestNamespace};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{ListParams, LogParams};
use serde_json::{Value, json};

/// The release's name; its objects are named `eventplug-operator` (the chart's name holds it).
pub const RELEASE: &str = "eventplug-operator";

/// The label selector of the release's operator pods.
pub const POD_SELECTOR: &str =
    "app.kubernetes.io/name=eventplug-operator,app.kubernetes.io/instance=eventplug-operator";

/// A Helm release of the operator chart in one test namespace.
pub struct OperatorRelease<'a> {
    ns: &'a TestNamespace,
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
        let release = Self { ns };
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
    }

    async fn helm(&self, verb: &str, values: Option<&Value>) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../chart/release.py");
        let mut command = Command::new("python3");
        command
            .arg(script)
            .args([verb, RELEASE, self.ns.name()])
            .env("KUBECONFIG", self.ns.cluster().kubeconfig());
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
    pub async fn pod_names(&self) -> std::collections::BTreeSet<String> {
        self.pods()
            .await
            .iter()
            .map(kube::ResourceExt::name_any)
            .collect()
    }

    /// Waits until one of `pods` holds the release's Lease; returns its name.
    pub async fn wait_leader_among(
        &self,
        pods: &std::collections::BTreeSet<String>,
        timeout: Duration,
    ) -> String {
        let leases: Api<k8s_openapi::api::coordination::v1::Lease> = self.ns.api();
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
