//! One request from event-handler: route, read the body, run the chain, deliver, answer. The answer
//! is 200 only when the upstream accepted the event or a plugin deliberately skipped it.

use super::Sidecar;
use super::live::Live;
use super::upstream::{Blame, UpstreamError};
use bytes::Bytes;
use eventplug_contract::PoisonPolicy;
use eventplug_runtime::abi::{Effect, EffectKind};
use eventplug_runtime::engine::CallError;
use eventplug_runtime::pipeline::{InputError, Processed, StepResult, Verdict};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, Uri};
use std::sync::Arc;

/// The longest answer text, in bytes; longer reasons (a module's compile error) are cut.
const MAX_ANSWER_BYTES: usize = 2048;

/// `text` as one line: each run of whitespace or control characters that holds a line break or
/// another control character becomes one space, and the text is cut at `MAX_ANSWER_BYTES` with `…`.
pub(crate) fn one_line(text: &str) -> String {
    let mut line = String::with_capacity(text.len().min(MAX_ANSWER_BYTES));
    let mut gap = false;
    for c in text.trim().chars() {
        if c.is_control() || (gap && c.is_whitespace()) {
            gap = true;
            continue;
        }
        if gap {
            while line.ends_with(' ') {
                line.pop();
            }
            line.push(' ');
            gap = false;
        }
        if line.len() + c.len_utf8() > MAX_ANSWER_BYTES {
            line.push('…');
            break;
        }
        line.push(c);
    }
    line
}

/// A response with a one-line text body.
pub(super) fn text(status: StatusCode, body: impl AsRef<str>) -> Response<Full<Bytes>> {
    let mut body = one_line(body.as_ref());
    body.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
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

/// Where an ingest path sends its events.
enum Route {
    Audit,
    Session(String),
    /// A session path whose id is not one the sidecar forwards: why.
    BadSession(String),
}

/// The longest session id accepted (Teleport's are 36-character UUIDs).
const MAX_SESSION_ID: usize = 128;

/// Checks a session id as it appears in the request path. Teleport's are UUIDs; accepted are
/// letters, digits, `.`, `_` and `-`, without `..`, so that the id can neither leave the session
/// path upstream nor smuggle characters in percent-encoded (`%2f`, `%00`).
fn check_session_id(sid: &str) -> Result<(), String> {
    if sid.is_empty() {
        return Err("the session id is empty".into());
    }
    if sid.len() > MAX_SESSION_ID {
        return Err(format!(
            "the session id is {} bytes long, over {MAX_SESSION_ID}",
            sid.len()
        ));
    }
    if sid.contains('%') {
        return Err("the session id holds a percent-encoded character".into());
    }
    if let Some(bad) = sid
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "the session id holds {bad:?}, outside letters, digits, `.`, `_` and `-`"
        ));
    }
    if sid.contains("..") {
        return Err("the session id holds `..`".into());
    }
    Ok(())
}

fn route(live: &Live, path: &str) -> Option<Route> {
    if path == live.routes.audit_path {
        return Some(Route::Audit);
    }
    let prefix = live.routes.session_path.as_deref()?;
    let sid = path
        .strip_prefix(prefix)?
        .strip_prefix('.')?
        .strip_suffix(".log")?;
    Some(match check_session_id(sid) {
        Ok(()) => Route::Session(sid.to_string()),
        Err(why) => Route::BadSession(why),
    })
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
            return match (
                &live.blocked,
                sidecar.is_draining(),
                sidecar.upstream_refusal(),
            ) {
                (_, true, _) => text(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
                (Some(reason), _, _) => text(StatusCode::SERVICE_UNAVAILABLE, reason.clone()),
                (None, false, Some(refusal)) => text(StatusCode::SERVICE_UNAVAILABLE, refusal),
                (None, false, None) => text(StatusCode::OK, "ready"),
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
            return document(sidecar.metrics.render(), "text/plain; version=0.0.4");
        }
        (&Method::GET, "/status") => {
            let mut report = live.status();
            if let Some(refusal) = sidecar.upstream_refusal() {
                report.ready = false;
                report.upstream_refused = Some(refusal);
            }
            // Compact JSON: one line, as every answer.
            let mut body = serde_json::to_string(&report).unwrap_or_default();
            body.push('\n');
            return document(body, "application/json");
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
    if let Route::BadSession(why) = &route {
        return counted(
            &sidecar,
            "rejected",
            StatusCode::BAD_REQUEST,
            format!(
                "{why}: session events go to {}.<session id>.log, the id made of letters, digits, `.`, `_` and `-` (Teleport's are UUIDs)",
                live.routes.session_path.as_deref().unwrap_or_default()
            ),
        );
    }
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
        Route::Session(_) | Route::BadSession(_) => "session",
    };
    sidecar
        .metrics
        .inc("eventplug_events_received_total", &[("path", kind)]);
    let limit = usize::try_from(live.config.listen.max_body_bytes.get()).unwrap_or(usize::MAX);
    let deadline = live.config.listen.body_read_timeout;
    let reading = Limited::new(request.into_body(), limit).collect();
    let Ok(read) = tokio::time::timeout(deadline.get(), reading).await else {
        sidecar
            .metrics
            .inc("eventplug_events_total", &[("result", "rejected")]);
        sidecar.metrics.inc(
            "eventplug_connections_timed_out_total",
            &[("phase", "body")],
        );
        tracing::info!(timeout = %deadline, "a request body did not arrive within listen.bodyReadTimeout; answered 408 and closed the connection");
        let mut response = text(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the body did not arrive within listen.bodyReadTimeout ({deadline}): not accepted; send the whole event, then retry"
            ),
        );
        response.headers_mut().insert(
            hyper::header::CONNECTION,
            hyper::header::HeaderValue::from_static("close"),
        );
        return response;
    };
    let body = match read {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return counted(
                &sidecar,
                "rejected",
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
        Route::Audit | Route::BadSession(_) => live.routes.audit_url.clone(),
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
        return counted(
            &sidecar,
            "refused",
            StatusCode::SERVICE_UNAVAILABLE,
            reason.clone(),
        );
    }
    // Waits for instances are awaited; each plugin call runs on this worker and yields it at every
    // epoch tick, so even a call that runs to its timeout holds it a tick at a time.
    let processed = live.pipeline.process(&body).await;
    match processed {
        Err(InputError::TooLarge { size, limit }) => text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the event is {size} bytes, over the chain's limit of {limit} bytes"),
        ),
        Err(error) => {
            // Not an event: a chain failure under the chain's policy.
            let closed = guarding_plugin(&live).is_some();
            let key = format!("body:{}", eventplug_runtime::engine::module_digest(&body));
            if closed {
                fail(&sidecar, &live, &key, &target, body, &format!("{error}")).await
            } else {
                tracing::warn!(%error, "body is not an event; forwarded unchanged (no plugin is FailClosed)");
                let original = body.clone();
                deliver(&sidecar, &live, &target, body, &original, &key, "forwarded").await
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
                    let original = body.clone();
                    deliver(&sidecar, &live, &target, body, &original, &key, result).await
                }
                Verdict::Modified(bytes) => {
                    let result = replayed(&processed, "modified");
                    deliver(
                        &sidecar,
                        &live,
                        &target,
                        Bytes::from(bytes.clone()),
                        &body,
                        &key,
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
                    return counted(
                        &sidecar,
                        "failed",
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

/// One POST upstream, with its metrics. A refusal of the sidecar itself (401, 403, 404) is logged
/// and reported by `/readyz` and `/status` until the upstream accepts something again.
async fn send(sidecar: &Sidecar, live: &Live, url: &Uri, body: Bytes) -> Result<(), UpstreamError> {
    match live.upstream.post(url, body).await {
        Ok(took) => {
            sidecar
                .metrics
                .observe("eventplug_upstream_duration_seconds", &[], took);
            if sidecar.upstream_refusal().is_some() {
                tracing::info!(upstream = %url, "the upstream accepts the sidecar again");
                sidecar.set_upstream_refusal(None);
            }
            Ok(())
        }
        Err(error) => {
            let reason = match (&error, error.blame()) {
                (UpstreamError::Unreachable(_), _) => "unreachable",
                (UpstreamError::Timeout(_), _) => "timeout",
                (_, Blame::Event) => "refused_event",
                (_, Blame::Configuration) => "refused_config",
                (_, Blame::Transient) => "status",
            };
            sidecar
                .metrics
                .inc("eventplug_upstream_errors_total", &[("reason", reason)]);
            if error.blame() == Blame::Configuration {
                tracing::error!(%error, upstream = %url, "the upstream refuses the sidecar itself, so every event is refused alike: check upstream.cert and upstream.key (a client certificate it accepts) and upstream.auditUrl, upstream.sessionUrl and delivery.quarantineTag (paths it serves)");
                sidecar.set_upstream_refusal(Some(format!(
                    "{error}: the upstream refuses the sidecar itself; check upstream.cert, upstream.key and the upstream URLs"
                )));
            } else {
                tracing::warn!(%error, upstream = %url, "forward failed");
            }
            Err(error)
        }
    }
}

/// The answer to a forward the upstream did not accept and that is not counted against the event:
/// 503, retry.
fn not_delivered(error: &UpstreamError) -> Response<Full<Bytes>> {
    match error.blame() {
        Blame::Configuration => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{error}: the upstream refuses the sidecar, not this event (check upstream.cert, upstream.key and the upstream URLs); not delivered, retry"
            ),
        ),
        _ => text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{error}: not delivered, retry"),
        ),
    }
}

/// Forwards `body` (the event as the chain left it; `original` as it arrived) to the upstream; 200
/// only on the upstream's 200. A refusal that is the event's fault counts toward the poison policy.
async fn deliver(
    sidecar: &Sidecar,
    live: &Live,
    url: &Uri,
    body: Bytes,
    original: &Bytes,
    key: &str,
    result: &'static str,
) -> Response<Full<Bytes>> {
    match send(sidecar, live, url, body.clone()).await {
        Ok(()) => {
            sidecar
                .metrics
                .inc("eventplug_events_total", &[("result", result)]);
            sidecar.poison.settled(key);
            text(StatusCode::OK, "ok")
        }
        Err(error) if error.blame() == Blame::Event => {
            refused_event(sidecar, live, key, url, body, original, &error).await
        }
        Err(error) => {
            sidecar
                .metrics
                .inc("eventplug_events_total", &[("result", "failed")]);
            not_delivered(&error)
        }
    }
}

/// The upstream refused the event itself: 500 until `delivery.poisonAttempts`, then the poison
/// policy. `quarantine` sends the refused bytes (they passed the chain; with a FailClosed plugin in
/// the chain, the bodyless record), `forward` sends the original once more when the plugins
/// changed it, `block` keeps refusing.
async fn refused_event(
    sidecar: &Sidecar,
    live: &Live,
    key: &str,
    url: &Uri,
    refused: Bytes,
    original: &Bytes,
    error: &UpstreamError,
) -> Response<Full<Bytes>> {
    let why = format!("the upstream refused the event: {error}");
    let attempts = sidecar.poison.failed(key);
    let limit = live.config.delivery.poison_attempts;
    if attempts < limit {
        sidecar
            .metrics
            .inc("eventplug_events_total", &[("result", "failed")]);
        tracing::warn!(event = %key, attempts, %error, "the upstream refused the event");
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{why} (attempt {attempts} of {limit})"),
        );
    }
    let policy = live.config.delivery.poison_policy;
    poison_applied(sidecar, key, attempts, policy, &why);
    match policy {
        PoisonPolicy::Quarantine => {
            quarantine(sidecar, live, key, refused, original, &why, attempts).await
        }
        PoisonPolicy::Forward if refused != *original => {
            match send(sidecar, live, url, original.clone()).await {
                Ok(()) => {
                    sidecar
                        .metrics
                        .inc("eventplug_events_total", &[("result", "forwarded")]);
                    sidecar.poison.settled(key);
                    text(StatusCode::OK, "ok")
                }
                Err(error) => blocked(
                    sidecar,
                    &format!("{why}; as it arrived too: {error}"),
                    attempts,
                ),
            }
        }
        PoisonPolicy::Forward | PoisonPolicy::Block => blocked(sidecar, &why, attempts),
    }
}

fn policy_name(policy: PoisonPolicy) -> &'static str {
    match policy {
        PoisonPolicy::Quarantine => "quarantine",
        PoisonPolicy::Forward => "forward",
        PoisonPolicy::Block => "block",
    }
}

fn poison_applied(sidecar: &Sidecar, key: &str, attempts: u32, policy: PoisonPolicy, why: &str) {
    let name = policy_name(policy);
    sidecar
        .metrics
        .inc("eventplug_poison_events_total", &[("policy", name)]);
    tracing::error!(event = %key, attempts, policy = name, reason = %why, "poison event: failed {attempts} times");
}

fn blocked(sidecar: &Sidecar, why: &str, attempts: u32) -> Response<Full<Bytes>> {
    counted(
        sidecar,
        "failed",
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("{why}; blocked as a poison event after {attempts} attempts"),
    )
}

/// Sends a poison event to the quarantine tag: `candidate` (bytes that may leave), or the bodyless
/// record when a FailClosed plugin guards the chain. When the upstream refuses the bytes as the
/// event's fault, the record goes instead; when it refuses the record too, or the quarantine is
/// unreachable, the answer is 503 and every redelivery tries the quarantine again (the stream
/// waits, as with `block`, until the upstream takes it).
async fn quarantine(
    sidecar: &Sidecar,
    live: &Live,
    key: &str,
    candidate: Bytes,
    original: &Bytes,
    why: &str,
    attempts: u32,
) -> Response<Full<Bytes>> {
    let guard = guarding_plugin(live);
    let guard = guard.as_deref();
    let record = || quarantine_record(key, original, why, attempts, guard);
    let url = &live.routes.quarantine_url;
    let mut outcome = match guard {
        Some(_) => send(sidecar, live, url, record()).await,
        None => send(sidecar, live, url, candidate).await,
    };
    if guard.is_none()
        && let Err(error) = &outcome
        && error.blame() == Blame::Event
    {
        tracing::warn!(event = %key, %error, "the quarantine refused the event; quarantining a record of it instead");
        outcome = send(sidecar, live, url, record()).await;
    }
    match outcome {
        Ok(()) => {
            sidecar
                .metrics
                .inc("eventplug_events_total", &[("result", "quarantined")]);
            sidecar.poison.settled(key);
            text(StatusCode::OK, "quarantined")
        }
        Err(error) => {
            sidecar
                .metrics
                .inc("eventplug_quarantine_failures_total", &[]);
            sidecar
                .metrics
                .inc("eventplug_events_total", &[("result", "failed")]);
            tracing::error!(event = %key, %error, "the quarantine did not take the poison event; it stays unacknowledged and is tried again on redelivery");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "{why}; the quarantine did not take it either ({error}): not delivered, retry"
                ),
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
        return counted(
            sidecar,
            "failed",
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{why} (attempt {attempts} of {limit})"),
        );
    }
    let policy = live.config.delivery.poison_policy;
    poison_applied(sidecar, key, attempts, policy, why);
    match policy {
        // With a FailClosed plugin in the chain the original may hold what it exists to remove:
        // `quarantine` then keeps a record of the event instead of the event.
        PoisonPolicy::Quarantine => {
            quarantine(
                sidecar,
                live,
                key,
                original.clone(),
                &original,
                why,
                attempts,
            )
            .await
        }
        // The config refuses `forward` beside a FailClosed plugin, but the running chain may still
        // hold one (a last good version kept through a reload): never send the original past it.
        PoisonPolicy::Forward if guarding_plugin(live).is_some() => blocked(
            sidecar,
            &format!("{why}; not forwarded: a FailClosed plugin still runs in the chain"),
            attempts,
        ),
        PoisonPolicy::Forward => match send(sidecar, live, target, original).await {
            Ok(()) => {
                sidecar
                    .metrics
                    .inc("eventplug_events_total", &[("result", "forwarded")]);
                sidecar.poison.settled(key);
                text(StatusCode::OK, "ok")
            }
            Err(error) if error.blame() == Blame::Event => blocked(
                sidecar,
                &format!("{why}; the upstream refused it too: {error}"),
                attempts,
            ),
            Err(error) => not_delivered(&error),
        },
        PoisonPolicy::Block => blocked(sidecar, why, attempts),
    }
}

/// The first plugin of the chain that runs now (not of the config: a last good version may differ)
/// and guards it, if any.
fn guarding_plugin(live: &Live) -> Option<String> {
    live.pipeline
        .plugins()
        .find(|p| p.settings.guards_the_chain())
        .map(|p| p.settings.name.clone())
}

/// The longest failure reason a quarantine record carries: a plugin writes its error text, and a
/// record must not become a way to carry the event out.
const MAX_RECORD_REASON_BYTES: usize = 256;

/// What is quarantined in place of an event that must not leave unfiltered, or that the quarantine
/// refused: its identity, size and sha256, why it failed, and which FailClosed plugin guards the
/// chain (if any); never its body.
fn quarantine_record(
    key: &str,
    original: &[u8],
    why: &str,
    attempts: u32,
    guard: Option<&str>,
) -> Bytes {
    let record = serde_json::json!({
        "eventplug_quarantine": "record",
        "event_key": key,
        "body_sha256": eventplug_runtime::engine::module_digest(original),
        "body_bytes": original.len(),
        "reason": cut_at_char(why, MAX_RECORD_REASON_BYTES),
        "attempts": attempts,
        "fail_closed_plugin": guard,
    });
    Bytes::from(record.to_string())
}

/// A one-line answer for an event whose final result is `result`, counted in
/// `eventplug_events_total`.
fn counted(
    sidecar: &Sidecar,
    result: &str,
    status: StatusCode,
    body: impl AsRef<str>,
) -> Response<Full<Bytes>> {
    sidecar
        .metrics
        .inc("eventplug_events_total", &[("result", result)]);
    text(status, body)
}

/// `text` cut to at most `max` bytes on a character boundary.
fn cut_at_char(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    &text[..cut]
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

#[cfg(test)]
mod tests {
    use super::{MAX_ANSWER_BYTES, check_session_id, one_line};

    #[test]
    fn answers_are_one_bounded_line() {
        assert_eq!(
            one_line(
                "error: expected `)`\n --> m.wat:3:5\n  |\n3 |     i32.const oops\r\n  |  ^\n"
            ),
            "error: expected `)` --> m.wat:3:5 | 3 |     i32.const oops |  ^"
        );
        assert_eq!(one_line("a\u{0}b\tc"), "a b c");
        assert_eq!(one_line("plain"), "plain");
        let long = one_line(&"é".repeat(5000));
        assert!(long.len() <= MAX_ANSWER_BYTES + '…'.len_utf8() && long.ends_with('…'));
    }

    #[test]
    fn session_ids_are_uuid_like_and_never_encoded_or_climbing() {
        for good in ["0b6f1c9e-5e0a-4b9f-9d43-1a2b3c4d5e6f", "s-77", "a.b_c-D9"] {
            assert_eq!(check_session_id(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("x%2f..%2fadmin", "percent-encoded"),
            ("a%00", "percent-encoded"),
            ("..%2f..", "percent-encoded"),
            ("a..b", "`..`"),
            ("..", "`..`"),
            ("a/b", "'/'"),
            ("a b", "' '"),
            ("é", "'é'"),
        ] {
            let error = check_session_id(bad).expect_err(bad);
            assert!(error.contains(why), "{bad}: {error}");
        }
        assert!(check_session_id(&"a".repeat(129)).is_err());
    }
}
