//! The admin listener (`admin.address`): `/healthz` and `/readyz` for kubelet, `/metrics` for
//! Prometheus, `/status` for the operator. It never takes events; events stay on the loopback
//! ingest listener.
//!
//! `/status` tells what runs (config hash, digests, load errors), so off loopback it needs a bearer
//! token: the operator writes a random token into a Secret it owns, mounts it into the sidecar
//! (`admin.statusTokenFile`) and sends it. A shared secret rather than a TokenReview, so the
//! sidecar needs no cluster-wide permission (a TokenReview is a cluster-scoped `create`) and
//! answers with the API server down. Whether the token may be left out is decided by the address
//! the listener is bound to, not by a reloaded config.

use super::Sidecar;
use super::response::text;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Admin connections open at once; more wait in the listen backlog.
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// How long an admin request's head may take.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts admin connections until the task is aborted. Connections over the limit are closed at
/// once rather than left waiting, so slow peers cannot keep kubelet's probes out.
pub(super) async fn serve(
    sidecar: Arc<Sidecar>,
    listener: tokio::net::TcpListener,
    bound: SocketAddr,
) {
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                super::accept_failed(&error).await;
                continue;
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            tracing::warn!(
                limit = MAX_ADMIN_CONNECTIONS,
                "an admin connection over the limit was closed"
            );
            drop(stream);
            continue;
        };
        let sidecar = sidecar.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request| {
                let sidecar = sidecar.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&sidecar, &request, bound).await) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(ADMIN_HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(error) = connection.await {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        });
    }
}

/// A response with a document body (metrics, the status report) of `content_type`.
fn document(body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}

/// Answers one admin request.
async fn handle(
    sidecar: &Sidecar,
    request: &Request<Incoming>,
    bound: SocketAddr,
) -> Response<Full<Bytes>> {
    let live = sidecar.live();
    let path = request.uri().path();
    if request.method() != Method::GET {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{path}: the admin listener takes GET only; events go to listen.address ({})",
                live.config.listen.address
            ),
        );
        response.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("GET"),
        );
        return response;
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok"),
        "/readyz" => match (
            &live.blocked,
            sidecar.is_draining(),
            sidecar.upstream_refusal(),
        ) {
            (_, true, _) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
            (Some(reason), _, _) => text(StatusCode::SERVICE_UNAVAILABLE, reason.clone()),
            (None, false, Some(refusal)) => text(StatusCode::SERVICE_UNAVAILABLE, refusal),
            (None, false, None) => text(StatusCode::OK, "ready"),
        },
        "/metrics" => document(sidecar.metrics.render(), super::metrics::CONTENT_TYPE),
        "/status" => {
            if let Err(refusal) = authorize(sidecar, request, bound).await {
                return refusal.response();
            }
            let mut report = live.status();
            report.accepted_api_versions = sidecar.reads().to_vec();
            if let Some(refusal) = sidecar.upstream_refusal() {
                report.ready = false;
                report.upstream_refused = Some(refusal);
            }
            report.degraded = sidecar.effects.degraded();
            // Compact JSON: one line, as every answer.
            match serde_json::to_string(&report) {
                Ok(mut body) => {
                    body.push('\n');
                    document(body, "application/json")
                }
                Err(error) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot render the status report: {error}"),
                ),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            format!(
                "no such path {path} on the admin listener: /healthz, /readyz, /metrics, /status; events go to listen.address ({})",
                live.config.listen.address
            ),
        ),
    }
}

/// Why `/status` is refused.
enum Refusal {
    /// No token, or another one: 401.
    Unauthorized(&'static str),
    /// The token cannot be checked: 503 (details only in the log).
    Unavailable(&'static str),
}

impl Refusal {
    fn response(self) -> Response<Full<Bytes>> {
        match self {
            Self::Unauthorized(why) => {
                let mut response = text(StatusCode::UNAUTHORIZED, why);
                response.headers_mut().insert(
                    hyper::header::WWW_AUTHENTICATE,
                    hyper::header::HeaderValue::from_static("Bearer"),
                );
                response
            }
            Self::Unavailable(why) => text(StatusCode::SERVICE_UNAVAILABLE, why),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case, RFC 7235).
fn bearer_token(request: &Request<Incoming>) -> Option<&str> {
    let value = request
        .headers()
        .get(hyper::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Checks `/status`'s bearer token against `admin.statusTokenFile`, read at each request so a
/// rotated Secret counts at once. The token is compared as a SHA-256 digest in constant time, so
/// neither its bytes nor its length show in the timing. Without the setting, only a listener bound
/// to loopback answers, whatever a reloaded config says.
async fn authorize(
    sidecar: &Sidecar,
    request: &Request<Incoming>,
    bound: SocketAddr,
) -> Result<(), Refusal> {
    let live = sidecar.live();
    let Some(file) = &live.config.admin.status_token_file else {
        if bound.ip().is_loopback() {
            return Ok(());
        }
        tracing::error!(%bound, "admin.statusTokenFile is no longer set but the admin listener is not on loopback; /status is refused until it is set again");
        return Err(Refusal::Unavailable(
            "/status needs admin.statusTokenFile on this address",
        ));
    };
    let Some(given) = bearer_token(request) else {
        return Err(Refusal::Unauthorized(
            "/status needs `Authorization: Bearer <token>` with the token in admin.statusTokenFile",
        ));
    };
    let expected = match tokio::fs::read_to_string(file).await {
        Ok(token) if !token.trim().is_empty() => token,
        Ok(_) => {
            tracing::error!(file = %file.display(), "admin.statusTokenFile is empty; /status is refused");
            return Err(Refusal::Unavailable(
                "the status token cannot be checked (see the sidecar's log)",
            ));
        }
        Err(error) => {
            tracing::error!(file = %file.display(), %error, "cannot read admin.statusTokenFile; /status is refused");
            return Err(Refusal::Unavailable(
                "the status token cannot be checked (see the sidecar's log)",
            ));
        }
    };
    let digest = |text: &str| -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(text.trim().as_bytes()).into()
    };
    if bool::from(digest(given).ct_eq(&digest(&expected))) {
        Ok(())
    } else {
        Err(Refusal::Unauthorized(
            "the bearer token is not the one in admin.statusTokenFile",
        ))
    }
}
