//! One request from event-handler: route, read the body, run the chain, deliver, answer. The answer
//! is 200 only when the upstream accepted the event or a plugin deliberately skipped it.

use super::Sidecar;
use super::live::Live;
use bytes::Bytes;
use eventplug_contract::PoisonPolicy;
use eventplug_contract::{FailurePolicy, Mode};
use eventplug_runtime::abi::{Effect, EffectKind};
use eventplug_runtime::engine::CallError;
use eventplug_runtime::pipeline::{InputError, Processed, StepResult, Verdict};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, Uri};
use std::sync::Arc;

/// A response with a text body.
pub(super) fn text(status: StatusCode, body: impl Into<String>) -> Response<Full<Bytes>> {
    let mut body: String = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// Where an ingest path sends its events.
enum Route {
    Audit,
    Session(String),
}

fn route(live: &Live, path: &str) -> Option<Route> {
    if path == live.routes.audit_path {
        return Some(Route::Audit);
    }
    let prefix = live.routes.session_path.as_deref()?;
    let rest = path
        .strip_prefix(prefix)?
        .strip_prefix('.')?
        .strip_suffix(".log")?;
    (!rest.is_empty() && !rest.contains('/')).then(|| Route::Session(rest.to_string()))
}

/// Answers one request.
pub(super) async fn handle(
    sidecar: Arc<Sidecar>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let live = sidecar.live();
    let path = request.uri().path().to_string();
    match (request.method(), path.as_str()) {
        (&Method::GET, "/healthz") => return text(StatusCode::OK, "ok"),
        (&Method::GET, "/readyz") => {
            return match (&live.blocked, sidecar.is_draining()) {
                (_, true) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
                (Some(reason), _) => text(StatusCode::SERVICE_UNAVAILABLE, reason.clone()),
                (None, false) => text(StatusCode::OK, "ready"),
            };
        }
        (&Method::GET, "/metrics") => {
            for plugin in live.pipeline.plugins() {
                let waited = plugin
                    .pool
                    .stats()
                    .wait_nanos
                    .load(std::sync::atomic::Ordering::Relaxed);
                sidecar.metrics.set(
                    "eventplug_instance_wait_seconds",
                    &[("plugin", &plugin.settings.name)],
                    waited as f64 / 1e9,
                );
            }
            let mut response = text(StatusCode::OK, sidecar.metrics.render());
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            return response;
        }
        (&Method::GET, "/status") => {
            let body = serde_json::to_string_pretty(&live.status()).unwrap_or_default();
            let mut response = text(StatusCode::OK, body);
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("application/json"),
            );
            return response;
        }
        _ => {}
    }
    let Some(route) = route(&live, &path) else {
        let sessions = live
            .routes
            .session_path
            .as_deref()
            .map(|p| format!(" and {p}.<session id>.log"))
            .unwrap_or_default();
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "no such path {path}: events go to {}{sessions}",
                live.routes.audit_path
            ),
        );
    };
    if request.method() != Method::POST {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} takes POST with one JSON event"),
        );
        response.headers_mut().insert(
            hyper::header::ALLOW,
            hyper::header::HeaderValue::from_static("POST"),
        );
        return response;
    }
    let kind = match route {
        Route::Audit => "audit",
        Route::Session(_) => "session",
    };
    sidecar
        .metrics
        .inc("eventplug_events_received_total", &[("path", kind)]);
    let limit = usize::try_from(live.config.listen.max_body_bytes.get()).unwrap_or(usize::MAX);
    let body = match Limited::new(request.into_body(), limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            sidecar
                .metrics
                .inc("eventplug_events_total", &[("result", "rejected")]);
            return text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the event is over {limit} bytes: raise listen.maxBodyBytes in the sidecar config"
                ),
            );
        }
        Err(error) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("could not read the body: {error}"),
            );
        }
    };
    let target = match route {
        Route::Audit => live.routes.audit_url.clone(),
        Route::Session(sid) => match live.routes.session_url(&sid) {
            Some(url) => url,
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("session id {sid:?} does not make a URL"),
                );
            }
        },
    };
    if let Some(reason) = &live.blocked {
        sidecar
            .metrics
            .inc("eventplug_events_total", &[("result", "refused")]);
        return text(StatusCode::SERVICE_UNAVAILABLE, reason.clone());
    }
    // Plugin calls take microseconds but may run to their timeout: run them on this worker thread,
    // telling the runtime to move its other tasks elsewhere meanwhile (cheaper than a hand-off to
    // the blocking pool for every event).
    let processed = tokio::task::block_in_place(|| live.pipeline.process(&body));
    match processed {
        Err(InputError::TooLarge { size, limit }) => text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the event is {size} bytes, over the chain's limit of {limit} bytes"),
        ),
        Err(error) => {
            // Not an event: a chain failure under the chain's policy.
            let closed = live.pipeline.plugins().any(|p| {
                p.settings.mode == Mode::Enforce
                    && p.settings.failure_policy == FailurePolicy::FailClosed
            });
            if closed {
                let key = format!("body:{}", eventplug_runtime::engine::module_digest(&body));
                fail(&sidecar, &live, &key, &target, body, &format!("{error}")).await
            } else {
                tracing::warn!(%error, "body is not an event; forwarded unchanged (no plugin is FailClosed)");
                deliver(&sidecar, &live, &target, body, None, "forwarded").await
            }
        }
        Ok(processed) => {
            record(&sidecar, &processed);
            // Failed attempts are counted per event identity and bytes.
            let key = format!(
                "{}#{}",
                processed.identity.key(),
                eventplug_runtime::engine::module_digest(&body)
            );
            let response = match &processed.outcome.verdict {
                Verdict::Forward => {
                    let result = replayed(&processed, "forwarded");
                    deliver(&sidecar, &live, &target, body, Some(&key), result).await
                }
                Verdict::Modified(bytes) => {
                    let result = replayed(&processed, "modified");
                    deliver(
                        &sidecar,
                        &live,
                        &target,
                        Bytes::from(bytes.clone()),
                        Some(&key),
                        result,
                    )
                    .await
                }
                Verdict::Skip { plugin } => {
                    sidecar.metrics.inc(
                        "eventplug_events_total",
                        &[("result", replayed(&processed, "skipped"))],
                    );
                    sidecar.poison.settled(&key);
                    text(StatusCode::OK, format!("skipped by {plugin}"))
                }
                Verdict::Fail {
                    plugin,
                    error: error @ (CallError::Busy { .. } | CallError::Instantiate(_)),
                } => {
                    // Load, not the event's fault: retry without counting towards poison.
                    sidecar
                        .metrics
                        .inc("eventplug_events_total", &[("result", "failed")]);
                    return text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!(
                            "plugin {plugin} could not take the event (FailClosed): {error}; retry"
                        ),
                    );
                }
                Verdict::Fail { plugin, error } => {
                    let why = format!("plugin {plugin} failed (FailClosed): {error}");
                    return fail(&sidecar, &live, &key, &target, body, &why).await;
                }
            };
            // The event's fate is final once it was delivered or skipped: carry out its effects,
            // once, whichever delivery of it gets here first.
            if response.status() == StatusCode::OK && processed.claim_effects() {
                for (effects, mode) in [
                    (&processed.outcome.effects, "enforce"),
                    (&processed.outcome.shadow_effects, "shadow"),
                ] {
                    for effect in effects {
                        carry_out(&sidecar, effect, mode);
                    }
                }
            }
            response
        }
    }
}

fn replayed(processed: &Processed, result: &'static str) -> &'static str {
    if processed.replayed {
        "replayed"
    } else {
        result
    }
}

/// Forwards to the upstream; 200 only on the upstream's 200.
async fn deliver(
    sidecar: &Sidecar,
    live: &Live,
    url: &Uri,
    body: Bytes,
    key: Option<&str>,
    result: &'static str,
) -> Response<Full<Bytes>> {
    match live.upstream.post(url, body).await {
        Ok(took) => {
            sidecar
                .metrics
                .observe("eventplug_upstream_duration_seconds", &[], took);
            sidecar
                .metrics
                .inc("eventplug_events_total", &[("result", result)]);
            if let Some(key) = key {
                sidecar.poison.settled(key);
            }
            text(StatusCode::OK, "ok")
        }
        Err(error) => {
            let reason = match &error {
                super::upstream::UpstreamError::Unreachable(_) => "unreachable",
                super::upstream::UpstreamError::Status(_) => "status",
                super::upstream::UpstreamError::Timeout(_) => "timeout",
            };
            sidecar
                .metrics
                .inc("eventplug_upstream_errors_total", &[("reason", reason)]);
            tracing::warn!(%error, upstream = %url, "forward failed; event-handler will retry");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{error}: not delivered, retry"),
            )
        }
    }
}

/// A failed event: refuse it, or after too many attempts apply the poison policy.
async fn fail(
    sidecar: &Sidecar,
    live: &Live,
    key: &str,
    target: &Uri,
    original: Bytes,
    why: &str,
) -> Response<Full<Bytes>> {
    let attempts = sidecar.poison.failed(key);
    let limit = live.config.delivery.poison_attempts;
    if attempts < limit {
        sidecar
            .metrics
            .inc("eventplug_events_total", &[("result", "failed")]);
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{why} (attempt {attempts} of {limit})"),
        );
    }
    let policy = live.config.delivery.poison_policy;
    let name = match policy {
        PoisonPolicy::Quarantine => "quarantine",
        PoisonPolicy::Forward => "forward",
        PoisonPolicy::Block => "block",
    };
    sidecar
        .metrics
        .inc("eventplug_poison_events_total", &[("policy", name)]);
    tracing::error!(event = %key, attempts, policy = name, reason = %why, "poison event: the chain failed on it {attempts} times");
    match policy {
        PoisonPolicy::Quarantine => {
            // With a FailClosed plugin in the chain the original may hold what it exists to remove:
            // quarantine a record of the event instead of the event.
            let body = match live.config.fail_closed_plugin() {
                Some(plugin) => quarantine_record(key, &original, why, attempts, &plugin.name),
                None => original,
            };
            deliver(
                sidecar,
                live,
                &live.routes.quarantine_url,
                body,
                Some(key),
                "quarantined",
            )
            .await
        }
        PoisonPolicy::Forward => {
            deliver(sidecar, live, target, original, Some(key), "forwarded").await
        }
        PoisonPolicy::Block => {
            sidecar
                .metrics
                .inc("eventplug_events_total", &[("result", "failed")]);
            text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{why}; blocked as a poison event after {attempts} attempts"),
            )
        }
    }
}

/// What is quarantined in place of an event that must not leave unfiltered: its identity, size and
/// sha256, why it failed, and which FailClosed plugin guards the chain; never its body.
fn quarantine_record(key: &str, original: &[u8], why: &str, attempts: u32, guard: &str) -> Bytes {
    let record = serde_json::json!({
        "eventplug_quarantine": "record",
        "event_key": key,
        "body_sha256": eventplug_runtime::engine::module_digest(original),
        "body_bytes": original.len(),
        "reason": why,
        "attempts": attempts,
        "fail_closed_plugin": guard,
    });
    Bytes::from(record.to_string())
}

/// Metrics and logs for what the chain did (once per outcome, not per replay).
fn record(sidecar: &Sidecar, processed: &Processed) {
    if processed.replayed {
        return;
    }
    for step in &processed.outcome.steps {
        let mode = if step.shadow { "shadow" } else { "enforce" };
        let result = match &step.result {
            StepResult::NotSelected => "not_selected",
            StepResult::Forwarded => "forwarded",
            StepResult::Modified(_) => "modified",
            StepResult::Skipped => "skipped",
            StepResult::Failed(error) => {
                sidecar.metrics.inc(
                    "eventplug_plugin_failures_total",
                    &[("plugin", &step.plugin), ("reason", error.reason())],
                );
                tracing::warn!(plugin = %step.plugin, mode, %error, "plugin failed on an event");
                "failed"
            }
        };
        sidecar.metrics.inc(
            "eventplug_plugin_events_total",
            &[("plugin", &step.plugin), ("mode", mode), ("result", result)],
        );
        if result != "not_selected" {
            sidecar.metrics.observe(
                "eventplug_plugin_duration_seconds",
                &[("plugin", &step.plugin)],
                step.elapsed,
            );
        }
        for log in &step.logs {
            tracing::info!(plugin = %step.plugin, level = ?log.level, "{}", log.message);
        }
    }
}

/// Carries out an effect. Until the Teleport client and alert routing exist, effects are logged and
/// counted; shadow effects only recorded.
fn carry_out(sidecar: &Sidecar, effect: &Effect, mode: &'static str) {
    let kind = match effect.kind {
        EffectKind::Alert(_) => "alert",
        EffectKind::CreateLock(_) => "create_lock",
        EffectKind::DeleteLock(_) => "delete_lock",
    };
    sidecar
        .metrics
        .inc("eventplug_effects_total", &[("kind", kind), ("mode", mode)]);
    tracing::warn!(mode, "effect: {effect}");
}
