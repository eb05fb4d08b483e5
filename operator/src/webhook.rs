//! The validating admission webhook that keeps every pod of a target behind its sidecar: a
//! `kubectl replace`, a rollback to a ReplicaSet from before the injection or a chart rollback
//! gives the Deployment a template without the sidecar or the redirect, and the pods of that
//! template are refused (`failurePolicy: Fail`), while the injected pods keep serving until the
//! operator applies the injection again.
//!
//! One `ValidatingWebhookConfiguration` per target (`eventplug.<namespace>.<deployment>`), scoped
//! to the target's pods by its Deployment's own selector, pointing at
//! `<base>/validate/<namespace>/<deployment>`: the path says which target a request is about, so
//! a pod of another namespace that happens to carry the same labels is let through, and a target
//! the operator has not reconciled since it started is refused until it has (fail closed; the
//! ReplicaSet controller tries again).
//!
//! The serving certificate comes from a CA the operator makes at start; each configuration carries
//! that CA as its `caBundle`, written again by the next reconcile of each target.

use crate::inject;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The largest AdmissionReview read (the API server sends objects up to about 3 MiB).
const MAX_REVIEW_BYTES: usize = 4 << 20;
/// The path prefix of the webhook.
pub const PATH: &str = "/validate";
/// The label the operator puts on the namespaces it acts in, naming the namespace, so that a
/// target's webhook selects only that namespace's pods (Kubernetes before 1.21 sets no
/// `kubernetes.io/metadata.name` label). A configuration whose operator or namespace is gone then
/// refuses nothing elsewhere.
pub const NAMESPACE_LABEL: &str = "eventplug.dev/namespace";

/// Annotations on a target's configuration naming the target and what its pods must have, so
/// that an operator that just started (or another replica) answers for the target at once.
pub const TARGET_ANNOTATION: &str = "eventplug.dev/target";
/// The event-handler container, in the configuration's annotations.
pub const CONTAINER_ANNOTATION: &str = "eventplug.dev/container";
/// Whether session events must be redirected too, in the configuration's annotations.
pub const SESSIONS_ANNOTATION: &str = "eventplug.dev/sessions";
/// The label on the operator's configurations.
const MANAGED_LABEL: &str = "app.kubernetes.io/managed-by";

/// The apply body that labels `namespace` for its targets' webhooks.
pub fn namespace_label(namespace: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": namespace, "labels": {NAMESPACE_LABEL: namespace}}})
}

/// What a target's pods must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// event-handler's container.
    pub container: String,
    /// Whether event-handler sends session events (so the session URL must be redirected too).
    pub sessions: bool,
}

/// The targets the operator has reconciled since it started, by namespace and Deployment.
#[derive(Debug, Default)]
pub struct Scopes(RwLock<HashMap<(String, String), Scope>>);

impl Scopes {
    /// Records what `namespace/deployment`'s pods must have.
    pub fn set(&self, namespace: &str, deployment: &str, scope: Scope) {
        if let Ok(mut scopes) = self.0.write() {
            scopes.insert((namespace.into(), deployment.into()), scope);
        }
    }

    /// Forgets a target (its injection was removed).
    pub fn remove(&self, namespace: &str, deployment: &str) {
        if let Ok(mut scopes) = self.0.write() {
            scopes.remove(&(namespace.to_string(), deployment.to_string()));
        }
    }

    /// Replaces every scope (after a full list of the configurations).
    pub fn replace_all(&self, all: HashMap<(String, String), Scope>) {
        if let Ok(mut scopes) = self.0.write() {
            *scopes = all;
        }
    }

    fn get(&self, namespace: &str, deployment: &str) -> Option<Scope> {
        self.0
            .read()
            .ok()?
            .get(&(namespace.to_string(), deployment.to_string()))
            .cloned()
    }
}

/// The name of a target's webhook configuration.
pub fn configuration_name(namespace: &str, deployment: &str) -> String {
    let name = format!("eventplug.{namespace}.{deployment}");
    if name.len() <= 253 {
        return name;
    }
    // Too long for an object name: a prefix and a digest of the whole.
    let digest = eventplug_oci::sha256_digest(name.as_bytes());
    let hex = digest.trim_start_matches("sha256:");
    let prefix = name.get(..200).unwrap_or(&name);
    format!("{prefix}.{}", hex.get(..16).unwrap_or(hex))
}

/// Whether `pod`, sent for target `namespace/deployment`, may be created; why not when not.
pub fn decide(pod: &Pod, namespace: &str, deployment: &str, scopes: &Scopes) -> Result<(), String> {
    if pod
        .metadata
        .namespace
        .as_deref()
        .is_some_and(|ns| ns != namespace)
    {
        return Ok(());
    }
    let Some(scope) = scopes.get(namespace, deployment) else {
        return Err(format!(
            "eventplug: the operator has not reconciled Deployment {namespace}/{deployment} since it started; its pods are refused until it has (the ReplicaSet controller tries again)"
        ));
    };
    let spec = pod.spec.clone().unwrap_or_default();
    inject::check_pod(&spec, &scope.container, scope.sessions).map_err(|why| {
        format!(
            "eventplug: {why}. Deployment {namespace}/{deployment} runs EventPlugins, so its pods must run behind the eventplug sidecar; the operator applies the injection to the Deployment again"
        )
    })
}

/// The answer to one AdmissionReview (`review`) sent to `path`.
pub fn answer(review: &Value, path: &str, scopes: &Scopes) -> Value {
    let uid = review["request"]["uid"].clone();
    let refuse = |message: String| {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": uid, "allowed": false, "status": {"code": 403, "message": message}}
        })
    };
    let target = path
        .strip_prefix(PATH)
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.split_once('/'));
    let Some((namespace, deployment)) = target else {
        return refuse(format!("eventplug: no target in the webhook path {path}"));
    };
    let mut object = review["request"]["object"].clone();
    let namespace_given = object
        .get("metadata")
        .and_then(|m| m.get("namespace"))
        .is_some();
    let metadata_is_object = object.get("metadata").is_none_or(Value::is_object);
    if let (false, true, true, Some(ns)) = (
        namespace_given,
        object.is_object(),
        metadata_is_object,
        review["request"]["namespace"].as_str(),
    ) {
        object["metadata"]["namespace"] = json!(ns);
    }
    let pod: Pod = match serde_json::from_value(object) {
        Ok(pod) => pod,
        Err(e) => return refuse(format!("eventplug: the object is not a pod: {e}")),
    };
    match decide(&pod, namespace, deployment, scopes) {
        Ok(()) => json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": uid, "allowed": true}
        }),
        Err(message) => refuse(message),
    }
}

/// A target's webhook configuration: its pods (by the Deployment's selector), refused unless
/// injected, through `client` (`{"url": …}` or `{"service": …}`) trusting `ca_pem`.
pub fn configuration(
    namespace: &str,
    deployment: &str,
    selector: &LabelSelector,
    client: &ClientConfig,
    ca_pem: &str,
    scope: &Scope,
) -> Value {
    use base64::Engine;
    let path = format!("{PATH}/{namespace}/{deployment}");
    let mut client_config = match client {
        ClientConfig::Url(base) => json!({"url": format!("{}{path}", base.trim_end_matches('/'))}),
        ClientConfig::Service {
            namespace,
            name,
            port,
        } => json!({"service": {"namespace": namespace, "name": name, "port": port, "path": path}}),
    };
    client_config["caBundle"] =
        json!(base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes()));
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {
            "name": configuration_name(namespace, deployment),
            "labels": {MANAGED_LABEL: crate::redirect::FIELD_MANAGER},
            "annotations": {
                TARGET_ANNOTATION: format!("{namespace}/{deployment}"),
                CONTAINER_ANNOTATION: scope.container,
                SESSIONS_ANNOTATION: scope.sessions.to_string(),
            },
        },
        "webhooks": [{
            "name": "pods.eventplug.dev",
            "clientConfig": client_config,
            "rules": [{
                "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                "resources": ["pods"], "scope": "Namespaced"
            }],
            "namespaceSelector": {"matchLabels": {NAMESPACE_LABEL: namespace}},
            "objectSelector": selector,
            "failurePolicy": "Fail",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 5
        }]
    })
}

/// The target and scope a configuration of the operator's names, if it is one.
pub fn scope_of(
    configuration: &k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration,
) -> Option<(String, String, Scope)> {
    let annotations = configuration.metadata.annotations.as_ref()?;
    let (namespace, deployment) = annotations.get(TARGET_ANNOTATION)?.split_once('/')?;
    let scope = Scope {
        container: annotations.get(CONTAINER_ANNOTATION)?.clone(),
        sessions: annotations.get(SESSIONS_ANNOTATION)? == "true",
    };
    Some((namespace.to_string(), deployment.to_string(), scope))
}

/// Keeps `scopes` in step with the operator's webhook configurations in the cluster, so that the
/// webhook answers for every target from the moment it starts, before the targets are reconciled.
pub async fn watch_scopes(client: kube::Client, scopes: Arc<Scopes>) {
    use futures::StreamExt;
    use kube::runtime::WatchStreamExt;
    use kube::runtime::watcher::{self, Event};
    let api: kube::Api<
        k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration,
    > = kube::Api::all(client);
    let config = watcher::Config::default().labels(&format!(
        "{MANAGED_LABEL}={}",
        crate::redirect::FIELD_MANAGER
    ));
    let mut events = std::pin::pin!(watcher::watcher(api, config).default_backoff());
    // A relist (after a gap in the watch) replaces the scopes, so none outlives its configuration.
    let mut listed = HashMap::new();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Init) => listed.clear(),
            Ok(Event::InitApply(c)) => {
                if let Some((namespace, deployment, scope)) = scope_of(&c) {
                    scopes.set(&namespace, &deployment, scope.clone());
                    listed.insert((namespace, deployment), scope);
                }
            }
            Ok(Event::InitDone) => scopes.replace_all(std::mem::take(&mut listed)),
            Ok(Event::Apply(c)) => {
                if let Some((namespace, deployment, scope)) = scope_of(&c) {
                    scopes.set(&namespace, &deployment, scope);
                }
            }
            Ok(Event::Delete(c)) => {
                if let Some((namespace, deployment, _)) = scope_of(&c) {
                    scopes.remove(&namespace, &deployment);
                }
            }
            Err(error) => tracing::warn!(%error, "watching the webhook configurations"),
        }
    }
}

/// How the API server reaches the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientConfig {
    /// A URL base (`https://host:port`), for an operator outside the cluster.
    Url(String),
    /// A Service in front of the operator's pods.
    Service {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Its port.
        port: u16,
    },
}

/// The webhook's serving certificate and the CA that signed it.
pub struct Tls {
    /// The CA certificate (PEM): the configurations' `caBundle`.
    pub ca_pem: String,
    /// The CA's private key (PEM), to keep it in a Secret for restarts and other replicas.
    pub ca_key_pem: String,
    /// The server's TLS settings.
    pub config: Arc<rustls::ServerConfig>,
}

/// The CA's parameters: the same every time, so a CA kept as its certificate and key signs
/// certificates that chain to that certificate.
fn ca_params() -> Result<rcgen::CertificateParams, rcgen::Error> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa};
    let mut params = CertificateParams::new(Vec::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "eventplug-operator webhook CA");
    Ok(params)
}

/// A serving certificate for `hosts` (DNS names or IP addresses), signed by the CA `ca`
/// (certificate and key, PEM) or by a fresh one.
pub fn tls(hosts: &[String], ca: Option<(&str, &str)>) -> Result<Tls, String> {
    use rcgen::{CertificateParams, DnType, Issuer, KeyPair};
    let fail = |what: &str, e: rcgen::Error| format!("making the webhook's {what}: {e}");
    let (ca_pem, ca_key) = match ca {
        Some((cert, key)) => (
            cert.to_string(),
            KeyPair::from_pem(key).map_err(|e| fail("CA key (from its Secret)", e))?,
        ),
        None => {
            let key = KeyPair::generate().map_err(|e| fail("CA key", e))?;
            let cert = ca_params()
                .and_then(|p| p.self_signed(&key))
                .map_err(|e| fail("CA", e))?;
            (cert.pem(), key)
        }
    };
    let ca_key_pem = ca_key.serialize_pem();
    let issuer = Issuer::new(ca_params().map_err(|e| fail("CA", e))?, ca_key);
    let key = KeyPair::generate().map_err(|e| fail("key", e))?;
    let mut params = CertificateParams::new(hosts.to_vec()).map_err(|e| fail("certificate", e))?;
    params
        .distinguished_name
        .push(DnType::CommonName, "eventplug-operator webhook");
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| fail("certificate", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("the webhook's TLS settings: {e}"))?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key_der)
        .map_err(|e| format!("the webhook's certificate: {e}"))?;
    Ok(Tls {
        ca_pem,
        ca_key_pem,
        config: Arc::new(config),
    })
}

/// Serves the webhook on `listener` until the task is dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    scopes: Arc<Scopes>,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "webhook listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let scopes = scopes.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(
                Duration::from_secs(10),
                acceptor.accept(stream),
            )
            .await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(error)) => {
                    tracing::debug!(%error, %peer, "webhook: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let scopes = scopes.clone();
                async move {
                    let path = request.uri().path().to_string();
                    let (status, body) = if request.method() != hyper::Method::POST
                        || !path.starts_with(PATH)
                    {
                        (
                            404,
                            json!({"error": format!("no {path} here: POST AdmissionReviews to {PATH}/<namespace>/<deployment>")}),
                        )
                    } else {
                        match Limited::new(request.into_body(), MAX_REVIEW_BYTES)
                            .collect()
                            .await
                        {
                            Err(e) => (
                                413,
                                json!({"error": format!("the AdmissionReview cannot be read: {e}")}),
                            ),
                            Ok(collected) => {
                                match serde_json::from_slice::<Value>(&collected.to_bytes()) {
                                    Err(e) => (
                                        400,
                                        json!({"error": format!("the body is not an AdmissionReview: {e}")}),
                                    ),
                                    Ok(review) => {
                                        let answer = answer(&review, &path, &scopes);
                                        if answer["response"]["allowed"] == json!(false) {
                                            tracing::info!(path = %path, message = %answer["response"]["status"]["message"], "webhook refused a pod");
                                        }
                                        (200, answer)
                                    }
                                }
                            }
                        }
                    };
                    hyper::Response::builder()
                        .status(status)
                        .header(hyper::header::CONTENT_TYPE, "application/json")
                        .body(Full::new(Bytes::from(body.to_string())))
                }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "webhook connection ended");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn review(pod: Value) -> Value {
        json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-1", "namespace": "teleport", "object": pod}})
    }

    fn scopes() -> Scopes {
        let scopes = Scopes::default();
        scopes.set(
            "teleport",
            "eh",
            Scope {
                container: "eh".into(),
                sessions: true,
            },
        );
        scopes
    }

    #[test]
    fn a_target_pod_without_the_sidecar_or_the_redirect_is_refused() {
        let plain =
            review(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "eh"}]}}));
        let out = answer(&plain, "/validate/teleport/eh", &scopes());
        assert_eq!(out["response"]["uid"], "u-1");
        assert_eq!(out["response"]["allowed"], false);
        let message = out["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            message.contains("no eventplug sidecar") && message.contains("teleport/eh"),
            "{message}"
        );

        let half = review(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "eventplug"}, {"name": "eh", "args": ["--fluentd-url=http://127.0.0.1:8888/a"]}]}}));
        let out = answer(&half, "/validate/teleport/eh", &scopes());
        assert_eq!(
            out["response"]["allowed"], false,
            "the session URL goes around the sidecar"
        );

        let injected = review(json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "eventplug"}, {"name": "eh", "args": [
                "--fluentd-url=http://127.0.0.1:8888/a", "--fluentd-session-url=http://127.0.0.1:8888/s"]}]}}));
        assert_eq!(
            answer(&injected, "/validate/teleport/eh", &scopes())["response"]["allowed"],
            true
        );
    }

    #[test]
    fn unknown_targets_are_refused_and_other_namespaces_let_through() {
        let plain = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "eh"}]}});
        let out = answer(
            &review(plain.clone()),
            "/validate/teleport/other",
            &scopes(),
        );
        assert_eq!(
            out["response"]["allowed"], false,
            "a target not reconciled yet fails closed"
        );
        let mut elsewhere = review(plain.clone());
        elsewhere["request"]["namespace"] = json!("dev");
        assert_eq!(
            answer(&elsewhere, "/validate/teleport/eh", &scopes())["response"]["allowed"],
            true
        );
        assert_eq!(
            answer(&review(plain), "/nothing", &scopes())["response"]["allowed"],
            false
        );
        let odd = review(json!({"metadata": "a string", "spec": {}}));
        assert_eq!(
            answer(&odd, "/validate/teleport/eh", &scopes())["response"]["allowed"],
            false
        );
        let not_an_object = review(json!(["a", "list"]));
        assert_eq!(
            answer(&not_an_object, "/validate/teleport/eh", &scopes())["response"]["allowed"],
            false
        );
        let not_a_pod = review(json!({"spec": {"containers": "many"}}));
        assert_eq!(
            answer(&not_a_pod, "/validate/teleport/eh", &scopes())["response"]["allowed"],
            false
        );
    }

    #[test]
    fn the_configuration_scopes_to_the_targets_pods_and_trusts_the_ca() {
        let selector: LabelSelector =
            serde_json::from_value(json!({"matchLabels": {"app": "eh"}})).expect("a selector");
        let tls = tls(&["198.18.0.1".into()], None).expect("certificates");
        // A CA kept as its certificate and key signs the next serving certificate itself.
        let again = super::tls(&["198.18.0.1".into()], Some((&tls.ca_pem, &tls.ca_key_pem)))
            .expect("certificates from the kept CA");
        assert_eq!(again.ca_pem, tls.ca_pem);
        assert!(tls.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let scope = Scope {
            container: "eh".into(),
            sessions: true,
        };
        let config = configuration(
            "teleport",
            "eh",
            &selector,
            &ClientConfig::Url("https://198.18.0.1:8443/".into()),
            &tls.ca_pem,
            &scope,
        );
        // What the pods must have travels with the configuration: a restarted operator reads it.
        let typed: k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration =
            serde_json::from_value(config.clone()).expect("a configuration");
        assert_eq!(
            scope_of(&typed),
            Some(("teleport".to_string(), "eh".to_string(), scope.clone()))
        );
        let hook = &config["webhooks"][0];
        assert_eq!(config["metadata"]["name"], "eventplug.teleport.eh");
        let long = configuration_name(&"n".repeat(63), &"d".repeat(253));
        assert!(
            long.len() <= 253 && long.starts_with("eventplug.nnn"),
            "{long}"
        );
        assert_ne!(
            long,
            configuration_name(&"n".repeat(63), &format!("{}e", "d".repeat(252)))
        );
        assert_eq!(
            hook["clientConfig"]["url"],
            "https://198.18.0.1:8443/validate/teleport/eh"
        );
        assert_eq!(
            hook["objectSelector"],
            json!({"matchLabels": {"app": "eh"}})
        );
        assert_eq!(hook["failurePolicy"], "Fail");
        assert!(
            hook["clientConfig"]["caBundle"]
                .as_str()
                .is_some_and(|b| !b.is_empty())
        );
        let service = ClientConfig::Service {
            namespace: "eventplug".into(),
            name: "operator".into(),
            port: 443,
        };
        let config = configuration("teleport", "eh", &selector, &service, &tls.ca_pem, &scope);
        assert_eq!(
            config["webhooks"][0]["clientConfig"]["service"]["path"],
            "/validate/teleport/eh"
        );
    }
}
