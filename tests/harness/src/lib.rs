//! Test support for eventplug's Kubernetes tests.
//!
//! Every test that needs Kubernetes shares one real single-node cluster (Kubernetes 1.20, started
//! by `tests/cluster/cluster.sh up`, see `docs/testing.md`) and gets a namespace of its own:
//!
//! ```no_run
//! # async fn example() {
//! use eventplug_harness::TestNamespace;
//! use k8s_openapi::api::core::v1::ConfigMap;
//!
//! let ns = TestNamespace::create("my-test").await; // panics if the cluster cannot start
//! let config_maps = ns.api::<ConfigMap>();
//! // ... create objects in `ns.name()`; the namespace is deleted when `ns` is dropped.
//! # }
//! ```
//!
//! Tests that need the cluster fail loudly when it cannot be started: they are never skipped.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod demo;
pub mod event_handler;
pub mod operator_release;
pub mod operator_scene;

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Status};
use kube::api::{AttachParams, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config, Resource};
use tokio::io::AsyncReadExt;

/// The label put on every namespace the harness creates.
pub const NAMESPACE_LABEL: &str = "eventplug.dev/test-namespace";

/// Environment variable naming another `cluster.sh` to run instead of the repository's.
pub const CLUSTER_SCRIPT_ENV: &str = "EVENTPLUG_CLUSTER_SCRIPT";

/// Environment variable that, when set to `1`, keeps the namespaces of failed tests for
/// inspection instead of deleting them.
pub const KEEP_FAILED_ENV: &str = "EVENTPLUG_KEEP_FAILED_NAMESPACES";

/// Why the harness could not provide a cluster or a namespace.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The shared cluster could not be started (the reason is the same for every test).
    #[error("the eventplug test cluster is not available: {0}")]
    Cluster(String),
    /// `cluster.sh` could not be run at all.
    #[error("could not run {script}: {source}")]
    Spawn {
        /// The script that was run.
        script: PathBuf,
        /// Why it could not be run.
        source: std::io::Error,
    },
    /// `cluster.sh` ran and failed.
    #[error(
        "`{script} {command}` failed ({status}): {said} (its whole output is above; the cluster's \
         component logs are in the folder it names)"
    )]
    Script {
        /// The script that was run.
        script: PathBuf,
        /// Its subcommand.
        command: &'static str,
        /// How it ended.
        status: std::process::ExitStatus,
        /// Its last error line (the line starting with `cluster.sh: error:`, else its last line).
        said: String,
    },
    /// `cluster.sh env` did not name what the harness needs.
    #[error("`cluster.sh env` did not print {0}")]
    MissingEnv(&'static str),
    /// The kubeconfig could not be read.
    #[error("could not read the kubeconfig {path}: {message}")]
    Kubeconfig {
        /// The kubeconfig's path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// An API call failed.
    #[error("{what}: {source}")]
    Api {
        /// What was being done.
        what: String,
        /// The client's error.
        source: kube::Error,
    },
    /// A command run in a container could not be followed to its end.
    #[error("{what}: {message}")]
    Exec {
        /// The command and where it ran.
        what: String,
        /// What went wrong.
        message: String,
    },
    /// A condition was not met within its deadline.
    #[error("timed out after {timeout:?} waiting for {what}; last observation: {last}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The deadline.
        timeout: Duration,
        /// What the last attempt saw.
        last: String,
    },
}

/// The shared test cluster: where its kubeconfig is, and the addresses and images tests use.
#[derive(Debug, Clone)]
pub struct Cluster {
    kubeconfig: PathBuf,
    node_ip: String,
    registry: String,
    test_image: String,
    api_server: String,
    containerd: Option<PathBuf>,
}

static SHARED: OnceLock<Result<Cluster, String>> = OnceLock::new();

impl Cluster {
    /// Starts the shared cluster with `cluster.sh up`, or reuses it when it is already up (the
    /// script checks), once per test process; later calls return the same result at once.
    ///
    /// This blocks while the cluster starts: seconds when its binaries are cached, minutes on a
    /// new machine (the script prints its progress).
    ///
    /// # Panics
    /// When the cluster cannot be started, with the reason: tests that need it fail, never skip.
    pub fn shared() -> &'static Cluster {
        match Self::try_shared() {
            Ok(cluster) => cluster,
            Err(reason) => panic!("the eventplug test cluster is not available: {reason}"),
        }
    }

    /// Like [`Cluster::shared`], but returns the reason instead of panicking.
    pub fn try_shared() -> Result<&'static Cluster, &'static str> {
        SHARED
            .get_or_init(|| Self::start().map_err(|e| e.to_string()))
            .as_ref()
            .map_err(String::as_str)
    }

    fn start() -> Result<Cluster, HarnessError> {
        let script = cluster_script();
        run_script(&script, "up")?;
        let output = Command::new("bash")
            .arg(&script)
            .arg("env")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|source| HarnessError::Spawn {
                script: script.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(HarnessError::Script {
                script,
                command: "env",
                status: output.status,
                said: String::new(),
            });
        }
        let env = parse_env(&String::from_utf8_lossy(&output.stdout));
        let get = |key: &'static str| env.get(key).cloned().ok_or(HarnessError::MissingEnv(key));
        Ok(Cluster {
            kubeconfig: PathBuf::from(get("KUBECONFIG")?),
            node_ip: get("EVENTPLUG_CLUSTER_NODE_IP")?,
            registry: get("EVENTPLUG_CLUSTER_REGISTRY")?,
            test_image: get("EVENTPLUG_CLUSTER_TEST_IMAGE")?,
            api_server: get("EVENTPLUG_CLUSTER_API_SERVER")?,
            containerd: env.get("EVENTPLUG_CLUSTER_CONTAINERD").map(PathBuf::from),
        })
    }

    /// The admin kubeconfig (also usable with `kubectl --kubeconfig`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The node's address on the cluster bridge: pods reach servers on this machine there.
    pub fn node_ip(&self) -> &str {
        &self.node_ip
    }

    /// The cluster's image registry (`host:port`, plain HTTP), which containerd pulls from.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// A small image in the cluster's registry: busybox (`sh`, `httpd`, `wget`, `nc`, ...) and
    /// `curl`, with `/bin/sh` as its entrypoint.
    pub fn test_image(&self) -> &str {
        &self.test_image
    }

    /// The API server's URL.
    pub fn api_server(&self) -> &str {
        &self.api_server
    }

    /// containerd's socket, where the node's containers can be reached beneath kubelet (`ctr
    /// --address <socket> -n k8s.io …`).
    pub fn containerd_socket(&self) -> Option<&Path> {
        self.containerd.as_deref()
    }

    /// A new client with the admin identity, bound to the current tokio runtime.
    pub async fn client(&self) -> Result<Client, HarnessError> {
        let kubeconfig =
            Kubeconfig::read_from(&self.kubeconfig).map_err(|e| HarnessError::Kubeconfig {
                path: self.kubeconfig.clone(),
                message: e.to_string(),
            })?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| HarnessError::Kubeconfig {
                path: self.kubeconfig.clone(),
                message: e.to_string(),
            })?;
        Client::try_from(config).map_err(|source| HarnessError::Api {
            what: "building a client".to_owned(),
            source,
        })
    }
}

fn cluster_script() -> PathBuf {
    match std::env::var_os(CLUSTER_SCRIPT_ENV) {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster/cluster.sh"),
    }
}

/// Runs `script command`, passing its stderr through as it comes (a first build prints progress
/// for minutes) while keeping the line that says why it failed.
fn run_script(script: &Path, command: &'static str) -> Result<(), HarnessError> {
    let spawn_error = |source| HarnessError::Spawn {
        script: script.to_path_buf(),
        source,
    };
    let mut child = Command::new("bash")
        .arg(script)
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;
    let mut said = String::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            // Written to the process's stderr directly, past the test harness's output capture.
            let _ = writeln!(std::io::stderr().lock(), "{line}");
            if line.starts_with("cluster.sh: error:") || !said.starts_with("cluster.sh: error:") {
                said = line;
            }
        }
    }
    let status = child.wait().map_err(spawn_error)?;
    if status.success() {
        Ok(())
    } else {
        Err(HarnessError::Script {
            script: script.to_path_buf(),
            command,
            status,
            said,
        })
    }
}

/// Parses `export KEY=VALUE` lines as `cluster.sh env` prints them (values quoted with bash's
/// `printf %q`, which only needs backslashes undone for the values it prints).
fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|rest| rest.split_once('='))
        .map(|(key, value)| {
            let mut out = String::with_capacity(value.len());
            let mut chars = value.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => out.extend(chars.next()),
                    c => out.push(c),
                }
            }
            (key.to_owned(), out)
        })
        .collect()
}

/// eventplug's own images in the cluster's registry (`tests/cluster/eventplug-images.sh`).
#[derive(Debug, Clone)]
pub struct EventplugImages {
    /// The sidecar: the release `eventplug` binary, running as uid/gid 65532, `eventplug serve
    /// --config /etc/eventplug/config.yaml` by default.
    pub sidecar: String,
    /// The same sidecar limited to the config apiVersions the previous release reads
    /// (`EVENTPLUG_READ_API_VERSIONS=eventplug.dev/v1alpha1` in the image's environment): the
    /// N−1 sidecar of upgrade tests.
    pub sidecar_previous: String,
    /// The operator: the release `eventplug-operator` binary, as `charts/eventplug-operator`
    /// runs it.
    pub operator: String,
    /// The event-handler stand-in at `/usr/local/bin/teleport-plugin`, as the official chart runs
    /// event-handler.
    pub event_handler: String,
}

static IMAGES: OnceLock<Result<EventplugImages, String>> = OnceLock::new();

impl EventplugImages {
    /// Builds the images (when their inputs changed) and pushes them to the shared cluster's
    /// registry, once per test process, starting the cluster first if needed.
    ///
    /// The sidecar image holds `$EVENTPLUG_BIN`, by default the release build in the target
    /// folder, and the operator image the release `eventplug-operator`: `cargo build --release -p
    /// eventplug -p eventplug-operator` first (`scripts/test.sh` does).
    ///
    /// # Panics
    /// When the cluster cannot start or an image cannot be built or pushed, with the reason.
    pub async fn shared() -> &'static EventplugImages {
        let images = tokio::task::spawn_blocking(|| {
            IMAGES.get_or_init(|| {
                Cluster::try_shared().map_err(str::to_owned)?;
                Self::build().map_err(|e| e.to_string())
            })
        })
        .await;
        match images {
            Ok(Ok(images)) => images,
            Ok(Err(reason)) => panic!("eventplug's test images are not available: {reason}"),
            Err(e) => panic!("building eventplug's test images panicked: {e}"),
        }
    }

    fn build() -> Result<EventplugImages, HarnessError> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../cluster/eventplug-images.sh");
        let registry = Cluster::try_shared()
            .map(|c| c.registry().to_owned())
            .map_err(|e| HarnessError::Cluster(e.to_owned()))?;
        let output = Command::new("bash")
            .arg(&script)
            .arg("push")
            .env("EVENTPLUG_CLUSTER_REGISTRY", registry)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|source| HarnessError::Spawn {
                script: script.clone(),
                source,
            })?;
        if !output.status.success() {
            return Err(HarnessError::Script {
                script,
                command: "push",
                status: output.status,
                said: "the image build failed".to_owned(),
            });
        }
        let printed = String::from_utf8_lossy(&output.stdout);
        let name = |key: &'static str| {
            printed
                .lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .map(str::to_owned)
                .ok_or(HarnessError::MissingEnv(key))
        };
        Ok(EventplugImages {
            sidecar: name("sidecar")?,
            sidecar_previous: name("sidecar-previous")?,
            operator: name("operator")?,
            event_handler: name("event-handler")?,
        })
    }
}

/// A namespace of its own for one test, in the shared cluster; deleted when dropped (kept when
/// the test failed and `EVENTPLUG_KEEP_FAILED_NAMESPACES=1`).
pub struct TestNamespace {
    name: String,
    client: Client,
    cluster: &'static Cluster,
    keep: bool,
}

impl TestNamespace {
    /// Starts or reuses the shared cluster, creates a namespace named `<prefix>-<unique suffix>`
    /// and waits until pods can be created in it (its `default` service account has a token).
    ///
    /// # Panics
    /// When the cluster cannot be started or the namespace cannot be made ready, with the reason.
    pub async fn create(prefix: &str) -> TestNamespace {
        match Self::try_create(prefix).await {
            Ok(ns) => ns,
            Err(e) => panic!("could not set up a test namespace: {e}"),
        }
    }

    /// Like [`TestNamespace::create`], but returns the reason instead of panicking.
    pub async fn try_create(prefix: &str) -> Result<TestNamespace, HarnessError> {
        Self::try_create_named(unique_name(prefix), false).await
    }

    /// The namespace `name`, made afresh (an earlier one of that name deleted first, and waited
    /// for) and kept when dropped: for the demo, whose objects stay for the user to look at.
    pub async fn recreate_kept(name: &str) -> Result<TestNamespace, HarnessError> {
        let cluster = shared_cluster().await?;
        let client = cluster.client().await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        if namespaces.get_opt(name).await.ok().flatten().is_some() {
            // event-handler first (without its sidecar it would start again unfiltered), then the
            // EventPlugins while the operator runs and can let them go, then its release.
            let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
                Api::namespaced(client.clone(), name);
            let _ = deployments
                .delete(event_handler::APP, &DeleteParams::default())
                .await;
            release_plugins(&client, name).await;
            let _ = operator_release::release_command("uninstall", name, cluster.kubeconfig())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        match namespaces.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(source) => {
                return Err(HarnessError::Api {
                    what: format!("deleting the earlier namespace {name}"),
                    source,
                });
            }
        }
        try_wait_until(
            &format!("the earlier namespace {name} to be gone"),
            Duration::from_secs(180),
            || async {
                match namespaces.get_opt(name).await? {
                    None => Ok(()),
                    Some(_) => Err("still terminating".into()),
                }
            },
        )
        .await?;
        Self::try_create_named(name.to_owned(), true).await
    }

    async fn try_create_named(name: String, keep: bool) -> Result<TestNamespace, HarnessError> {
        let cluster = shared_cluster().await?;
        let client = cluster.client().await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some(BTreeMap::from([(
                    NAMESPACE_LABEL.to_owned(),
                    "true".to_owned(),
                )])),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        namespaces
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(|source| HarnessError::Api {
                what: format!("creating namespace {name}"),
                source,
            })?;
        let ns = TestNamespace {
            name,
            client,
            cluster,
            keep,
        };
        // Pods are refused in a namespace until its `default` service account has a token.
        let accounts: Api<ServiceAccount> = ns.api();
        try_wait_until(
            &format!("service account default/{} to get its token", ns.name),
            Duration::from_secs(60),
            || async {
                let account = accounts.get_opt("default").await?;
                match account.and_then(|a| a.secrets).map(|s| s.len()) {
                    Some(n) if n > 0 => Ok(()),
                    _ => Err("no token secret yet".into()),
                }
            },
        )
        .await?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A client with the admin identity.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The shared cluster this namespace is in.
    pub fn cluster(&self) -> &'static Cluster {
        self.cluster
    }

    /// An [`Api`] for a namespaced kind in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if std::thread::panicking() && std::env::var(KEEP_FAILED_ENV).as_deref() == Ok("1") {
            eprintln!(
                "keeping namespace {} of the failed test (kubectl --kubeconfig {} -n {} get all)",
                self.name,
                self.cluster.kubeconfig.display(),
                self.name
            );
            return;
        }
        // Drop cannot await, and the test's runtime may be the thread dropping this: delete from
        // a thread of its own, with a runtime and client of its own.
        let name = self.name.clone();
        let cluster = self.cluster;
        let deleted = std::thread::spawn(move || -> Result<(), String> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let client = cluster.client().await.map_err(|e| e.to_string())?;
                let namespaces: Api<Namespace> = Api::all(client);
                match namespaces.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                    Err(e) => Err(e.to_string()),
                }
            })
        })
        .join();
        match deleted {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not delete test namespace {}: {e}", self.name),
            Err(_) => eprintln!("deleting test namespace {} panicked", self.name),
        }
    }
}

/// The shared cluster, started (off the async runtime's threads) when it is not up.
async fn shared_cluster() -> Result<&'static Cluster, HarnessError> {
    match tokio::task::spawn_blocking(Cluster::try_shared).await {
        Ok(Ok(cluster)) => Ok(cluster),
        Ok(Err(reason)) => Err(HarnessError::Cluster(reason.to_owned())),
        Err(e) => Err(HarnessError::Cluster(format!("starting it panicked: {e}"))),
    }
}

/// Deletes the EventPlugins of `namespace` and waits a minute for an operator to let them go;
/// strips the finalizers of those still there (their operator is gone).
pub(crate) async fn release_plugins(client: &Client, namespace: &str) {
    use eventplug_operator::crd::EventPlugin;
    let plugins: Api<EventPlugin> = Api::namespaced(client.clone(), namespace);
    let _ = plugins
        .delete_collection(&DeleteParams::default(), &kube::api::ListParams::default())
        .await;
    let gone = try_wait_until(
        &format!("the EventPlugins of {namespace} to be let go"),
        Duration::from_secs(60),
        || async {
            let left = plugins.list(&kube::api::ListParams::default()).await?;
            if left.items.is_empty() {
                Ok(())
            } else {
                Err(format!("{} left", left.items.len()).into())
            }
        },
    )
    .await;
    if gone.is_ok() {
        return;
    }
    if let Ok(left) = plugins.list(&kube::api::ListParams::default()).await {
        for plugin in left.items {
            let name = plugin.metadata.name.unwrap_or_default();
            let _ = plugins
                .patch(
                    &name,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
                )
                .await;
        }
    }
}

fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut clean: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    clean.truncate(40);
    let clean = clean.trim_matches('-');
    let clean = if clean.is_empty() { "test" } else { clean };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mixed = ((u64::from(std::process::id()) << 32) | u64::from(nanos)) ^ (u64::from(n) << 20);
    format!("{clean}-{:08x}", (mixed ^ (mixed >> 29)) as u32)
}

/// What one attempt of [`wait_until`] returns: the value once the condition holds, or why it
/// does not yet (any error converts, so `?` works on API calls).
pub type Attempt<T> = Result<T, Box<dyn StdError + Send + Sync>>;

/// Polls `attempt` every 250 ms until it returns `Ok`, for at most `timeout`.
///
/// # Panics
/// When the deadline passes, naming `what` and the last attempt's error.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    match try_wait_until(what, timeout, attempt).await {
        Ok(value) => value,
        Err(e) => panic!("{e}"),
    }
}

/// Like [`try_wait_until`], but panics on a timeout with what `context` says (a component's log).
pub async fn wait_or_panic<T, F, Fut, C, CFut>(
    what: &str,
    timeout: Duration,
    attempt: F,
    context: C,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T>>,
    C: FnOnce() -> CFut,
    CFut: Future<Output = String>,
{
    match try_wait_until(what, timeout, attempt).await {
        Ok(value) => value,
        Err(e) => panic!("{e}\n{}", context().await),
    }
}

/// Like [`wait_until`], but returns [`HarnessError::Timeout`] instead of panicking.
pub async fn try_wait_until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    mut attempt: F,
) -> Result<T, HarnessError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Attempt<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            return Err(HarnessError::Timeout {
                what: what.to_owned(),
                timeout,
                last,
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// What a command run with [`exec`] printed, and how it ended.
#[derive(Debug)]
pub struct ExecOutput {
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
    /// The final status the API server reported (`None` if the stream ended without one).
    pub status: Option<Status>,
}

impl ExecOutput {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status.as_ref().and_then(|s| s.status.as_deref()) == Some("Success")
    }
}

/// Runs `command` in `container` of pod `pod` (through the API server and kubelet, like
/// `kubectl exec`) and collects its output.
pub async fn exec(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    command: &[&str],
) -> Result<ExecOutput, HarnessError> {
    let what = || format!("exec {command:?} in {pod}/{container}");
    let params = AttachParams::default()
        .container(container)
        .stdout(true)
        .stderr(true);
    let mut attached = pods
        .exec(pod, command.to_vec(), &params)
        .await
        .map_err(|source| HarnessError::Api {
            what: what(),
            source,
        })?;
    let status = attached.take_status();
    let mut stdout = attached.stdout();
    let mut stderr = attached.stderr();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let read_out = async {
        match stdout.as_mut() {
            Some(r) => r.read_to_end(&mut out).await.map(drop),
            None => Ok(()),
        }
    };
    let read_err = async {
        match stderr.as_mut() {
            Some(r) => r.read_to_end(&mut err).await.map(drop),
            None => Ok(()),
        }
    };
    let (a, b) = tokio::join!(read_out, read_err);
    a.and(b).map_err(|e| HarnessError::Exec {
        what: what(),
        message: e.to_string(),
    })?;
    let status = match status {
        Some(status) => status.await,
        None => None,
    };
    attached.join().await.map_err(|e| HarnessError::Exec {
        what: what(),
        message: e.to_string(),
    })?;
    Ok(ExecOutput {
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        status,
    })
}

/// Kills the process of `container` in pod `pod` with `signal` (`SIGKILL`, `SIGTERM`) through
/// containerd, beneath kubelet: what a crash or the kernel's OOM killer does, for tests that need
/// a container to die from outside without a shell or `kill` in its image. kubelet then restarts
/// it by the pod's restart policy. Returns the container's ID.
pub async fn kill_container(
    cluster: &Cluster,
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    signal: &str,
) -> Result<String, HarnessError> {
    let what = || format!("killing {pod}/{container} with {signal}");
    let exec_error = |message: String| HarnessError::Exec {
        what: what(),
        message,
    };
    let socket = cluster.containerd_socket().ok_or_else(|| {
        exec_error("`cluster.sh env` did not print EVENTPLUG_CLUSTER_CONTAINERD".to_owned())
    })?;
    let found = pods.get(pod).await.map_err(|source| HarnessError::Api {
        what: what(),
        source,
    })?;
    let id = container_id(&found, container)
        .ok_or_else(|| exec_error(format!("no running container: {}", describe_pod(&found))))?;
    let output = Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args([
            "--namespace",
            "k8s.io",
            "tasks",
            "kill",
            "--signal",
            signal,
            &id,
        ])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| exec_error(format!("cannot run ctr: {e}")))?;
    if output.status.success() {
        Ok(id)
    } else {
        Err(exec_error(format!(
            "ctr tasks kill {id}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// The containerd ID of `container`'s current run in `pod`.
pub fn container_id(pod: &Pod, container: &str) -> Option<String> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == container))
        .and_then(|c| c.container_id.as_deref())
        .and_then(|id| id.strip_prefix("containerd://"))
        .map(str::to_owned)
}

/// The process id, on this machine, of `container`'s main process in `pod`: the cluster's node is
/// this machine, so a container's processes are this machine's, found by the container ID in
/// their cgroup path.
pub fn container_pid(pod: &Pod, container: &str) -> Option<u32> {
    let id = container_id(pod, container)?;
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let cgroup = std::fs::read_to_string(entry.path().join("cgroup")).ok()?;
            cgroup.contains(&id).then_some(pid)
        })
        .min()
}

/// A one-line account of a pod's state, for failure messages.
pub fn describe_pod(pod: &Pod) -> String {
    let Some(status) = pod.status.as_ref() else {
        return "no status yet".to_owned();
    };
    let mut text = format!("phase {}", status.phase.as_deref().unwrap_or("?"));
    for c in status.container_statuses.iter().flatten() {
        let state = c.state.as_ref();
        let detail = if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
            format!(
                "waiting ({}: {})",
                w.reason.as_deref().unwrap_or("?"),
                w.message.as_deref().unwrap_or("")
            )
        } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
            format!(
                "terminated (exit {}, {})",
                t.exit_code,
                t.reason.as_deref().unwrap_or("")
            )
        } else if state.and_then(|s| s.running.as_ref()).is_some() {
            "running".to_owned()
        } else {
            "unknown".to_owned()
        };
        text.push_str(&format!(
            "; {}: {detail}, ready {}, restarts {}",
            c.name, c.ready, c.restart_count
        ));
    }
    text
}

/// Waits until pod `name` is Running with every container ready, and returns it.
///
/// # Panics
/// When that does not happen within `timeout`, with the pod's last state.
pub async fn wait_for_pod_ready(pods: &Api<Pod>, name: &str, timeout: Duration) -> Pod {
    wait_until(&format!("pod {name} to be ready"), timeout, || async {
        let pod = pods.get(name).await?;
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready {
            Ok(pod)
        } else {
            Err(describe_pod(&pod).into())
        }
    })
    .await
}

/// Waits until pod `name` has ended (phase Succeeded or Failed), and returns it.
///
/// # Panics
/// When that does not happen within `timeout`, with the pod's last state.
pub async fn wait_for_pod_completion(pods: &Api<Pod>, name: &str, timeout: Duration) -> Pod {
    wait_until(&format!("pod {name} to complete"), timeout, || async {
        let pod = pods.get(name).await?;
        match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Succeeded" | "Failed") => Ok(pod),
            _ => Err(describe_pod(&pod).into()),
        }
    })
    .await
}

/// Waits until Deployment `name` has rolled out: its controller has seen the latest spec and
/// every replica is updated and available. Returns the Deployment.
///
/// # Panics
/// When that does not happen within `timeout`, with the Deployment's last status.
pub async fn wait_for_rollout(
    deployments: &Api<Deployment>,
    name: &str,
    timeout: Duration,
) -> Deployment {
    wait_until(
        &format!("deployment {name} to roll out"),
        timeout,
        || async {
            let d = deployments.get(name).await?;
            let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let generation = d.metadata.generation.unwrap_or(0);
            let s = d.status.clone().unwrap_or_default();
            let done = s.observed_generation.unwrap_or(0) >= generation
                && s.updated_replicas.unwrap_or(0) == wanted
                && s.available_replicas.unwrap_or(0) == wanted
                && s.replicas.unwrap_or(0) == wanted;
            if done {
                Ok(d)
            } else {
                Err(format!(
                    "observed generation {:?} of {generation}, replicas {:?}, updated {:?}, \
                     available {:?} of {wanted}; conditions {:?}",
                    s.observed_generation,
                    s.replicas,
                    s.updated_replicas,
                    s.available_replicas,
                    s.conditions
                        .iter()
                        .flatten()
                        .map(|c| format!(
                            "{}={} ({})",
                            c.type_,
                            c.status,
                            c.message.as_deref().unwrap_or("")
                        ))
                        .collect::<Vec<_>>()
                )
                .into())
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_env_output() {
        let env = parse_env(
            "export KUBECONFIG=/var/lib/x/admin.kubeconfig\n\
             export EVENTPLUG_CLUSTER_KUBECTL=kubectl\\ --kubeconfig\\ /a\n\
             not an export\n",
        );
        assert_eq!(
            env.get("KUBECONFIG").map(String::as_str),
            Some("/var/lib/x/admin.kubeconfig")
        );
        assert_eq!(
            env.get("EVENTPLUG_CLUSTER_KUBECTL").map(String::as_str),
            Some("kubectl --kubeconfig /a")
        );
        assert_eq!(env.len(), 2);
    }

    #[test]
    fn unique_names_are_dns_labels() {
        let a = unique_name("Smoke_Test/Deployment");
        let b = unique_name("Smoke_Test/Deployment");
        assert_ne!(a, b);
        assert!(a.starts_with("smoke-test-deployment-"), "{a}");
        assert!(a.len() <= 63);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert!(unique_name("--").starts_with("test-"));
    }

    #[tokio::test]
    async fn wait_until_reports_what_timed_out() {
        let err = try_wait_until("the answer", Duration::from_millis(10), || async {
            Attempt::<()>::Err("still 41".into())
        })
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(
            err.contains("the answer") && err.contains("still 41"),
            "{err}"
        );
    }
}
