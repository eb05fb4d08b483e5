//! The operator's own metrics and health, on `metricsAddress`: `/metrics` (OpenMetrics text from
//! one `prometheus-client` registry) and `/healthz`.

use crate::coalesce::Answer;
use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;

/// `{reason}` of a failed reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// `{outcome}` of a target's reconcile: `ran`, or `shared` when a reconcile of the target that
/// began after the request answered it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// `{method}` of a request to the API server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabel {
    method: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    api_requests: Family<MethodLabel, Counter>,
    reconciles: Counter,
    target_reconciles: Family<OutcomeLabel, Counter>,
    failures: Family<ReasonLabel, Counter>,
    duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// The metrics, registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let reconciles = Counter::default();
        let api_requests = Family::<MethodLabel, Counter>::default();
        registry.register(
            "eventplug_operator_api_requests",
            "Requests to the Kubernetes API server, by HTTP method (a watch counts once, when it starts)",
            api_requests.clone(),
        );
        let failures = Family::<ReasonLabel, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]);
        registry.register(
            "eventplug_operator_reconciles",
            "Reconciles of an EventPlugin run",
            reconciles.clone(),
        );
        let target_reconciles = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "eventplug_operator_target_reconciles",
            "Reconciles of a target Deployment an EventPlugin's reconcile asked for that finished, by outcome: ran, or shared (answered by a reconcile of the same target that began after the request); failed ones count as reconcile failures",
            target_reconciles.clone(),
        );
        registry.register(
            "eventplug_operator_reconcile_failures",
            "Reconciles that failed, by reason (retried)",
            failures.clone(),
        );
        registry.register(
            "eventplug_operator_reconcile_duration_seconds",
            "How long one reconcile took",
            duration.clone(),
        );
        Self {
            registry,
            api_requests,
            reconciles,
            target_reconciles,
            failures,
            duration,
        }
    }

    /// One reconcile ran for `took`.
    pub fn reconciled(&self, took: Duration) {
        self.reconciles.inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// A reconcile of a target that was asked for finished: it ran, or a newer one answered it.
    pub fn target_reconciled(&self, answer: Answer) {
        let outcome = match answer {
            Answer::Ran => "ran",
            Answer::Shared => "shared",
        };
        self.target_reconciles
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// One request to the API server was sent.
    pub fn api_request(&self, method: &http::Method) {
        self.api_requests
            .get_or_create(&MethodLabel {
                method: method.as_str().to_string(),
            })
            .inc();
    }

    /// One reconcile failed.
    pub fn failure(&self, reason: &'static str) {
        self.failures.get_or_create(&ReasonLabel { reason }).inc();
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::warn!(%error, "cannot encode the metrics");
        }
        text
    }
}

/// Serves `/metrics` and `/healthz` on `listener` until the task is dropped.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let (status, body) = match request.uri().path() {
                        "/metrics" => (200, metrics.encode()),
                        "/healthz" => (200, "ok\n".to_string()),
                        other => (404, format!("no {other} here: try /metrics or /healthz\n")),
                    };
                    hyper::Response::builder()
                        .status(status)
                        .body(Full::new(Bytes::from(body)))
                }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%error, "metrics connection ended");
            }
        });
    }
}
