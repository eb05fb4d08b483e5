//! event-handler as the official chart runs it, for tests with real pods: fluentd (nginx with
//! mTLS on the node's bridge address), the chart's TOML, and what tests ask of the pods (their
//! state, logs and events when something is not where it should be; the stand-in's delivery log;
//! a sidecar's admin port).

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::{TestNamespace, describe_pod, try_wait_until};
use eventplug_test_support::TempDir;
use eventplug_test_support::components::{Certificates, Nginx};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::{ListParams, LogParams, Patch, PatchParams, PostParams};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The chart's release and Deployment name (and its pods' `app.kubernetes.io/name`).
pub const APP: &str = "teleport-plugin-event-handler";
/// event-handler's container in the chart's pod.
pub const EVENT_HANDLER: &str = "teleport-plugin-event-handler";
/// The injected sidecar container.
pub const SIDECAR: &str = "eventplug";
/// Where the chart keeps event-handler's files.
pub const PLUGIN_DIR: &str = "/var/lib/teleport/plugins/event-handler";
/// How long a pod may take to become Ready.
pub const POD_READY: Duration = Duration::from_secs(120);
/// The sidecar's admin port.
pub const ADMIN_PORT: u16 = eventplug_operator::render::DEFAULT_ADMIN_PORT;

/// nginx with mTLS standing in for fluentd, on the node's bridge address (pods cannot reach this
/// machine's loopback).
pub struct Fluentd {
    _dir: TempDir,
    /// Its CA and the client certificate event-handler (and the sidecar) present.
    pub certs: Certificates,
    /// The server.
    pub nginx: Nginx,
}

impl Fluentd {
    /// nginx with mTLS on `node_ip` (the node's bridge address), certificates made for it.
    pub fn start(node_ip: &str) -> Self {
        let ip: Ipv4Addr = node_ip
            .parse()
            .unwrap_or_else(|e| panic!("node IP {node_ip:?}: {e}"));
        let dir = TempDir::new("pod-shape");
        let certs = Certificates::generate_for(&dir.0, &[ip]);
        let nginx = Nginx::start_on(&dir.0, &certs, ip);
        Self {
            _dir: dir,
            certs,
            nginx,
        }
    }

    /// A PEM file's text.
    pub fn pem(path: &std::path::Path) -> String {
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// A test manifest as a typed object.
pub fn object<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).unwrap_or_else(|e| panic!("test manifest does not parse: {e}"))
}

/// Creates `object`, panicking with its kind and name when refused.
pub async fn create<K>(api: &Api<K>, object: &K) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
    K::DynamicType: Default,
{
    match api.create(&PostParams::default(), object).await {
        Ok(created) => created,
        // By kind and name: a Secret's data stays out of the message.
        Err(e) => panic!(
            "creating {} {:?}: {e}",
            K::kind(&Default::default()),
            object.meta().name
        ),
    }
}

/// The event-handler TOML exactly as the official chart renders it, pointing at `fluentd`.
pub fn chart_toml(fluentd: &str, session: &str) -> String {
    format!(
        r#"storage = "{PLUGIN_DIR}/storage"
timeout = "10s"
batch = 20
window-size = "24h"
debug = false

[teleport]
addr = "teleport.example.com:443"
identity = "{PLUGIN_DIR}/teleport-identity/auth_id"
refresh.enabled = true

[forward.fluentd]
url = "{fluentd}"
session-url = "{session}"
ca = "{PLUGIN_DIR}/ca.crt"
cert = "{PLUGIN_DIR}/client.crt"
key = "{PLUGIN_DIR}/client.key"
"#
    )
}

/// Everything that says why a pod is not where it should be: its state, both containers' logs
/// (the current and the previous instance) and the namespace's events.
pub async fn report(ns: &TestNamespace, pod: &str) -> String {
    let pods: Api<Pod> = ns.api();
    let mut text = match pods.get(pod).await {
        Ok(p) => format!("pod {pod}: {}\n", describe_pod(&p)),
        Err(e) => format!("pod {pod}: {e}\n"),
    };
    for container in [SIDECAR, EVENT_HANDLER] {
        for previous in [true, false] {
            let params = LogParams {
                container: Some(container.into()),
                previous,
                tail_lines: Some(20),
                ..LogParams::default()
            };
            if let Ok(log) = pods.logs(pod, &params).await {
                let which = if previous { "previous" } else { "current" };
                text.push_str(&format!("--- {container} ({which}):\n{log}\n"));
            }
        }
    }
    let events: Api<Event> = ns.api();
    if let Ok(list) = events.list(&ListParams::default()).await {
        text.push_str("--- events:\n");
        for e in list.items {
            text.push_str(&format!(
                "{} {} {}: {}\n",
                e.type_.unwrap_or_default(),
                e.involved_object.name.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            ));
        }
    }
    text
}

/// Waits for `attempt` with a deadline; on failure panics with the pod's whole report.
pub async fn wait_for<T, F, Fut>(
    ns: &TestNamespace,
    pod: &str,
    what: &str,
    timeout: Duration,
    attempt: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = crate::Attempt<T>>,
{
    match try_wait_until(what, timeout, attempt).await {
        Ok(value) => value,
        Err(e) => panic!("{e}\n{}", report(ns, pod).await),
    }
}

/// The Deployment's one pod.
pub async fn the_pod(ns: &TestNamespace) -> String {
    let pods: Api<Pod> = ns.api();
    let found = try_wait_until("the Deployment's pod", POD_READY, || async {
        let list = pods
            .list(&ListParams::default().labels(&format!("app.kubernetes.io/name={APP}")))
            .await?;
        match list.items.as_slice() {
            [pod] => Ok(pod.metadata.name.clone().unwrap_or_default()),
            other => Err(format!("{} pods", other.len()).into()),
        }
    })
    .await;
    match found {
        Ok(name) => name,
        Err(e) => panic!("{e}"),
    }
}

/// Whether the pod is Ready.
pub fn ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// How often kubelet restarted `container`.
pub fn restarts(pod: &Pod, container: &str) -> i32 {
    pod.status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .find(|c| c.name == container)
        .map_or(0, |c| c.restart_count)
}

/// The event-handler stand-in's whole log (its current container), once it says all `n` events
/// were delivered (its last line then).
pub async fn wait_delivered(ns: &TestNamespace, pod: &str, n: usize, timeout: Duration) -> String {
    let pods: Api<Pod> = ns.api();
    let line = format!("all {n} events delivered");
    let log = |tail_lines| {
        let pods = pods.clone();
        async move {
            let params = LogParams {
                container: Some(EVENT_HANDLER.into()),
                tail_lines,
                ..LogParams::default()
            };
            pods.logs(pod, &params).await
        }
    };
    wait_for(
        ns,
        pod,
        &format!("event-handler to log {line:?}"),
        timeout,
        || async {
            let tail = log(Some(2)).await?;
            if tail.contains(&line) {
                Ok(())
            } else {
                Err(format!("its last lines: {tail:?}").into())
            }
        },
    )
    .await;
    match log(None).await {
        Ok(whole) => whole,
        Err(e) => panic!("reading event-handler's log: {e}"),
    }
}

/// The uid the stand-in gives generated event `n`.
pub fn uid(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// The uid of a received body.
pub fn uid_of(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["uid"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("nginx received a body that is not an event: {body:?}"))
}

/// One GET to the pod's admin port from this machine (the node), over the cluster bridge.
pub async fn admin_get(
    pod_ip: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    http_get(&format!("{pod_ip}:{ADMIN_PORT}"), path, token).await
}

/// One plain-HTTP GET to `address` (`ip:port`), five seconds for each of connecting and reading:
/// the status code and the body.
pub async fn http_get(
    address: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(address),
    )
    .await??;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {address}\r\n{auth}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await??;
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// The pod's IP (panics when it has none).
pub fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_else(|| panic!("the pod has no IP: {}", describe_pod(pod)))
}

/// The chart's own (and its owner's) objects besides the Deployment: the fluentd client
/// certificate Secret (chart value `fluentd.certificate.secretName`), the Teleport identity
/// (unused by the stand-in) and the TOML ConfigMap, pointing at `fluentd`.
pub async fn create_chart_inputs(ns: &TestNamespace, fluentd: &Fluentd) {
    let secrets: Api<Secret> = ns.api();
    let config_maps: Api<ConfigMap> = ns.api();
    let string_data = |pairs: &[(&str, String)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    };

    // What the chart's owner provides: the fluentd client certificate Secret (chart value
    // fluentd.certificate.secretName), the Teleport identity (unused by the stand-in), the TOML.
    let certificate = Secret {
        metadata: ObjectMeta {
            name: Some("teleport-event-handler-client-tls".into()),
            ..Default::default()
        },
        string_data: Some(string_data(&[
            ("ca.crt", Fluentd::pem(&fluentd.certs.ca)),
            ("client.crt", Fluentd::pem(&fluentd.certs.client_cert)),
            ("client.key", Fluentd::pem(&fluentd.certs.client_key)),
        ])),
        ..Default::default()
    };
    create(&secrets, &certificate).await;
    let identity = Secret {
        metadata: ObjectMeta {
            name: Some("teleport-event-handler-identity".into()),
            ..Default::default()
        },
        string_data: Some(string_data(&[(
            "auth_id",
            "not an identity: the stand-in does not talk to Teleport".into(),
        )])),
        ..Default::default()
    };
    create(&secrets, &identity).await;
    let toml = ConfigMap {
        metadata: ObjectMeta {
            name: Some(APP.into()),
            ..Default::default()
        },
        data: Some(string_data(&[(
            "teleport-event-handler.toml",
            chart_toml(
                &fluentd.nginx.url("/test.log"),
                &fluentd.nginx.url("/session"),
            ),
        )])),
        ..Default::default()
    };
    create(&config_maps, &toml).await;
}

/// Installs (or updates) CRDs by server-side apply and waits until the server serves them.
pub async fn install_crds(client: kube::Client, crds: Vec<CustomResourceDefinition>) {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        if let Err(e) = api
            .patch(
                &name,
                &PatchParams::apply("eventplug-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
        {
            panic!("the API server refused CRD {name}: {e}");
        }
        crate::wait_until(
            &format!("CRD {name} to be established"),
            Duration::from_secs(30),
            || async {
                let crd = api.get(&name).await?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established {
                    Ok(())
                } else {
                    Err("not established yet".into())
                }
            },
        )
        .await;
    }
}
