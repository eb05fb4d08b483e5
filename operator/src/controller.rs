//! The controller: for every EventPlugin, its target Deployments brought to what their plugins
//! ask for, and its status from what the running sidecars report.
//!
//! A target is reconciled as a whole (every EventPlugin selecting it, in order), one reconcile of a
//! target at a time: modules resolved and checked, the sidecar config rendered with a revision
//! that only grows, the owned objects applied (module ConfigMaps, the config-and-token Secret),
//! then the Deployment by server-side apply under the operator's field manager. Nothing is applied
//! to the Deployment while its upstream cannot be known: no half-applied Deployment.
//!
//! Removing an EventPlugin goes through a finalizer: it leaves its target's chain, and the last
//! one leaving takes the injection and every owned object away.

use crate::coalesce::Coalescer;
use crate::conditions::{self, PluginAtTarget, PodReport, Problem, TargetOutcome};
use crate::crd::{
    ConfigSource, EventPlugin, EventPluginSpec, EventPluginTarget, EventPluginTargetSpec,
};
use crate::discovery::{self, Found, SecretFile, Source, Upstream};
use crate::identity;
use crate::inject::{self, Injection};
use crate::metrics::Metrics;
use crate::modules;
use crate::redirect::{self, FIELD_MANAGER, Redirect};
use crate::render::{self, LISTEN_PORT, PluginInput};
use crate::resolve::{REFRESH_ANNOTATION, ResolveKey, Resolver};
use crate::settings::Settings;
use crate::sidecar_status::StatusClient;
use crate::webhook;
use eventplug_contract::{FailurePolicy, Mode, SidecarConfig};
use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The finalizer that takes a deleted EventPlugin out of its target's chain.
pub const FINALIZER: &str = "eventplug.dev/cleanup";
/// The annotation on the config Secret holding the revision of the config in it.
pub const REVISION_ANNOTATION: &str = "eventplug.dev/revision";
/// Set on a Deployment while the operator holds it paused for a first injection.
pub const PAUSED_ANNOTATION: &str = "eventplug.dev/paused-for-injection";
/// The label on every object the operator owns.
pub const MANAGED_LABEL: &str = "app.kubernetes.io/managed-by";

/// Why a reconcile failed (then it is retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A Kubernetes API call failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The finalizer could not be added or removed.
    #[error("finalizer: {0}")]
    Finalizer(String),
    /// A deleted EventPlugin cannot leave its target's chain yet (its finalizer stays).
    #[error("{0}")]
    CleanupBlocked(String),
    /// Something the operator produced does not serialize (a bug).
    #[error("{0}")]
    Internal(String),
    /// A write to a Deployment was refused by its resourceVersion, and what the write was
    /// computed from (the pod template, `spec.paused`, the operator's pause) changed since the
    /// read, or kept changing under it; the target is reconciled again from a fresh read.
    #[error("{0}")]
    Stale(String),
}

impl Error {
    /// The metric label of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(_)) => "api_refused",
            Self::Kube(_) => "api_unreachable",
            Self::Finalizer(_) => "finalizer",
            Self::CleanupBlocked(_) => "cleanup_blocked",
            Self::Internal(_) => "internal",
            Self::Stale(_) => "stale",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    client: Client,
    settings: Settings,
    resolver: Resolver,
    status: StatusClient,
    recorder: Recorder,
    stores: HashMap<String, Store<EventPlugin>>,
    /// Target reconciles, one at a time per target, by `namespace/name`.
    targets: Coalescer<String, TargetResult>,
    metrics: Arc<Metrics>,
    webhook: Option<Webhook>,
    native_sidecars: bool,
    rollouts: crate::upgrade::Rollouts,
}

/// The admission webhook, when the settings ask for one: what the controller writes into each
/// target's configuration and the scopes the webhook server decides by.
pub struct Webhook {
    /// How the API server reaches the webhook.
    pub client: webhook::ClientConfig,
    /// The CA of its serving certificate.
    pub ca_pem: String,
    /// The targets' scopes, shared with the webhook server.
    pub scopes: Arc<webhook::Scopes>,
}

/// Runs the controller in every allowed namespace until `shutdown` completes.
pub async fn run(
    client: Client,
    settings: Settings,
    metrics: Arc<Metrics>,
    webhook: Option<Webhook>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let mut controllers = Vec::new();
    let mut stores = HashMap::new();
    for namespace in &settings.policy.allowed_namespaces {
        let plugins: Api<EventPlugin> = Api::namespaced(client.clone(), namespace);
        let controller = Controller::new(plugins, watcher::Config::default());
        stores.insert(namespace.clone(), controller.store());
        controllers.push((namespace.clone(), controller));
    }
    let reporter = Reporter {
        controller: FIELD_MANAGER.into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    // Native sidecars from 1.29 on; before, the sidecar is the pod's first container.
    let native_sidecars = match client.apiserver_version().await {
        Ok(version) => inject::has_native_sidecars(&version.major, &version.minor),
        Err(error) => {
            tracing::warn!(%error, "cannot read the API server's version: the sidecar is injected as the first container");
            false
        }
    };
    tracing::info!(native_sidecars, "sidecar placement");
    let context = Arc::new(Context {
        client: client.clone(),
        resolver: Resolver::new(&settings),
        status: StatusClient::new(),
        recorder: Recorder::new(client.clone(), reporter),
        settings,
        stores,
        targets: Coalescer::default(),
        metrics,
        webhook,
        native_sidecars,
        rollouts: crate::upgrade::Rollouts::default(),
    });
    let mut running = Vec::new();
    for (namespace, controller) in controllers {
        let store = controller.store();
        let by_deployment = store.clone();
        let by_pod = store.clone();
        let by_target = store;
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
        let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
        let target_settings: Api<EventPluginTarget> = Api::namespaced(client.clone(), &namespace);
        let stream = controller
            .watches(
                deployments,
                watcher::Config::default(),
                move |d: Deployment| {
                    let labels = d.labels().clone();
                    plugins_of(&by_deployment, &d.name_any(), &labels)
                },
            )
            .watches(
                pods,
                watcher::Config::default().labels(inject::TARGET_LABEL),
                move |p: Pod| {
                    let target = p
                        .labels()
                        .get(inject::TARGET_LABEL)
                        .cloned()
                        .unwrap_or_default();
                    plugins_named(&by_pod, &target)
                },
            )
            .watches(
                target_settings,
                watcher::Config::default(),
                move |t: EventPluginTarget| plugins_named(&by_target, &t.name_any()),
            )
            .graceful_shutdown_on(shutdown.clone())
            .run(reconcile, error_policy, context.clone())
            .for_each(|result| async move {
                if let Err(error) = result {
                    tracing::debug!(%error, "reconcile not run");
                }
            });
        running.push(stream);
    }
    futures::future::join_all(running).await;
}

/// EventPlugins in `store` targeting the Deployment `name` with `labels`.
fn plugins_of(
    store: &Store<EventPlugin>,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<ObjectRef<EventPlugin>> {
    store
        .state()
        .iter()
        .filter(|p| {
            targets(&p.spec, name, labels)
                || p.status
                    .iter()
                    .flat_map(|s| s.targets.iter())
                    .any(|t| t.deployment == name)
        })
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// EventPlugins in `store` that may target the Deployment `name` (by name, or by any selector:
/// those find out in their reconcile).
fn plugins_named(store: &Store<EventPlugin>, name: &str) -> Vec<ObjectRef<EventPlugin>> {
    store
        .state()
        .iter()
        .filter(|p| {
            p.spec
                .target
                .deployment
                .as_deref()
                .is_none_or(|d| d == name)
        })
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// Whether `spec` targets the Deployment `name` with `labels`.
pub fn targets(spec: &EventPluginSpec, name: &str, labels: &BTreeMap<String, String>) -> bool {
    match (&spec.target.deployment, &spec.target.selector) {
        (Some(deployment), None) => deployment == name,
        (None, Some(selector)) => selector_matches(selector, labels),
        _ => false,
    }
}

/// The operators of a label selector's expressions.
const SELECTOR_OPERATORS: [&str; 4] = ["In", "NotIn", "Exists", "DoesNotExist"];

/// Whether `spec.target` names exactly one of a Deployment and a selector whose operators are
/// known. A plugin with an invalid target stays in the chains it runs in until it is fixed.
pub fn target_is_valid(spec: &EventPluginSpec) -> bool {
    match (&spec.target.deployment, &spec.target.selector) {
        (Some(_), None) => true,
        (None, Some(selector)) => selector
            .match_expressions
            .iter()
            .flatten()
            .all(|e| SELECTOR_OPERATORS.contains(&e.operator.as_str())),
        _ => false,
    }
}

/// Whether a label selector matches `labels`.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// A label selector as the API's query string.
fn selector_query(selector: &LabelSelector) -> String {
    let mut parts: Vec<String> = selector
        .match_labels
        .iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    for e in selector.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            _ => format!("!{}", e.key),
        });
    }
    parts.join(",")
}

fn error_policy(plugin: Arc<EventPlugin>, error: &Error, context: Arc<Context>) -> Action {
    context.metrics.failure(error.reason());
    if let Error::Stale(why) = error {
        // Another writer changed what the write was computed from: the next read sees it.
        tracing::info!(plugin = %plugin.name_any(), namespace = ?plugin.namespace(), why, "reconciling again");
        return Action::requeue(Duration::from_secs(1));
    }
    tracing::warn!(plugin = %plugin.name_any(), namespace = ?plugin.namespace(), %error, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

async fn reconcile(plugin: Arc<EventPlugin>, context: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = plugin.namespace().unwrap_or_default();
    let api: Api<EventPlugin> = Api::namespaced(context.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, plugin, |event| async {
        match event {
            Finalized::Apply(plugin) => apply(&plugin, &context).await,
            Finalized::Cleanup(plugin) => cleanup(&plugin, &context).await,
        }
    })
    .await;
    context.metrics.reconciled(started.elapsed());
    result.map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

/// The Deployments an EventPlugin targets, or why it targets none.
async fn target_deployments(
    plugin: &EventPlugin,
    context: &Context,
) -> Result<Result<Vec<String>, Problem>, Error> {
    let namespace = plugin.namespace().unwrap_or_default();
    match (&plugin.spec.target.deployment, &plugin.spec.target.selector) {
        (Some(name), None) => Ok(Ok(vec![name.clone()])),
        (None, Some(selector)) => {
            if let Some(bad) = selector
                .match_expressions
                .iter()
                .flatten()
                .find(|e| !SELECTOR_OPERATORS.contains(&e.operator.as_str()))
            {
                return Ok(Err(Problem::new(
                    "InvalidTarget",
                    format!(
                        "spec.target.selector: operator {:?} (key {}) is not In, NotIn, Exists or DoesNotExist",
                        bad.operator, bad.key
                    ),
                )));
            }
            let deployments: Api<Deployment> = Api::namespaced(context.client.clone(), &namespace);
            let list = deployments
                .list(&ListParams::default().labels(&selector_query(selector)))
                .await?;
            let names: Vec<String> = list.items.iter().map(ResourceExt::name_any).collect();
            if names.is_empty() {
                return Ok(Err(Problem::new(
                    "TargetNotFound",
                    format!("no Deployment in {namespace} matches spec.target.selector"),
                )));
            }
            Ok(Ok(names))
        }
        _ => Ok(Err(Problem::new(
            "InvalidTarget",
            "spec.target needs exactly one of deployment and selector",
        ))),
    }
}

async fn apply(plugin: &EventPlugin, context: &Context) -> Result<Action, Error> {
    let name = plugin.name_any();
    let namespace = plugin.namespace().unwrap_or_default();
    let mut target_problem = None;
    let mut outcomes = Vec::new();
    let current = target_deployments(plugin, context).await?;
    // Targets it had and has no more: reconciled so that the plugin leaves their chains (and the
    // last one leaving takes the injection away).
    // Only once the new target is valid: an invalid edit leaves the plugin where it runs, so a
    // typo cannot take a redactor out of a chain.
    // A former target that cannot be reconciled now (its Deployment is changing) does not hold
    // the plugin back from its new one: its error is returned after, and the retry leaves it.
    let mut former_failed = None;
    if let Ok(now) = &current {
        for former in plugin.status.iter().flat_map(|s| s.targets.iter()) {
            if !now.contains(&former.deployment)
                && let Err(e) = reconcile_target(&namespace, &former.deployment, context).await
            {
                former_failed = Some(e);
            }
        }
    }
    match current {
        Err(problem) => target_problem = Some(problem),
        Ok(deployments) => {
            for deployment in deployments {
                match reconcile_target(&namespace, &deployment, context).await? {
                    TargetResult::Missing(problem) => target_problem = Some(problem),
                    TargetResult::Reconciled(outcome, mut plugins) => {
                        if let Some(at) = plugins.remove(&name) {
                            outcomes.push((outcome, at));
                        }
                    }
                }
            }
        }
    }
    if let Some(e) = former_failed {
        // The status keeps the former target until it is left, so the retry reconciles it.
        return Err(e);
    }
    let status = conditions::status(
        &name,
        plugin.metadata.generation,
        &outcomes,
        target_problem,
        plugin.status.as_ref(),
    );
    // Ready and on the operator's sidecar image: looked at less often.
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True")
        && !status
            .conditions
            .iter()
            .any(|c| c.type_ == "SidecarOutdated" && c.status == "True");
    let unchanged = plugin
        .status
        .as_ref()
        .is_some_and(|previous| conditions::same(previous, &status));
    if !unchanged {
        publish_changes(plugin, &status, context).await;
        let api: Api<EventPlugin> = Api::namespaced(context.client.clone(), &namespace);
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": with_nulls(&status)?})),
        )
        .await?;
    }
    let interval = context.settings.status_interval.get();
    Ok(Action::requeue(if ready { interval * 6 } else { interval }))
}

/// The status as a merge patch body in which every field it leaves out is `null`, so a field that
/// no longer applies (a digest, a target) is cleared rather than kept.
fn with_nulls(status: &crate::crd::EventPluginStatus) -> Result<Value, Error> {
    let mut value = serde_json::to_value(status)
        .map_err(|e| Error::Internal(format!("serializing a status: {e}")))?;
    if let Some(object) = value.as_object_mut() {
        for field in [
            "observedGeneration",
            "resolvedDigest",
            "shortDigest",
            "target",
            "running",
            "conditions",
            "targets",
        ] {
            object.entry(field).or_insert(Value::Null);
        }
    }
    Ok(value)
}

/// Kubernetes Events for the conditions that changed.
async fn publish_changes(
    plugin: &EventPlugin,
    status: &crate::crd::EventPluginStatus,
    context: &Context,
) {
    let previous = plugin.status.as_ref();
    for condition in &status.conditions {
        if !["Ready", "ModuleResolved", "Injected", "Degraded"].contains(&condition.type_.as_str())
        {
            continue;
        }
        let before = previous
            .and_then(|p| p.conditions.iter().find(|c| c.type_ == condition.type_))
            .map(|c| (c.status.as_str(), c.reason.as_str()));
        if before == Some((condition.status.as_str(), condition.reason.as_str())) {
            continue;
        }
        let good = (condition.status == "True") != (condition.type_ == "Degraded");
        let event = KubeEvent {
            type_: if good {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: condition.reason.chars().take(128).collect(),
            note: Some(
                format!(
                    "{}={}: {}",
                    condition.type_, condition.status, condition.message
                )
                .chars()
                .take(1000)
                .collect(),
            ),
            action: condition.type_.clone(),
            secondary: None,
        };
        if let Err(error) = context
            .recorder
            .publish(&event, &plugin.object_ref(&()))
            .await
        {
            tracing::warn!(%error, "cannot publish an event");
        }
    }
}

async fn cleanup(plugin: &EventPlugin, context: &Context) -> Result<Action, Error> {
    let namespace = plugin.namespace().unwrap_or_default();
    let mut deployments = target_deployments(plugin, context)
        .await?
        .unwrap_or_default();
    for former in plugin.status.iter().flat_map(|s| s.targets.iter()) {
        if !deployments.contains(&former.deployment) {
            deployments.push(former.deployment.clone());
        }
    }
    for deployment in deployments {
        // The finalizer stays while the plugin is in the config its target's sidecars are given:
        // a target whose new config cannot be made keeps running the old one.
        if let TargetResult::Reconciled(outcome, _) =
            reconcile_target(&namespace, &deployment, context).await?
        {
            match &outcome.injected {
                Err(problem) if outcome.chain.contains(&plugin.name_any()) => {
                    return Err(Error::CleanupBlocked(format!(
                        "{} cannot leave Deployment {deployment}'s chain yet: {}",
                        plugin.name_any(),
                        problem.message
                    )));
                }
                _ => {}
            }
        }
    }
    if let Some(uid) = plugin.uid() {
        context.resolver.forget(&uid);
    }
    Ok(Action::await_change())
}

/// What reconciling one target gave.
#[derive(Clone)]
enum TargetResult {
    /// The Deployment does not exist.
    Missing(Problem),
    /// The target's outcome and, by EventPlugin name, what each plugin is there.
    Reconciled(TargetOutcome, HashMap<String, PluginAtTarget>),
}

/// A plugin of a target with its module and config, once found.
struct Member {
    plugin: Arc<EventPlugin>,
    at: PluginAtTarget,
    module: Option<(String, Arc<Vec<u8>>)>,
    config: Option<Value>,
}

/// The sidecar's admin port must be free in the target's pods: another container that declares it
/// would make the sidecar fail to listen. Said before anything of the target is written.
fn admin_port_free(deployment: &Deployment, port: u16) -> Result<(), Problem> {
    let Some(spec) = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
    else {
        return Ok(());
    };
    let taken_by = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter(|c| c.name != inject::SIDECAR_CONTAINER)
        .find(|c| {
            c.ports
                .iter()
                .flatten()
                .any(|p| p.container_port == i32::from(port))
        });
    match taken_by {
        Some(container) => Err(Problem::new(
            "AdminPortTaken",
            format!(
                "container {} of Deployment {} declares port {port}, the sidecar's admin port: set another one (chart value sidecar.adminPort, settings sidecarDefaults.adminPort)",
                container.name,
                deployment.name_any()
            ),
        )),
        None => Ok(()),
    }
}

/// The admin port of `pod`'s sidecar container (an ordinary or a native sidecar).
fn admin_port_of(pod: &Pod) -> Option<u16> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .filter(|c| c.name == inject::SIDECAR_CONTAINER)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(render::ADMIN_PORT_NAME))
        .and_then(|p| u16::try_from(p.container_port).ok())
}

/// The sidecar's CPU request for a target (its EventPluginTarget's, else the settings' default,
/// else the built-in one) above the settings' CPU limit would make a pod the API server refuses:
/// said before anything of the target is written.
fn sidecar_cpu_within_limit(
    target: Option<&EventPluginTargetSpec>,
    context: &Context,
) -> Result<(), Problem> {
    let Some(limit) = context.settings.sidecar_defaults.cpu_limit.as_deref() else {
        return Ok(());
    };
    let request = target
        .and_then(|t| t.sidecar.as_ref()?.cpu.as_deref())
        .unwrap_or(crate::settings::DEFAULT_SIDECAR_CPU);
    match crate::settings::cpu_above_limit(request, limit) {
        Ok(false) => Ok(()),
        Ok(true) => Err(Problem::new(
            "SidecarCpuAboveLimit",
            format!(
                "the sidecar's CPU request {request} (the EventPluginTarget's sidecar.cpu) is above the sidecar CPU limit {limit} of the operator's settings (sidecarDefaults.cpuLimit; chart value sidecar.resources.cpuLimit): lower the request or raise the limit"
            ),
        )),
        Err(message) => Err(Problem::new(
            "InvalidTarget",
            format!("the EventPluginTarget's sidecar.cpu: {message}"),
        )),
    }
}

/// Reconciles the target `namespace/name`, or answers with the result of a reconcile of it that
/// began after this request ([`Coalescer::run`]).
async fn reconcile_target(
    namespace: &str,
    name: &str,
    context: &Context,
) -> Result<TargetResult, Error> {
    let (result, answer) = context
        .targets
        .run(format!("{namespace}/{name}"), || {
            reconcile_target_now(namespace, name, context)
        })
        .await?;
    context.metrics.target_reconciled(answer);
    Ok(result)
}

async fn reconcile_target_now(
    namespace: &str,
    name: &str,
    context: &Context,
) -> Result<TargetResult, Error> {
    let client = &context.client;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let Some(deployment) = deployments.get_opt(name).await? else {
        // No Deployment, no pods to keep behind a sidecar: a configuration left for it would
        // refuse the pods of whatever takes the name next.
        drop_webhook_scope(namespace, name, context).await?;
        return Ok(TargetResult::Missing(Problem::new(
            "TargetNotFound",
            format!(
                "Deployment {namespace}/{name} does not exist (yet): the sidecar is injected once it does"
            ),
        )));
    };
    let deployment = resume_if_left_paused(&deployments, deployment).await?;
    let labels = deployment.labels().clone();
    let mut members: Vec<Arc<EventPlugin>> = context
        .stores
        .get(namespace)
        .map(|store| store.state())
        .unwrap_or_default()
        .into_iter()
        .filter(|p| {
            p.metadata.deletion_timestamp.is_none()
                && (targets(&p.spec, name, &labels)
                    || (!target_is_valid(&p.spec)
                        && p.status
                            .iter()
                            .flat_map(|s| s.targets.iter())
                            .any(|t| t.deployment == name)))
        })
        .collect();
    members.sort_by_key(|a| (a.spec.priority, a.name_any()));
    if members.is_empty() {
        remove_injection(namespace, name, context).await?;
        return Ok(TargetResult::Reconciled(
            TargetOutcome {
                deployment: name.into(),
                injected: Err(Problem::new(
                    "Removed",
                    "no EventPlugin targets this Deployment",
                )),
                revision: 0,
                stopped: None,
                survives_pod_replacement: false,
                chain: Vec::new(),
                pods: Vec::new(),
                outdated: None,
            },
            HashMap::new(),
        ));
    }
    let target_settings = context.settings.sidecar_defaults.apply(
        Api::<EventPluginTarget>::namespaced(client.clone(), namespace)
            .get_opt(name)
            .await?
            .map(|t| t.spec),
    );
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let owned_secret = secrets.get_opt(&inject::secret_name(name)).await?;
    let running_config = owned_secret
        .as_ref()
        .and_then(|s| secret_text(s, inject::CONFIG_KEY))
        .and_then(|text| SidecarConfig::parse(&text).ok());
    let mut running_chunks: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut current_maps: Vec<Option<BTreeMap<String, Vec<u8>>>> = Vec::new();
    // The module ConfigMaps, read side by side. (One LIST by label would be one request, but the
    // API server filters a label LIST by reading every ConfigMap of the namespace: with 5,000
    // unrelated ones it made each reconcile four times slower.)
    let mut owned_maps: HashMap<String, ConfigMap> =
        futures::future::try_join_all((0..modules::MODULE_CONFIG_MAPS).map(|index| {
            let config_maps = config_maps.clone();
            async move {
                config_maps
                    .get_opt(&inject::modules_config_map_name(name, index))
                    .await
            }
        }))
        .await?
        .into_iter()
        .flatten()
        .map(|map| (map.name_any(), map))
        .collect();
    for index in 0..modules::MODULE_CONFIG_MAPS {
        let map = owned_maps
            .remove(&inject::modules_config_map_name(name, index))
            // Only a map owned by this Deployment counts as current: one left from a Deployment
            // of the same name is written again (with the new owner).
            .filter(|map| owned_by(map.owner_references(), &deployment))
            .map(|map| {
                map.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0))
                    .collect::<BTreeMap<_, _>>()
            });
        for (key, bytes) in map.iter().flatten() {
            running_chunks.insert(key.clone(), bytes.clone());
        }
        current_maps.push(map);
    }

    // Modules and configs, plugin by plugin.
    let mut found = Vec::new();
    for plugin in members {
        let member = gather(
            plugin,
            namespace,
            context,
            running_config.as_ref(),
            &running_chunks,
        )
        .await?;
        found.push(member);
    }
    let container = found
        .first()
        .and_then(|m| m.plugin.spec.target.container.clone());
    let conflict = found
        .iter()
        .any(|m| m.plugin.spec.target.container != container);

    let mut outcome = TargetOutcome {
        deployment: name.into(),
        injected: Ok(()),
        revision: running_config.as_ref().map_or(0, |c| c.revision),
        stopped: None,
        survives_pod_replacement: false,
        chain: running_config
            .as_ref()
            .map(|c| c.plugins.iter().map(|p| p.name.clone()).collect())
            .unwrap_or_default(),
        pods: Vec::new(),
        outdated: None,
    };
    let upstream = if conflict {
        Err(Problem::new(
            "ConflictingTargetSettings",
            format!(
                "EventPlugins of {name} name different containers in spec.target.container: make them agree"
            ),
        ))
    } else {
        upstream_of(
            &deployment,
            container.as_deref(),
            target_settings.as_ref(),
            &config_maps,
        )
        .await?
    };
    let plugin_results = |found: &[Member]| -> HashMap<String, PluginAtTarget> {
        found
            .iter()
            .map(|m| (m.plugin.name_any(), m.at.clone()))
            .collect()
    };
    let upstream = match upstream.and_then(|upstream| {
        sidecar_cpu_within_limit(target_settings.as_ref(), context)?;
        admin_port_free(&deployment, context.settings.sidecar_defaults.admin_port())?;
        Ok(upstream)
    }) {
        Ok(upstream) => upstream,
        Err(problem) => {
            outcome.injected = Err(problem);
            outcome.pods = pod_reports(&deployment, owned_secret.as_ref(), context).await?;
            return Ok(TargetResult::Reconciled(outcome, plugin_results(&found)));
        }
    };
    let container_name = match discovery::event_handler_container(&deployment, container.as_deref())
    {
        Ok(c) => c.name.clone(),
        Err(e) => {
            outcome.injected = Err(Problem::new(e.reason(), e.to_string()));
            return Ok(TargetResult::Reconciled(outcome, plugin_results(&found)));
        }
    };

    // The webhook's scope first, as soon as event-handler's container and upstream are known:
    // from here on no pod of the target is created without the sidecar and the redirect, and a
    // restarted operator's CA reaches the configuration even when the rest cannot be applied.
    if let Some(hook) = &context.webhook {
        let scope = webhook::Scope {
            container: container_name.clone(),
            sessions: upstream.session_url.is_some(),
        };
        hook.scopes.set(namespace, name, scope.clone());
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .patch(
                namespace,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(webhook::namespace_label(namespace)),
            )
            .await?;
        if let Some(selector) = deployment.spec.as_ref().map(|s| &s.selector) {
            let body = webhook::configuration(
                namespace,
                name,
                selector,
                &hook.client,
                &hook.ca_pem,
                &scope,
            );
            Api::<ValidatingWebhookConfiguration>::all(client.clone())
                .patch(
                    &webhook::configuration_name(namespace, name),
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(body),
                )
                .await?;
        }
    }
    // Render, with a revision that grows only when the rendering changes.
    let names: Vec<String> = found.iter().map(|m| m.plugin.name_any()).collect();
    let inputs: Vec<PluginInput<'_>> = found
        .iter()
        .zip(&names)
        .filter_map(|(m, name)| {
            m.module.as_ref().map(|(digest, _)| PluginInput {
                name,
                spec: &m.plugin.spec,
                digest,
                config: m.config.clone(),
            })
        })
        .collect();
    let unresolved_guard = found
        .iter()
        .filter(|m| m.module.is_none())
        .find(|m| {
            m.plugin.spec.mode == Mode::Enforce
                && m.plugin.spec.failure_policy == FailurePolicy::FailClosed
        })
        .map(|m| {
            format!(
                "FailClosed plugin {} has no module to run: {}",
                m.plugin.name_any(),
                m.at.module
                    .as_ref()
                    .err()
                    .map_or("", |p| p.message.as_str())
            )
        });
    // The config apiVersion every running sidecar reads (an older sidecar image reads an older
    // one), so a config is never rendered that a running sidecar would refuse.
    let pods_before = pod_reports(&deployment, owned_secret.as_ref(), context).await?;
    let template = pod_spec_of(&deployment);
    let template_image = inject::sidecar_of(&template).and_then(|c| c.image.clone());
    let key = format!("{namespace}/{name}");
    let choice = context.rollouts.choose(
        crate::upgrade::Target {
            key: &key,
            template_image: template_image.as_deref(),
            rolled_out: rolled_out(&deployment),
            opted_in: deployment
                .annotations()
                .get(crate::upgrade::UPGRADE_ANNOTATION)
                .is_some_and(|v| v == "true"),
            failed: rollout_failed(&deployment),
        },
        &context.settings.sidecar_image,
        context.settings.sidecar_upgrade,
    );
    outcome.outdated = choice.outdated.clone();
    let sidecar_image = choice.image.clone();
    let own_image = sidecar_image == context.settings.sidecar_image;
    // The operator's own image follows its config through the API (with its own token), unless
    // the settings say it is an older release that reads only v1alpha1.
    let follows_api = own_image
        && context.settings.sidecar_config_api_version.as_deref()
            != Some(eventplug_contract::API_VERSION_V1ALPHA1);
    // The version every running sidecar reads: their reports, or with none (no pod answers yet)
    // what is known of the image: the operator's own reads what this operator writes (or
    // `sidecarConfigApiVersion`), an older one what was rendered for it. While a pod says
    // nothing (one of an older ReplicaSet during a rollout, one not Ready) nothing newer than the
    // running config is rendered: that pod must still read it.
    let mut reads: Vec<Vec<&str>> = pods_before
        .iter()
        .filter_map(|p| p.status.as_ref().ok())
        .map(|r| r.reads())
        .collect();
    let rendered_before = running_config
        .as_ref()
        .and_then(|c| render::known_api_version(&c.api_version));
    let unheard = pods_before.iter().any(|p| p.status.is_err());
    if unheard && template_image.is_some() {
        reads.extend(rendered_before.map(|v| vec![v]));
    }
    let unreported = if own_image {
        context
            .settings
            .sidecar_config_api_version
            .as_deref()
            .and_then(render::known_api_version)
            .unwrap_or(eventplug_contract::API_VERSION)
    } else {
        rendered_before.unwrap_or_else(render::oldest_api_version)
    };
    let api_version = render::api_version_for(&reads, unreported);
    let render_at = |revision: u64| -> Result<(render::Rendered, String), Problem> {
        let mut rendered = render::render(
            revision,
            namespace,
            &upstream,
            target_settings.as_ref(),
            &inputs,
            &context.settings.policy,
        )
        .map_err(|message| Problem::new("RenderFailed", message))?;
        if rendered.config.stop.is_none() {
            rendered.config.stop = unresolved_guard.clone();
        }
        render::set_api_version(
            &mut rendered.config,
            api_version,
            follows_api,
            namespace,
            name,
        );
        let text = rendered
            .config
            .to_yaml()
            .map_err(|e| Problem::new("RenderFailed", e))?;
        Ok((rendered, text))
    };
    let current_revision = owned_secret
        .as_ref()
        .and_then(|s| s.annotations().get(REVISION_ANNOTATION))
        .and_then(|r| r.parse::<u64>().ok())
        .unwrap_or(0);
    let current_text = owned_secret
        .as_ref()
        .and_then(|s| secret_text(s, inject::CONFIG_KEY));
    let rendered = match render_at(current_revision) {
        Ok((rendered, text)) if current_text.as_deref() == Some(text.as_str()) => {
            Ok((rendered, text))
        }
        Ok(_) => render_at(next_revision(current_revision)),
        Err(problem) => Err(problem),
    };
    let (rendered, config_text) = match rendered {
        Ok(r) => r,
        Err(problem) => {
            // The running config stays; the pods still say what they run.
            outcome.injected = Err(problem);
            outcome.pods = pod_reports(&deployment, owned_secret.as_ref(), context).await?;
            return Ok(TargetResult::Reconciled(outcome, plugin_results(&found)));
        }
    };
    for (plugin, refusal) in &rendered.refused {
        if let Some(m) = found.iter_mut().find(|m| &m.plugin.name_any() == plugin) {
            m.at.refused = Some(Problem::new(refusal.reason, refusal.message.clone()));
        }
    }
    outcome.revision = rendered.config.revision;
    outcome.chain = rendered
        .config
        .plugins
        .iter()
        .map(|p| p.name.clone())
        .collect();
    outcome.stopped = rendered.config.stop.clone();

    // The owned objects, then the Deployment.
    let owner = OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: name.into(),
        uid: deployment.uid().unwrap_or_default(),
        controller: Some(false),
        block_owner_deletion: Some(false),
    };
    let wanted: Vec<(String, Vec<u8>)> = found
        .iter()
        .filter(|m| m.at.refused.is_none())
        .filter_map(|m| m.module.as_ref().map(|(d, b)| (d.clone(), b.to_vec())))
        .collect();
    // Modules a pod still runs stay beside the new ones until no pod runs them, so a sidecar that
    // restarts before it has the new config still finds its module.
    let still_running = pods_before
        .iter()
        .filter_map(|p| p.status.as_ref().ok())
        .flat_map(|r| r.plugins.iter().filter_map(|p| p.running_digest.clone()))
        .filter(|digest| wanted.iter().all(|(d, _)| d != digest))
        .filter_map(|digest| {
            let bytes = joined_chunks(&running_chunks, &digest)?;
            Some((digest, bytes))
        });
    let mut with_old = wanted.clone();
    with_old.extend(still_running);
    let pack = |modules: &[(String, Vec<u8>)]| {
        let refs: Vec<(&str, &[u8])> = modules
            .iter()
            .map(|(d, b)| (d.as_str(), b.as_slice()))
            .collect();
        modules::pack(
            &refs,
            modules::MODULE_CONFIG_MAPS,
            modules::CONFIG_MAP_BYTES,
        )
    };
    let packed = match pack(&with_old).or_else(|_| pack(&wanted)) {
        Ok(packed) => packed,
        Err(message) => {
            outcome.injected = Err(Problem::new("ModulesTooLarge", message));
            return Ok(TargetResult::Reconciled(outcome, plugin_results(&found)));
        }
    };
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    for (index, chunks) in packed.into_iter().enumerate() {
        if current_maps.get(index).and_then(Option::as_ref) == Some(&chunks) {
            continue;
        }
        let map = ConfigMap {
            metadata: owned_metadata(&inject::modules_config_map_name(name, index), &owner, None),
            binary_data: Some(
                chunks
                    .into_iter()
                    .map(|(k, v)| (k, ByteString(v)))
                    .collect(),
            ),
            ..ConfigMap::default()
        };
        let body = typed_body(&map, "v1", "ConfigMap")?;
        config_maps
            .patch(
                &inject::modules_config_map_name(name, index),
                &apply,
                &Patch::Apply(body),
            )
            .await?;
    }
    let token = owned_secret
        .as_ref()
        .and_then(|s| secret_text(s, inject::STATUS_TOKEN_KEY))
        .filter(|t| t.len() >= 32)
        .map_or_else(random_token, Ok)
        .map_err(Error::Internal)?;
    let secret = Secret {
        metadata: owned_metadata(
            &inject::secret_name(name),
            &owner,
            Some(rendered.config.revision.to_string()),
        ),
        data: Some(BTreeMap::from([
            (
                inject::CONFIG_KEY.to_string(),
                ByteString(config_text.into_bytes()),
            ),
            (
                inject::STATUS_TOKEN_KEY.to_string(),
                ByteString(token.clone().into_bytes()),
            ),
        ])),
        ..Secret::default()
    };
    let unchanged = owned_secret.as_ref().is_some_and(|current| {
        owned_by(current.owner_references(), &deployment)
            && current.data == secret.data
            && current.annotations().get(REVISION_ANNOTATION)
                == Some(&rendered.config.revision.to_string())
    });
    let has_token_volume = template
        .volumes
        .iter()
        .flatten()
        .any(|v| v.name == inject::API_TOKEN_VOLUME);
    if follows_api && (!unchanged || !has_token_volume) {
        // The sidecar's identity, which reads the Secret: when its token first goes into the
        // pod, and with every new config (a Role someone removed comes back with the next
        // change).
        let mut metadata = serde_json::to_value(owned_metadata("", &owner, None))
            .map_err(|e| Error::Internal(e.to_string()))?;
        if let Some(m) = metadata.as_object_mut() {
            m.remove("name");
        }
        identity::apply(client, namespace, name, &metadata, FIELD_MANAGER).await?;
    }
    if !unchanged {
        let body = typed_body(&secret, "v1", "Secret")?;
        secrets
            .patch(&inject::secret_name(name), &apply, &Patch::Apply(body))
            .await?;
    }

    let plan = redirect::plan(&deployment, &container_name, &upstream, LISTEN_PORT);
    let redirect_args = match &plan {
        Redirect::Args(args) => Some(args.as_slice()),
        Redirect::Refused { .. } => None,
    };
    let storage_without_volume = upstream
        .storage
        .as_deref()
        .and_then(|s| inject::storage_without_volume(&template, &container_name, s));
    outcome.survives_pod_replacement = upstream
        .storage
        .as_deref()
        .is_some_and(|s| on_persistent_volume(&template, &container_name, s));
    let sidecar = target_settings.as_ref().and_then(|t| t.sidecar.as_ref());
    let injection = Injection {
        deployment: name,
        container: &container_name,
        image: &sidecar_image,
        redirect_args,
        upstream: &upstream,
        memory_limit: inject::memory_limit(rendered.memory_limit),
        cpu_request: sidecar.and_then(|s| s.cpu.as_deref()),
        cpu_limit: context.settings.sidecar_defaults.cpu_limit.as_deref(),
        admin_port: context.settings.sidecar_defaults.admin_port(),
        storage_without_volume,
        native_sidecar: context.native_sidecars,
        api_token: follows_api,
    };
    let applied = match apply_injection(&deployments, &deployment, inject::desired(&injection))
        .await
    {
        Ok(applied) => applied,
        Err(e) if is_stale_write(&e) => {
            return Err(Error::Stale(format!(
                "Deployment {namespace}/{name} changed while its injection was computed"
            )));
        }
        Err(kube::Error::Api(status)) if status.code == 409 => {
            outcome.injected = Err(Problem::new(
                "ApplyConflict",
                format!(
                    "another field manager owns fields the sidecar needs in Deployment {name}: {}",
                    status.message
                ),
            ));
            outcome.pods = pod_reports(&deployment, Some(&secret), context).await?;
            return Ok(TargetResult::Reconciled(outcome, plugin_results(&found)));
        }
        Err(e) => return Err(e.into()),
    };
    if let Redirect::Refused { extra_args, reason } = &plan {
        let spec = pod_spec_of(&applied);
        if inject::check_pod(&spec, &container_name, upstream.session_url.is_some()).is_err() {
            outcome.injected = Err(Problem::new(
                "RedirectNeedsChartValues",
                format!(
                    "{reason}; the sidecar is in place but event-handler is not sent to it: add to the chart's values eventHandler extraArgs: [{}]",
                    extra_args.join(", ")
                ),
            ));
        }
    }
    if context.webhook.is_some() && outcome.injected.is_ok() {
        replace_unfiltered_pods(
            &applied,
            &container_name,
            upstream.session_url.is_some(),
            context,
        )
        .await?;
    }
    outcome.pods = pod_reports(&applied, Some(&secret), context).await?;
    Ok(TargetResult::Reconciled(outcome, plugin_results(&found)))
}

/// Evicts the target's pods that run without the sidecar or the redirect (pods from before the
/// first injection, or of a template someone put back): a rolling update would keep them serving
/// until the injected pods are Ready, which never happens while a FailClosed plugin cannot load.
/// The webhook refuses their replacements, so only injected pods take their place.
async fn replace_unfiltered_pods(
    deployment: &Deployment,
    container: &str,
    sessions: bool,
    context: &Context,
) -> Result<(), Error> {
    let namespace = deployment.namespace().unwrap_or_default();
    let Some(selector) = deployment.spec.as_ref().map(|s| &s.selector) else {
        return Ok(());
    };
    // Only this Deployment's pods (through its ReplicaSets), never another workload's that
    // shares the labels.
    let query = selector_query(selector);
    let uid = deployment.uid();
    let replica_sets: Api<ReplicaSet> = Api::namespaced(context.client.clone(), &namespace);
    let owned_sets: Vec<String> = replica_sets
        .list(&ListParams::default().labels(&query))
        .await?
        .items
        .iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .map(ResourceExt::name_any)
        .collect();
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    let list = pods.list(&ListParams::default().labels(&query)).await?;
    for pod in list.items {
        let ours = pod
            .owner_references()
            .iter()
            .any(|o| o.kind == "ReplicaSet" && owned_sets.contains(&o.name));
        if pod.metadata.deletion_timestamp.is_some() || !ours {
            continue;
        }
        let spec = pod.spec.clone().unwrap_or_default();
        if let Err(why) = inject::check_pod(&spec, container, sessions) {
            tracing::info!(pod = %pod.name_any(), %why, "evicting a pod of a target that runs without the sidecar");
            // An eviction, so a PodDisruptionBudget is respected (429: tried again next time).
            match pods
                .evict(&pod.name_any(), &kube::api::EvictParams::default())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.code == 404 => continue,
                Err(kube::Error::Api(status)) if status.code == 429 => {
                    tracing::info!(pod = %pod.name_any(), "eviction refused by a disruption budget; tried again later");
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            let event = KubeEvent {
                type_: EventType::Warning,
                reason: "UnfilteredPodEvicted".into(),
                note: Some(format!("{}: {why}", pod.name_any())),
                action: "Delete".into(),
                secondary: None,
            };
            if let Err(error) = context
                .recorder
                .publish(&event, &deployment.object_ref(&()))
                .await
            {
                tracing::warn!(%error, "cannot publish an event");
            }
        }
    }
    Ok(())
}

/// Resolves one plugin's module and config.
async fn gather(
    plugin: Arc<EventPlugin>,
    namespace: &str,
    context: &Context,
    running_config: Option<&SidecarConfig>,
    running_chunks: &BTreeMap<String, Vec<u8>>,
) -> Result<Member, Error> {
    let secrets: Api<Secret> = Api::namespaced(context.client.clone(), namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(context.client.clone(), namespace);
    let key = ResolveKey {
        uid: plugin.uid().unwrap_or_default(),
        generation: plugin.metadata.generation.unwrap_or_default(),
        refresh: plugin.annotations().get(REFRESH_ANNOTATION).cloned(),
        reference: plugin.spec.module.reference.clone(),
    };
    let pull_secret = match &plugin.spec.module.pull_secret {
        None => Ok(None),
        Some(secret) => match secrets.get_opt(&secret.name).await? {
            Some(s) => secret_text(&s, ".dockerconfigjson")
                .map(|text| Some((secret.name.clone(), text)))
                .ok_or_else(|| Problem::new("PullSecretUnreadable", format!("pull Secret {} has no .dockerconfigjson key: make it a kubernetes.io/dockerconfigjson Secret", secret.name))),
            None => Err(Problem::new("PullSecretNotFound", format!("pull Secret {} does not exist", secret.name))),
        },
    };
    // The policy first: a registry it does not allow is never contacted.
    if let Err(refusal) = context.settings.policy.check(namespace, &plugin.spec) {
        let problem = Problem::new(refusal.reason, refusal.message);
        return Ok(Member {
            plugin,
            at: PluginAtTarget {
                module: Err(problem.clone()),
                refused: Some(problem),
            },
            module: None,
            config: None,
        });
    }
    let resolved = match pull_secret {
        Err(problem) => Err((problem, false)),
        Ok(pull) => context
            .resolver
            .resolve(&key, pull.as_ref().map(|(n, t)| (n.as_str(), t.as_str())))
            .await
            .map_err(|e| (Problem::new(e.reason, e.message), e.transient)),
    };
    let (module, module_result) = match resolved {
        Ok(r) => (
            Some((r.module_digest.clone(), r.module.clone())),
            Ok((r.manifest_digest.clone(), r.module_digest.clone())),
        ),
        Err((problem, transient)) => {
            // The registry is down: keep what runs, as long as the spec did not change.
            let kept = transient
                .then(|| running_module(&plugin, running_config, running_chunks))
                .flatten();
            match (
                kept,
                plugin
                    .status
                    .as_ref()
                    .and_then(|s| s.resolved_digest.clone()),
            ) {
                (Some((digest, bytes)), Some(manifest)) => (
                    Some((digest.clone(), Arc::new(bytes))),
                    Ok((manifest, digest)),
                ),
                _ => (None, Err(problem)),
            }
        }
    };
    let config = match merged_config(&plugin.spec, &secrets, &config_maps).await? {
        Ok(config) => config,
        Err(problem) => {
            return Ok(Member {
                plugin,
                at: PluginAtTarget {
                    module: module_result,
                    refused: Some(problem),
                },
                module: None,
                config: None,
            });
        }
    };
    Ok(Member {
        plugin,
        at: PluginAtTarget {
            module: module_result,
            refused: None,
        },
        module,
        config,
    })
}

/// The module a plugin runs now, from the running config and the module ConfigMaps, when its spec
/// did not change since (a transient registry failure must not stop a running plugin).
fn running_module(
    plugin: &EventPlugin,
    running: Option<&SidecarConfig>,
    chunks: &BTreeMap<String, Vec<u8>>,
) -> Option<(String, Vec<u8>)> {
    let status = plugin.status.as_ref()?;
    if status.observed_generation != plugin.metadata.generation {
        return None;
    }
    let settings = running?
        .plugins
        .iter()
        .find(|p| p.name == plugin.name_any())?;
    let digest = settings.digest.clone()?;
    let bytes = joined_chunks(chunks, &digest)?;
    Some((digest, bytes))
}

/// The module of `digest` joined from its chunks, when they are all there and match it.
fn joined_chunks(chunks: &BTreeMap<String, Vec<u8>>, digest: &str) -> Option<Vec<u8>> {
    let mut bytes = Vec::new();
    for index in 0.. {
        match chunks.get(&modules::chunk_key(digest, index)) {
            Some(chunk) => bytes.extend_from_slice(chunk),
            None if index == 0 => return None,
            None => break,
        }
    }
    (eventplug_oci::sha256_digest(&bytes) == digest).then_some(bytes)
}

/// The revision after `current`: one more, and at least the time in seconds, so that revisions
/// keep growing even when the Secret recording them was lost (a sidecar never applies a lower
/// one).
fn next_revision(current: u64) -> u64 {
    let now = jiff::Timestamp::now().as_second().max(0).unsigned_abs();
    current.saturating_add(1).max(now)
}

/// `config` with `configFrom` merged in, or why a source cannot be read.
async fn merged_config(
    spec: &EventPluginSpec,
    secrets: &Api<Secret>,
    config_maps: &Api<ConfigMap>,
) -> Result<Result<Option<Value>, Problem>, Error> {
    let mut config = spec.config.clone();
    for source in &spec.config_from {
        let value = match source_value(source, secrets, config_maps).await? {
            Ok(value) => value,
            Err(problem) => return Ok(Err(problem)),
        };
        let object = config.get_or_insert_with(|| json!({}));
        let Some(object) = object.as_object_mut() else {
            return Ok(Err(Problem::new(
                "InvalidConfig",
                "spec.config must be an object when configFrom is used",
            )));
        };
        match &source.field {
            Some(field) => {
                object.insert(field.clone(), Value::String(value));
            }
            None => {
                let parsed: Value = match serde_json::from_str(&value) {
                    Ok(v) => v,
                    Err(_) => match eventplug_contract::from_yaml::<Value>(&value) {
                        Ok(v) => v,
                        Err(e) => {
                            return Ok(Err(Problem::new(
                                "InvalidConfig",
                                format!(
                                    "a configFrom value without field must be a JSON or YAML object: {e}"
                                ),
                            )));
                        }
                    },
                };
                let Some(fields) = parsed.as_object() else {
                    return Ok(Err(Problem::new(
                        "InvalidConfig",
                        "a configFrom value without field must be a JSON or YAML object",
                    )));
                };
                object.extend(fields.clone());
            }
        }
    }
    Ok(Ok(config))
}

async fn source_value(
    source: &ConfigSource,
    secrets: &Api<Secret>,
    config_maps: &Api<ConfigMap>,
) -> Result<Result<String, Problem>, Error> {
    match (&source.secret_key_ref, &source.config_map_key_ref) {
        (Some(r), None) => Ok(match secrets.get_opt(&r.name).await? {
            None => Err(Problem::new(
                "ConfigSourceNotFound",
                format!("Secret {} (configFrom) does not exist", r.name),
            )),
            Some(s) => secret_text(&s, &r.key).ok_or_else(|| {
                Problem::new(
                    "ConfigSourceNotFound",
                    format!("Secret {} has no key {} (configFrom)", r.name, r.key),
                )
            }),
        }),
        (None, Some(r)) => Ok(match config_maps.get_opt(&r.name).await? {
            None => Err(Problem::new(
                "ConfigSourceNotFound",
                format!("ConfigMap {} (configFrom) does not exist", r.name),
            )),
            Some(m) => m.data.and_then(|d| d.get(&r.key).cloned()).ok_or_else(|| {
                Problem::new(
                    "ConfigSourceNotFound",
                    format!("ConfigMap {} has no key {} (configFrom)", r.name, r.key),
                )
            }),
        }),
        _ => Ok(Err(Problem::new(
            "InvalidConfig",
            "each configFrom entry needs exactly one of secretKeyRef and configMapKeyRef",
        ))),
    }
}

/// event-handler's upstream: the EventPluginTarget's override, else read from the Deployment.
async fn upstream_of(
    deployment: &Deployment,
    container: Option<&str>,
    target: Option<&EventPluginTargetSpec>,
    config_maps: &Api<ConfigMap>,
) -> Result<Result<Upstream, Problem>, Error> {
    let pod = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref());
    let mut maps = BTreeMap::new();
    for volume in pod.and_then(|p| p.volumes.as_deref()).unwrap_or_default() {
        let Some(source) = &volume.config_map else {
            continue;
        };
        if let Some(map) = config_maps.get_opt(&source.name).await? {
            maps.insert(source.name.clone(), map.data.unwrap_or_default());
        }
    }
    if let Some(given) = target.and_then(|t| t.upstream.as_ref()) {
        let found = |value: &str| Found {
            value: value.into(),
            source: Source::Flag,
        };
        let file = |key: &str| {
            given.certificate_secret.as_ref().map(|s| {
                (
                    found(key),
                    SecretFile {
                        secret: s.name.clone(),
                        key: key.into(),
                    },
                )
            })
        };
        let storage = discovery::discover(
            deployment,
            container,
            &maps,
            Some(&format!("http://127.0.0.1:{LISTEN_PORT}")),
        )
        .ok()
        .and_then(|u| u.storage);
        return Ok(Ok(Upstream {
            url: found(&given.audit_url),
            session_url: given.session_url.as_deref().map(found),
            ca: file("ca.crt"),
            cert: file("client.crt"),
            key: file("client.key"),
            config_file: None,
            storage,
        }));
    }
    Ok(discovery::discover(
        deployment,
        container,
        &maps,
        Some(&format!("http://127.0.0.1:{LISTEN_PORT}")),
    )
    .map_err(|e| Problem::new(e.reason(), e.to_string())))
}

/// Whether `storage` is on a PersistentVolumeClaim of `container`.
fn on_persistent_volume(
    pod: &k8s_openapi::api::core::v1::PodSpec,
    container: &str,
    storage: &str,
) -> bool {
    let Some(container) = pod.containers.iter().find(|c| c.name == container) else {
        return false;
    };
    container
        .volume_mounts
        .iter()
        .flatten()
        .filter(|m| std::path::Path::new(storage).starts_with(&m.mount_path))
        .max_by_key(|m| m.mount_path.len())
        .and_then(|m| pod.volumes.iter().flatten().find(|v| v.name == m.name))
        .is_some_and(|v| v.persistent_volume_claim.is_some())
}

/// Whether a Deployment's rollout failed: its `Progressing` condition is False with
/// `ProgressDeadlineExceeded`.
fn rollout_failed(deployment: &Deployment) -> bool {
    deployment
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter().any(|c| {
                c.type_ == "Progressing"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
            })
        })
}

/// Whether a Deployment has rolled out: its controller saw the current spec, and every replica is
/// updated and Ready, with no pod of an older ReplicaSet left.
fn rolled_out(deployment: &Deployment) -> bool {
    let wanted = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    deployment.status.as_ref().is_some_and(|s| {
        s.observed_generation >= deployment.metadata.generation
            && s.updated_replicas.unwrap_or(0) == wanted
            && s.ready_replicas.unwrap_or(0) == wanted
            && s.replicas.unwrap_or(0) == wanted
    })
}

/// The pods of the Deployment's current ReplicaSet, each with its sidecar's `/status`.
async fn pod_reports(
    deployment: &Deployment,
    secret: Option<&Secret>,
    context: &Context,
) -> Result<Vec<PodReport>, Error> {
    let namespace = deployment.namespace().unwrap_or_default();
    let Some(selector) = deployment.spec.as_ref().map(|s| &s.selector) else {
        return Ok(Vec::new());
    };
    let query = selector_query(selector);
    let revision = deployment
        .annotations()
        .get("deployment.kubernetes.io/revision")
        .cloned();
    let uid = deployment.uid();
    let replica_sets: Api<ReplicaSet> = Api::namespaced(context.client.clone(), &namespace);
    let current = replica_sets
        .list(&ListParams::default().labels(&query))
        .await?
        .items
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| Some(&o.uid) == uid.as_ref())
        })
        .find(|rs| rs.annotations().get("deployment.kubernetes.io/revision") == revision.as_ref());
    let hash = current.and_then(|rs| rs.labels().get("pod-template-hash").cloned());
    let token = secret.and_then(|s| secret_text(s, inject::STATUS_TOKEN_KEY));
    let pods: Api<Pod> = Api::namespaced(context.client.clone(), &namespace);
    // Every pod of the Deployment counts: one of an older ReplicaSet (a rollout under way, perhaps
    // without the sidecar) keeps the EventPlugin from being Ready.
    let list = pods.list(&ListParams::default().labels(&query)).await?;
    let mut reports = Vec::new();
    for pod in list.items {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let address = status.and_then(|s| s.pod_ip.clone());
        let current = hash.is_some() && pod.labels().get("pod-template-hash") == hash.as_ref();
        let report = match (&address, &token, ready) {
            _ if !current => {
                Err("a pod of an older ReplicaSet (a rollout is under way)".to_string())
            }
            (_, _, false) => Err("the pod is not Ready".to_string()),
            (None, _, _) => Err("the pod has no IP yet".to_string()),
            (_, None, _) => Err("the status token Secret is missing".to_string()),
            (Some(ip), Some(token), true) => {
                // The port this pod's sidecar was given (a rollout to another one may be under
                // way), else the settings'.
                let port = admin_port_of(&pod)
                    .unwrap_or_else(|| context.settings.sidecar_defaults.admin_port());
                context.status.fetch(&format!("{ip}:{port}"), token).await
            }
        };
        reports.push(PodReport {
            image: pod
                .spec
                .as_ref()
                .and_then(inject::sidecar_of)
                .and_then(|c| c.image.clone()),
            name: pod.name_any(),
            ready,
            status: report,
        });
    }
    Ok(reports)
}

/// Resumes a Deployment the operator paused for a first injection and did not resume (a failed
/// call, a restart in between), before anything else. A sidecar the apply left last is put first
/// before, so the one rollout is to the finished pod; when that fails, it is resumed anyway (a
/// Deployment the operator paused never stays so) and the next apply puts the sidecar first.
async fn resume_if_left_paused(
    api: &Api<Deployment>,
    live: Deployment,
) -> Result<Deployment, kube::Error> {
    if !live.annotations().contains_key(PAUSED_ANNOTATION) {
        return Ok(live);
    }
    let name = live.name_any();
    if let Err(error) = put_sidecar_first(api, live).await {
        tracing::warn!(deployment = %name, %error, "cannot put the sidecar first; resuming anyway");
    }
    let resumed = resume(api, &name).await?;
    tracing::info!(deployment = %name, "resumed a Deployment left paused by an earlier injection");
    Ok(resumed)
}

/// The pod spec of a Deployment's template.
fn pod_spec_of(deployment: &Deployment) -> k8s_openapi::api::core::v1::PodSpec {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .unwrap_or_default()
}

/// Patches the operator makes that are not server-side applies.
fn update_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

/// Takes the operator's pause away.
async fn resume(api: &Api<Deployment>, name: &str) -> Result<Deployment, kube::Error> {
    api.patch(
        name,
        &update_params(),
        &Patch::Merge(json!({
            "metadata": {"annotations": {PAUSED_ANNOTATION: null}},
            "spec": {"paused": null}
        })),
    )
    .await
}

/// Moves the sidecar to the front of `live`'s containers when server-side apply appended it.
async fn put_sidecar_first(
    api: &Api<Deployment>,
    live: Deployment,
) -> Result<Deployment, kube::Error> {
    if inject::sidecar_index(&pod_spec_of(&live)).is_none_or(|i| i == 0) {
        return Ok(live);
    }
    api.patch(
        &live.name_any(),
        &update_params(),
        &Patch::Strategic(inject::sidecar_first(&pod_spec_of(&live))),
    )
    .await
}

/// Applies the injection to `live` by server-side apply and puts the sidecar first. A first
/// injection pauses the Deployment around the two changes (unless its owner paused it), so it
/// rolls once, to the finished pod.
///
/// The pause and the apply follow from `live` (whether it has the sidecar, its containers and
/// their arguments), so both are written on `live`'s pod template: a Deployment whose template
/// changed since (a `kubectl replace` without the sidecar) is refused as stale and read again,
/// not patched into a template that rolls with the sidecar last.
async fn apply_injection(
    api: &Api<Deployment>,
    live: &Deployment,
    body: Value,
) -> Result<Deployment, kube::Error> {
    let name = live.name_any();
    // `live` carries no pause of ours: `resume_if_left_paused` took it away when it was read.
    let pause = !inject::has_sidecar(&pod_spec_of(live))
        && live.spec.as_ref().and_then(|s| s.paused) != Some(true);
    let mut basis = live.clone();
    if pause {
        let paused = json!({
            "metadata": {"annotations": {PAUSED_ANNOTATION: "true"}},
            "spec": {"paused": true}
        });
        basis = write_on_template(api, &basis, &update_params(), |version| {
            Patch::Merge(at_version(paused.clone(), version))
        })
        .await?;
    }
    let applied = write_on_template(api, &basis, &PatchParams::apply(FIELD_MANAGER), |version| {
        Patch::Apply(at_version(body.clone(), version))
    })
    .await;
    let applied = match applied {
        Ok(applied) => applied,
        Err(e) => {
            // The apply may have gone in all the same (a timeout after the server saved it), and
            // an owner may have replaced the Deployment, paused, meanwhile: resumed from a fresh
            // read, only while the pause is ours, and with the sidecar first.
            if pause && let Some(now) = api.get_opt(&name).await? {
                resume_if_left_paused(api, now).await?;
            }
            return Err(e);
        }
    };
    // Still paused when this fails: the next reconcile puts the sidecar first, then resumes.
    let applied = put_sidecar_first(api, applied).await?;
    if pause {
        return resume(api, &name).await;
    }
    Ok(applied)
}

/// How often a write computed from a Deployment's pod template is tried again when only other
/// fields of the Deployment (its status, replicas, other annotations than the operator's pause)
/// changed meanwhile.
const TEMPLATE_WRITE_ATTEMPTS: usize = 5;

/// Writes `patch` at `basis`'s resourceVersion. The Deployment controller writes the status after
/// every change and a scaler writes replicas, so a refusal alone does not mean the write is
/// wrong: the Deployment is read again, and while its pod template, `spec.paused` and the
/// operator's pause annotation are still `basis`'s, the write is made at the new version. A
/// change there is the refusal returned (see [`is_stale_write`]).
async fn write_on_template(
    api: &Api<Deployment>,
    basis: &Deployment,
    params: &PatchParams,
    patch: impl Fn(Option<String>) -> Patch<Value>,
) -> Result<Deployment, kube::Error> {
    let name = basis.name_any();
    let mut version = basis.resource_version();
    let mut attempt = 1;
    loop {
        match api.patch(&name, params, &patch(version)).await {
            Err(e) if is_stale_write(&e) && attempt < TEMPLATE_WRITE_ATTEMPTS => {
                let fresh = api.get(&name).await?;
                if !same_write_basis(basis, &fresh) {
                    return Err(e);
                }
                version = fresh.resource_version();
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// Whether two reads of a Deployment agree on what the operator's writes are computed from.
fn same_write_basis(a: &Deployment, b: &Deployment) -> bool {
    let spec = |d: &Deployment| d.spec.as_ref().map(|s| (s.template.clone(), s.paused));
    spec(a) == spec(b)
        && a.annotations().get(PAUSED_ANNOTATION) == b.annotations().get(PAUSED_ANNOTATION)
}

/// `patch` with `metadata.resourceVersion` set: the API server refuses it (409, "the object has
/// been modified") unless the object is still at that version.
fn at_version(mut patch: Value, version: Option<String>) -> Value {
    if let (Some(version), Some(object)) = (version, patch.as_object_mut()) {
        let metadata = object.entry("metadata").or_insert_with(|| json!({}));
        if let Some(metadata) = metadata.as_object_mut() {
            metadata.insert("resourceVersion".into(), Value::String(version));
        }
    }
    patch
}

/// A write refused because the object changed since it was read (its resourceVersion), as
/// opposed to a server-side apply conflict over fields another manager owns.
fn is_stale_write(error: &kube::Error) -> bool {
    match error {
        kube::Error::Api(status) if status.code == 409 && status.reason == "Conflict" => !status
            .details
            .iter()
            .flat_map(|d| d.causes.iter())
            .any(|c| c.reason == "FieldManagerConflict"),
        _ => false,
    }
}

/// Deletes a target's webhook configuration and forgets its scope.
async fn drop_webhook_scope(namespace: &str, name: &str, context: &Context) -> Result<(), Error> {
    if let Some(hook) = &context.webhook {
        ignore_missing(
            Api::<ValidatingWebhookConfiguration>::all(context.client.clone())
                .delete(
                    &webhook::configuration_name(namespace, name),
                    &DeleteParams::default(),
                )
                .await,
        )?;
        hook.scopes.remove(namespace, name);
    }
    Ok(())
}

/// Takes the injection and the owned objects away from a target no EventPlugin selects.
async fn remove_injection(namespace: &str, name: &str, context: &Context) -> Result<(), Error> {
    context.rollouts.release(&format!("{namespace}/{name}"));
    let deployments: Api<Deployment> = Api::namespaced(context.client.clone(), namespace);
    let live = deployments.get_opt(name).await?;
    let ours = live.filter(|d| {
        d.metadata
            .managed_fields
            .iter()
            .flatten()
            .any(|m| m.manager.as_deref() == Some(FIELD_MANAGER))
    });
    // Out of the webhook's scope first, or the pods without the sidecar would be refused.
    drop_webhook_scope(namespace, name, context).await?;

    if let Some(live) = ours {
        let pod = pod_spec_of(&live);
        if inject::has_sidecar(&pod) {
            let container = discovery::event_handler_container(&live, None)
                .ok()
                .map(|c| c.name.clone());
            let removal = inject::removal(&pod, container.as_deref());
            match write_on_template(&deployments, &live, &update_params(), |version| {
                Patch::Strategic(at_version(removal.clone(), version))
            })
            .await
            {
                Ok(_) => {}
                Err(e) if is_stale_write(&e) => {
                    return Err(Error::Stale(format!(
                        "Deployment {namespace}/{name} changed while its sidecar's removal was computed"
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        deployments
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Apply(inject::release(name)),
            )
            .await?;
        tracing::info!(namespace, deployment = name, "injection removed");
    }
    let secrets: Api<Secret> = Api::namespaced(context.client.clone(), namespace);
    ignore_missing(
        secrets
            .delete(&inject::secret_name(name), &DeleteParams::default())
            .await,
    )?;
    identity::delete(&context.client, namespace, name).await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(context.client.clone(), namespace);
    for index in 0..modules::MODULE_CONFIG_MAPS {
        ignore_missing(
            config_maps
                .delete(
                    &inject::modules_config_map_name(name, index),
                    &DeleteParams::default(),
                )
                .await,
        )?;
    }
    Ok(())
}

fn ignore_missing<T>(result: Result<T, kube::Error>) -> Result<(), Error> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn owned_metadata(
    name: &str,
    owner: &OwnerReference,
    revision: Option<String>,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: Some(name.into()),
        labels: Some(BTreeMap::from([
            (MANAGED_LABEL.to_string(), FIELD_MANAGER.to_string()),
            (inject::TARGET_LABEL.to_string(), owner.name.clone()),
        ])),
        annotations: revision.map(|r| BTreeMap::from([(REVISION_ANNOTATION.to_string(), r)])),
        owner_references: Some(vec![owner.clone()]),
        ..Default::default()
    }
}

/// Whether `owners` name `deployment` (by uid).
fn owned_by(owners: &[OwnerReference], deployment: &Deployment) -> bool {
    let uid = deployment.uid();
    owners.iter().any(|o| Some(&o.uid) == uid.as_ref())
}

/// A typed object as an apply body (with its apiVersion and kind).
fn typed_body<T: serde::Serialize>(
    object: &T,
    api_version: &str,
    kind: &str,
) -> Result<Value, Error> {
    let mut body = serde_json::to_value(object)
        .map_err(|e| Error::Internal(format!("serializing a {kind}: {e}")))?;
    body["apiVersion"] = json!(api_version);
    body["kind"] = json!(kind);
    Ok(body)
}

fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
}

/// A fresh `/status` token: 32 random bytes, hex.
fn random_token() -> Result<String, String> {
    use std::io::Read;
    let mut buf = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| format!("reading /dev/urandom for a status token: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_refused_by_its_resource_version_is_stale_and_a_field_conflict_is_not() {
        // Bodies as a 1.20 API server answers them.
        let refused = |body: Value| {
            kube::Error::Api(Box::new(
                serde_json::from_value(body).expect("a Status body"),
            ))
        };
        let modified = refused(
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "Operation cannot be fulfilled on deployments.apps \"eh\": the object has been modified; please apply your changes to the latest version and try again",
            "reason": "Conflict", "details": {"name": "eh", "group": "apps", "kind": "deployments"}, "code": 409}),
        );
        let fields = refused(
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.template.spec.containers[name=\"eh\"].args",
            "reason": "Conflict", "details": {"causes": [{"reason": "FieldManagerConflict",
                "message": "conflict with \"kubectl-client-side-apply\" using apps/v1",
                "field": ".spec.template.spec.containers[name=\"eh\"].args"}]}, "code": 409}),
        );
        let forbidden = refused(
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "forbidden", "reason": "Forbidden", "code": 403}),
        );
        let exists = refused(
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": "deployments.apps \"eh\" already exists", "reason": "AlreadyExists",
            "details": {"name": "eh", "group": "apps", "kind": "deployments"}, "code": 409}),
        );
        assert!(is_stale_write(&modified));
        assert!(!is_stale_write(&fields));
        assert!(!is_stale_write(&forbidden));
        assert!(!is_stale_write(&exists));
    }

    #[test]
    fn a_refused_write_is_made_again_only_on_the_same_pod_template() {
        let deployment = |version: &str, replicas: i32, containers: Value, paused: Value| {
            let d: Deployment = serde_json::from_value(json!({
                "metadata": {"name": "eh", "resourceVersion": version,
                    "annotations": paused},
                "spec": {"replicas": replicas, "selector": {},
                    "template": {"spec": {"containers": containers}}},
                "status": {"observedGeneration": replicas}
            }))
            .expect("a Deployment");
            d
        };
        let eh = json!([{"name": "eh", "args": ["--fluentd-url=http://127.0.0.1:8888/a"]}]);
        let basis = deployment("1", 1, eh.clone(), json!({}));
        // The Deployment controller's status write and a scaler: the same template.
        assert!(same_write_basis(
            &basis,
            &deployment("2", 3, eh.clone(), json!({}))
        ));
        // A replace with other args, or without the sidecar the basis had, or a pause of ours
        // taken away: read again.
        let other = json!([{"name": "eh", "args": ["--fluentd-url=http://fluentd:8888/a"]}]);
        assert!(!same_write_basis(
            &basis,
            &deployment("2", 1, other, json!({}))
        ));
        let injected = json!([{"name": inject::SIDECAR_CONTAINER}, {"name": "eh"}]);
        assert!(!same_write_basis(
            &deployment("1", 1, injected, json!({})),
            &deployment("2", 1, json!([{"name": "eh"}]), json!({}))
        ));
        assert!(!same_write_basis(
            &deployment("1", 1, eh.clone(), json!({PAUSED_ANNOTATION: "true"})),
            &deployment("2", 1, eh, json!({}))
        ));
    }

    #[test]
    fn a_write_at_a_version_carries_it_in_its_metadata() {
        let patch = at_version(
            json!({"metadata": {"annotations": {"a": "b"}}, "spec": {"paused": true}}),
            Some("42".into()),
        );
        assert_eq!(patch["metadata"]["resourceVersion"], "42");
        assert_eq!(patch["metadata"]["annotations"]["a"], "b");
        let order = at_version(json!({"spec": {}}), Some("7".into()));
        assert_eq!(order["metadata"]["resourceVersion"], "7");
        assert_eq!(at_version(json!({"spec": {}}), None), json!({"spec": {}}));
    }

    fn selector(value: Value) -> LabelSelector {
        serde_json::from_value(value).expect("a selector")
    }

    #[test]
    fn each_pod_is_read_on_its_own_sidecar_admin_port() {
        let pod =
            |spec: Value| -> Pod { serde_json::from_value(json!({"spec": spec})).expect("a pod") };
        let admin = |port: u16| json!([{"name": render::ADMIN_PORT_NAME, "containerPort": port}]);
        let ordinary = pod(json!({"containers": [
            {"name": "event-handler", "ports": [{"name": "http", "containerPort": 80}]},
            {"name": inject::SIDECAR_CONTAINER, "ports": admin(9191)}]}));
        assert_eq!(admin_port_of(&ordinary), Some(9191));
        let native = pod(json!({"containers": [{"name": "event-handler"}],
            "initContainers": [{"name": inject::SIDECAR_CONTAINER, "restartPolicy": "Always", "ports": admin(9292)}]}));
        assert_eq!(admin_port_of(&native), Some(9292));
        let without = pod(json!({"containers": [{"name": "event-handler", "ports": admin(9393)}]}));
        assert_eq!(
            admin_port_of(&without),
            None,
            "only the sidecar's port counts"
        );
    }

    #[test]
    fn an_admin_port_another_container_declares_is_refused() {
        let deployment = |ports: Value| -> Deployment {
            serde_json::from_value(json!({"metadata": {"name": "eh"}, "spec": {
                "selector": {}, "template": {"spec": {"containers": [
                    {"name": "event-handler", "ports": ports},
                    {"name": inject::SIDECAR_CONTAINER, "ports": [{"containerPort": 9090}]}]}}}}))
            .expect("a deployment")
        };
        assert!(admin_port_free(&deployment(json!([{"containerPort": 80}])), 9090).is_ok());
        let taken = admin_port_free(&deployment(json!([{"containerPort": 9090}])), 9090)
            .expect_err("taken");
        assert_eq!(taken.reason, "AdminPortTaken");
        assert!(taken.message.contains("event-handler"), "{}", taken.message);
    }

    #[test]
    fn selectors_match_and_print_as_the_api_reads_them() {
        let labels = BTreeMap::from([
            ("app".to_string(), "eh".to_string()),
            ("tier".to_string(), "audit".to_string()),
        ]);
        let s = selector(json!({"matchLabels": {"app": "eh"}, "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["audit", "x"]},
            {"key": "canary", "operator": "DoesNotExist"}]}));
        assert!(selector_matches(&s, &labels));
        assert_eq!(selector_query(&s), "app=eh,tier in (audit,x),!canary");
        let s = selector(
            json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["audit"]}]}),
        );
        assert!(!selector_matches(&s, &labels));
        let s = selector(json!({"matchExpressions": [{"key": "tier", "operator": "Bogus"}]}));
        assert!(
            !selector_matches(&s, &labels),
            "an unknown operator matches nothing"
        );
    }

    #[test]
    fn a_plugin_targets_by_name_or_selector_never_both() {
        let spec = |target: Value| -> EventPluginSpec {
            serde_json::from_value(
                json!({"module": {"reference": "r:5000/p:v1"}, "target": target}),
            )
            .expect("a spec")
        };
        let labels = BTreeMap::from([("app".to_string(), "eh".to_string())]);
        assert!(targets(&spec(json!({"deployment": "eh"})), "eh", &labels));
        assert!(!targets(
            &spec(json!({"deployment": "other"})),
            "eh",
            &labels
        ));
        assert!(targets(
            &spec(json!({"selector": {"matchLabels": {"app": "eh"}}})),
            "x",
            &labels
        ));
        assert!(!targets(
            &spec(json!({"deployment": "eh", "selector": {"matchLabels": {"app": "eh"}}})),
            "eh",
            &labels
        ));
        assert!(target_is_valid(&spec(json!({"deployment": "eh"}))));
        assert!(!target_is_valid(&spec(
            json!({"deployment": "eh", "selector": {"matchLabels": {"app": "eh"}}})
        )));
        assert!(!target_is_valid(&spec(
            json!({"selector": {"matchExpressions": [{"key": "a", "operator": "Bogus"}]}})
        )));
    }

    #[test]
    fn tokens_are_long_and_fresh() {
        let a = random_token().expect("a token");
        let b = random_token().expect("a token");
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
