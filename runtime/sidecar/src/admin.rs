//! The admin listener (`admin.address`): `/healthz` and `/readyz` for kubelet, `/metrics` for
//! Prometheus, `/status` for the operator. It never takes events; events stay on the loopback
//! ingest listener.
//!
//! `/status` tells what runs (config hash, digests, load errors), so off loopback it needs a bearer
//! token: the operator writes a random token into a Secret it owns, mounts it into the sidecar
//! (`admin.statusTokenFile`) and sends it. A shared secret rather than a TokenReview, so the
//! sidecar needs no cluster-wide permission (a TokenReview is a cluster-scoped `create`) and
//! answers with the API server down.

use super::Sidecar;
use super::ingest::text;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// Admin connections open at once; more wait in the listen backlog.
const MAX_ADMIN_CONNECTIONS: usize = 64;

/// How long an admin request's head may take.
const ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts admin connections until the task is aborted.
pub(super) async fn serve(sidecar: Arc<Sidecar>, listener: tokio::net::TcpListener) {
    let open = Arc::new(tokio::sync::Semaphore::new(MAX_ADMIN_CONNECTIONS));
    loop {
        let Ok(permit) = open.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                super::accept_failed(&error).await;
                continue;
            }
        };
        let sidecar = sidecar.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = service_fn(move |request| {
                let sidecar = sidecar.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&sidecar, &request)) }
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
fn handle(sidecar: &Sidecar, request: &Request<Incoming>) -> Response<Full<Bytes>> {
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
            if let Err(refusal) = authorize(sidecar, request) {
                return refusal;
            }
            let mut report = live.status();
            if let Some(refusal) = sidecar.upstream_refusal() {
                report.ready = false;
                report.upstream_refused = Some(refusal);
            }
            report.degraded = sidecar.effects.degraded();
            // Compact JSON: one line, as every answer.
            let mut body = serde_json::to_string(&report).unwrap_or_default();
            body.push('\n');
            document(body, "application/json")
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

/// Checks `/status`'s bearer token against `admin.statusTokenFile` (read at each request, so a
/// rotated Secret counts at once). Without the setting (loopback only) anyone local may read it.
#[allow(clippy::result_large_err)]
fn authorize(sidecar: &Sidecar, request: &Request<Incoming>) -> Result<(), Response<Full<Bytes>>> {
    let live = sidecar.live();
    let Some(file) = &live.config.admin.status_token_file else {
        return Ok(());
    };
    let expected = match std::fs::read_to_string(file) {
        Ok(token) if !token.trim().is_empty() => token.trim().to_string(),
        Ok(_) => {
            tracing::error!(file = %file.display(), "admin.statusTokenFile is empty; /status is refused");
            return Err(text(
                StatusCode::SERVICE_UNAVAILABLE,
                "admin.statusTokenFile is empty: /status is refused until it holds a token",
            ));
        }
        Err(error) => {
            tracing::error!(file = %file.display(), %error, "cannot read admin.statusTokenFile; /status is refused");
            return Err(text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot read admin.statusTokenFile: {error}"),
            ));
        }
    };
    let given = request
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(token) if bool::from(token.as_bytes().ct_eq(expected.as_bytes())) => Ok(()),
        given => {
            let why = if given.is_some() {
                "the bearer token is not the one in admin.statusTokenFile"
            } else {
                "/status needs `Authorization: Bearer <token>` with the token in admin.statusTokenFile"
            };
            let mut response = text(StatusCode::UNAUTHORIZED, why);
            response.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Bearer"),
            );
            Err(response)
        }
    }
}
