//! The operator as a process of this machine for tests and benchmarks with real pods:
//! `eventplug-operator run` with the test cluster's kubeconfig and settings scoped to one test
//! namespace, modules pushed to the cluster's registry, event-handler's Deployment in the official
//! chart's shape, and the EventPlugins' conditions waited on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::event_handler::{
    EVENT_HANDLER, Fluentd, PLUGIN_DIR, create_chart_inputs, install_crds, object,
};
use crate::{EventplugImages, TestNamespace};
use eventplug_oci::{HostSettings, PushRequest, Reference, Registry, RegistrySettings};
use eventplug_operator::crd::{EventPlugin, EventPluginTarget};
use eventplug_test_support::TempDir;
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

/// `eventplug-operator run` as a child process, scoped to one test namespace; killed on drop.
pub struct Operator {
    child: Child,
    dir: TempDir,
    binary: PathBuf,
    settings: PathBuf,
    kubeconfig: PathBuf,
}

impl Operator {
    /// The operator binary: `$EVENTPLUG_OPERATOR_BIN`, or the one beside the test binary.
    pub fn binary() -> PathBuf {
        if let Some(path) = std::env::var_os("EVENTPLUG_OPERATOR_BIN") {
            return PathBuf::from(path);
        }
        // target/<profile>/deps/<this test> → target/<profile>/eventplug-operator
        let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
        let profile = exe
            .parent()
            .and_then(|deps| deps.parent())
            .unwrap_or_else(|| panic!("{} is not in a target folder", exe.display()));
        profile.join("eventplug-operator")
    }

    /// Started for `ns` with the test settings (policy, registry, webhook, kept CA).
    pub fn start(ns: &TestNamespace, sidecar_image: &str) -> Self {
        Self::start_with(ns, sidecar_image, "")
    }

    /// Started with `extra` appended to the settings (YAML).
    pub fn start_with(ns: &TestNamespace, sidecar_image: &str, extra: &str) -> Self {
        let binary = Self::binary();
        assert!(
            binary.is_file(),
            "{} is not there: build it with `cargo build -p eventplug-operator` (scripts/test.sh does), or set EVENTPLUG_OPERATOR_BIN",
            binary.display()
        );
        let dir = TempDir::new("operator");
        let registry = ns.cluster().registry();
        let settings = dir.0.join("settings.yaml");
        let text = format!(
            "policy:
  allowedNamespaces: [{ns}]
  allowedRegistries: ['{registry}']
sidecarImage: {sidecar_image}
registries:
  '{registry}': {{plainHttp: true}}
statusInterval: 2s
metricsAddress: 127.0.0.1:0
webhook:
  address: '{node_ip}:0'
  caSecret: {{namespace: {ns}, name: eventplug-webhook-ca}}
{extra}",
            ns = ns.name(),
            node_ip = ns.cluster().node_ip(),
        );
        if let Err(e) = std::fs::write(&settings, text) {
            panic!("writing {}: {e}", settings.display());
        }
        let child = Self::spawn(&binary, &settings, ns.cluster().kubeconfig(), &dir);
        Self {
            child,
            dir,
            binary,
            settings,
            kubeconfig: ns.cluster().kubeconfig().to_owned(),
        }
    }

    fn spawn(
        binary: &std::path::Path,
        settings: &std::path::Path,
        kubeconfig: &std::path::Path,
        dir: &TempDir,
    ) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.0.join("operator.log"))
            .unwrap_or_else(|e| panic!("opening the operator's log: {e}"));
        Command::new(binary)
            .args(["run", "--settings"])
            .arg(settings)
            .env("KUBECONFIG", kubeconfig)
            .env("EVENTPLUG_LOG", "info,eventplug_operator=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()))
    }

    /// Kills the operator (SIGKILL: no clean shutdown) and starts it again with the same settings.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Self::spawn(&self.binary, &self.settings, &self.kubeconfig, &self.dir);
    }

    /// Waits for `attempt` with a deadline; on failure panics with the operator's log.
    pub async fn wait<T, F, Fut>(&self, what: &str, timeout: Duration, attempt: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = crate::Attempt<T>>,
    {
        crate::wait_or_panic(what, timeout, attempt, || async {
            format!("--- operator log:\n{}", self.log())
        })
        .await
    }

    /// Waits until the operator's log has a line with `text`.
    pub async fn wait_log(&self, text: &str, timeout: Duration) {
        self.wait(
            &format!("the operator to log {text:?}"),
            timeout,
            || async {
                let log =
                    std::fs::read_to_string(self.dir.0.join("operator.log")).unwrap_or_default();
                if log.contains(text) {
                    Ok(())
                } else {
                    Err("not yet".into())
                }
            },
        )
        .await;
    }

    /// The operator's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The operator's `/metrics` (its address read from its log).
    pub async fn metrics(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let log = std::fs::read_to_string(self.dir.0.join("operator.log")).unwrap_or_default();
        let Some(address) = log
            .lines()
            .filter(|l| l.contains("metrics and health serving"))
            .find_map(|l| {
                let value: Value = serde_json::from_str(l).ok()?;
                value["fields"]["address"].as_str().map(str::to_owned)
            })
        else {
            return "(no metrics address in the operator's log)".into();
        };
        let fetch = async {
            let mut stream = tokio::net::TcpStream::connect(&address).await?;
            stream
                .write_all(
                    format!(
                        "GET /metrics HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await?;
            Ok::<_, std::io::Error>(answer)
        };
        match tokio::time::timeout(Duration::from_secs(5), fetch).await {
            Ok(Ok(answer)) => answer
                .split_once("\r\n\r\n")
                .map_or(answer.clone(), |(_, b)| b.to_owned()),
            Ok(Err(e)) => format!("(GET {address}/metrics: {e})"),
            Err(_) => format!("(GET {address}/metrics timed out)"),
        }
    }

    /// The operator's log so far (for failure messages).
    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.0.join("operator.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

/// Pushes `module` to the cluster's registry as `plugins/<repository>:<tag>`; returns the tag
/// reference and the manifest digest.
pub async fn push(
    ns: &TestNamespace,
    repository: &str,
    tag: &str,
    module: Vec<u8>,
) -> (String, String) {
    let host = ns.cluster().registry().to_owned();
    let registry = Registry::new(RegistrySettings {
        hosts: [(
            host.clone(),
            HostSettings {
                plain_http: true,
                ca: None,
            },
        )]
        .into(),
        progress: false,
        ..RegistrySettings::default()
    });
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
    operator: &Operator,
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
pub async fn remove_all_plugins(api: &Api<EventPlugin>, operator: &Operator) {
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
