//! One request from event-handler: route, read the body, run the chain, deliver, answer. The answer
//! is 200 only when the upstream accepted the event or a plugin deliberately skipped it.

use super::Sidecar;
use super::live::Live;
use super::response::text;
use super::upstream::{Blame, UpstreamError};
use crate::metrics::{
    PathLabel, PhaseLabel, PluginReasonLabels, PluginStepLabels, PolicyLabel, ReasonLabel,
};
use bytes::Bytes;
use eventplug_contract::PoisonPolicy;
use eventplug_runtime::engine::CallError;
use eventplug_runtime::pipeline::{InputError, Processed, StepResult, Verdict, parse_rfc3339};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, Uri};
use std::sync::Arc;

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

/// What became of one request. `decide` makes it; `respond` turns it into the status code, the
/// one-line body and the events metric, in one place.
#[derive(Debug)]
pub(crate) enum Answer {
    /// 200: the upstream accepted the event; `result`: forwarded, modified or replayed.
    Delivered(&'static str),
    /// 200: a plugin skipped it.
    Skipped {
        /// The plugin.
        plugin: String,
        /// A redelivery of an event skipped before.
        replayed: bool,
    },
    /// 200: the poison policy sent it (or its record) to the quarantine.
    Quarantined,
    /// 404: not an ingest path. Not an event, so not counted.
    NoSuchPath(String),
    /// 405: not a POST. Not counted.
    WrongMethod(String),
    /// 400 or 413: not an event the sidecar takes; counted `rejected`.
    Rejected(StatusCode, String),
    /// 408: the body did not arrive in time; counted `rejected`; the connection is closed.
    BodyTimedOut(String),
    /// 503: the chain cannot run now (a plugin is not loaded); counted `refused`.
    Refused(String),
    /// 503: not delivered this time (upstream, load, effects), event-handler retries; counted
    /// `failed`.
    Retry(String),
    /// 500: the event failed (a FailClosed plugin, the upstream refused it, a poison event
    /// blocked); counted `failed`.
    Failed(String),
}

impl Answer {
    /// Status code, `eventplug_events_total` result (if counted) and the answer's text.
    fn parts(self) -> (StatusCode, Option<&'static str>, String) {
        match self {
            Self::Delivered(result) => (StatusCode::OK, Some(result), "ok".into()),
            Self::Skipped { plugin, replayed } => (
                StatusCode::OK,
                Some(if replayed { "replayed" } else { "skipped" }),
                format!("skipped by {plugin}"),
            ),
            Self::Quarantined => (StatusCode::OK, Some("quarantined"), "quarantined".into()),
            Self::NoSuchPath(why) => (StatusCode::NOT_FOUND, None, why),
            Self::WrongMethod(why) => (StatusCode::METHOD_NOT_ALLOWED, None, why),
            Self::Rejected(status, why) => (status, Some("rejected"), why),
            Self::BodyTimedOut(why) => (StatusCode::REQUEST_TIMEOUT, Some("rejected"), why),
            Self::Refused(why) => (StatusCode::SERVICE_UNAVAILABLE, Some("refused"), why),
            Self::Retry(why) => (StatusCode::SERVICE_UNAVAILABLE, Some("failed"), why),
            Self::Failed(why) => (StatusCode::INTERNAL_SERVER_ERROR, Some("failed"), why),
        }
    }
}

/// The one place an answer becomes a response and a count.
fn respond(sidecar: &Sidecar, answer: Answer) -> Response<Full<Bytes>> {
    let header = match &answer {
        Answer::WrongMethod(_) => Some((hyper::header::ALLOW, "POST")),
        Answer::BodyTimedOut(_) => Some((hyper::header::CONNECTION, "close")),
        _ => None,
    };
    let (status, result, body) = answer.parts();
    if let Some(result) = result {
        sidecar.metrics.event(result);
    }
    let mut response = text(status, body);
    if let Some((name, value)) = header {
        response
            .headers_mut()
            .insert(name, hyper::header::HeaderValue::from_static(value));
    }
    response
}

/// Answers one request on the ingest listener.
pub(super) async fn handle(
    sidecar: Arc<Sidecar>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let answer = decide(&sidecar, request).await;
    respond(&sidecar, answer)
}

/// Decides what becomes of one request: route, read, run the chain, deliver, carry out effects.
async fn decide(sidecar: &Sidecar, request: Request<Incoming>) -> Answer {
    let live = sidecar.live();
    let path = request.uri().path().to_string();
    let Some(route) = route(&live, &path) else {
        let sessions = live
            .routes
            .session_path
            .as_deref()
            .map(|p| format!(" and {p}.<session id>.log"))
            .unwrap_or_default();
        return Answer::NoSuchPath(format!(
            "no such path {path}: events go to {}{sessions}; health, readiness, metrics and status are on admin.address ({})",
            live.routes.audit_path, live.config.admin.address
        ));
    };
    if let Route::BadSession(why) = &route {
        return Answer::Rejected(
            StatusCode::BAD_REQUEST,
            format!(
                "{why}: session events go to {}.<session id>.log, the id made of letters, digits, `.`, `_` and `-` (Teleport's are UUIDs)",
                live.routes.session_path.as_deref().unwrap_or_default()
            ),
        );
    }
    if request.method() != Method::POST {
        return Answer::WrongMethod(format!("{path} takes POST with one JSON event"));
    }
    let kind = match route {
        Route::Audit => "audit",
        Route::Session(_) | Route::BadSession(_) => "session",
    };
    sidecar
        .metrics
        .events_received
        .get_or_create(&PathLabel { path: kind })
        .inc();
    let limit = usize::try_from(live.config.listen.max_body_bytes.get()).unwrap_or(usize::MAX);
    let deadline = live.config.listen.body_read_timeout;
    let reading = Limited::new(request.into_body(), limit).collect();
    let Ok(read) = tokio::time::timeout(deadline.get(), reading).await else {
        sidecar
            .metrics
            .connections_timed_out
            .get_or_create(&PhaseLabel { phase: "body" })
            .inc();
        tracing::info!(timeout = %deadline, "a request body did not arrive within listen.bodyReadTimeout; answered 408 and closed the connection");
        return Answer::BodyTimedOut(format!(
            "the body did not arrive within listen.bodyReadTimeout ({deadline}): not accepted; send the whole event, then retry"
        ));
    };
    let body = match read {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            return Answer::Rejected(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the event is over {limit} bytes: raise listen.maxBodyBytes in the sidecar config"
                ),
            );
        }
        Err(error) => {
            return Answer::Rejected(
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
                return Answer::Rejected(
                    StatusCode::BAD_REQUEST,
                    format!("session id {sid:?} does not make a URL"),
                );
            }
        },
    };
    if let Some(reason) = &live.blocked {
        return Answer::Refused(reason.clone());
    }
    // Waits for instances are awaited; each plugin call runs on this worker and yields it at every
    // epoch tick, so even a call that runs to its timeout holds it a tick at a time.
    let processed = live.pipeline.process(&body).await;
    let processed = match processed {
        Err(InputError::TooLarge { size, limit }) => {
            return Answer::Rejected(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the event is {size} bytes, over the chain's limit of {limit} bytes"),
            );
        }
        Err(error) => {
            // Not an event: a chain failure under the chain's policy.
            let key = format!("body:{}", eventplug_runtime::engine::module_digest(&body));
            if guarding_plugin(&live).is_some() {
                return fail(sidecar, &live, &key, &target, body, &format!("{error}")).await;
            }
            tracing::warn!(%error, "body is not an event; forwarded unchanged (no plugin is FailClosed)");
            let original = body.clone();
            return deliver(sidecar, &live, &target, body, &original, &key, "forwarded").await;
        }
        Ok(processed) => processed,
    };
    record(sidecar, &live, &processed);
    // Failed attempts are counted per event identity and bytes.
    let identity = processed.identity.key();
    let key = format!(
        "{identity}#{}",
        eventplug_runtime::engine::module_digest(&body)
    );
    // Delivered before, its answer then waited too long for its lock effects: the upstream has
    // it, so only the effects are waited on again.
    let upstream_has_it = processed.replayed
        && sidecar
            .effects
            .already_handed_over(&key, &processed.outcome.effects);
    let answer = match &processed.outcome.verdict {
        Verdict::Forward | Verdict::Modified(_) if upstream_has_it => {
            sidecar.poison.settled(&key);
            Answer::Delivered("replayed")
        }
        Verdict::Forward => {
            let result = replayed(&processed, "forwarded");
            let original = body.clone();
            deliver(sidecar, &live, &target, body, &original, &key, result).await
        }
        Verdict::Modified(bytes) => {
            let result = replayed(&processed, "modified");
            let edited = Bytes::from(bytes.clone());
            deliver(sidecar, &live, &target, edited, &body, &key, result).await
        }
        Verdict::Skip { plugin } => {
            sidecar.poison.settled(&key);
            Answer::Skipped {
                plugin: plugin.clone(),
                replayed: processed.replayed,
            }
        }
        Verdict::Fail {
            plugin,
            error: error @ (CallError::Busy { .. } | CallError::Instantiate(_)),
        } => {
            // Load, not the event's fault: retry without counting towards poison.
            return Answer::Retry(format!(
                "plugin {plugin} could not take the event (FailClosed): {error}; retry"
            ));
        }
        Verdict::Fail { plugin, error } => {
            let why = format!("plugin {plugin} failed (FailClosed): {error}");
            return fail(sidecar, &live, &key, &target, body, &why).await;
        }
    };
    if let Answer::Delivered(_) = answer
        && !upstream_has_it
        && let Some((seconds, nanos)) = parse_rfc3339(&processed.identity.time)
    {
        sidecar
            .metrics
            .forwarded_event_time(seconds as f64 + f64::from(nanos) / 1e9);
    }
    if !matches!(answer, Answer::Delivered(_) | Answer::Skipped { .. }) {
        return answer;
    }
    // The event's fate is final once it was delivered or skipped: hand its effects to the workers
    // (each once, by key, whichever delivery gets here first) and wait for the lock effects.
    let outcome = &processed.outcome;
    if outcome.effects.is_empty() && outcome.shadow_effects.is_empty() {
        return answer;
    }
    // Alerts and shadow records are handed over by the first final delivery only; lock effects
    // by every one, since a redelivery waits on them again.
    let first = processed.claim_effects();
    match sidecar
        .effects
        .carry_out(
            &key,
            &outcome.effects,
            first.then_some(outcome.shadow_effects.as_slice()),
            live.config.delivery.effect_wait.get(),
        )
        .await
    {
        Ok(()) => answer,
        Err(pending) => {
            tracing::warn!(event = %key, %pending, "the event was delivered but its lock effects are not carried out yet: answered 503 so it is redelivered");
            Answer::Retry(format!(
                "{pending}: the event is not acknowledged until they are; retry"
            ))
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
                .upstream_duration
                .observe(took.as_secs_f64());
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
                .upstream_errors
                .get_or_create(&ReasonLabel { reason })
                .inc();
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
fn not_delivered(error: &UpstreamError) -> Answer {
    Answer::Retry(match error.blame() {
        Blame::Configuration => format!(
            "{error}: the upstream refuses the sidecar, not this event (check upstream.cert, upstream.key and the upstream URLs); not delivered, retry"
        ),
        _ => format!("{error}: not delivered, retry"),
    })
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
) -> Answer {
    match send(sidecar, live, url, body.clone()).await {
        Ok(()) => {
            sidecar.poison.settled(key);
            Answer::Delivered(result)
        }
        Err(error) if error.blame() == Blame::Event => {
            refused_event(sidecar, live, key, url, body, original, &error).await
        }
        Err(error) => not_delivered(&error),
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
) -> Answer {
    let why = format!("the upstream refused the event: {error}");
    let attempts = sidecar.poison.failed(key);
    let limit = live.config.delivery.poison_attempts;
    if attempts < limit {
        tracing::warn!(event = %key, attempts, %error, "the upstream refused the event");
        return Answer::Failed(format!("{why} (attempt {attempts} of {limit})"));
    }
    let policy = live.config.delivery.poison_policy;
    poison_applied(sidecar, key, attempts, policy, &why);
    match policy {
        PoisonPolicy::Quarantine => {
            quarantine(sidecar, live, key, refused, original, &why, attempts).await
        }
        // As in `fail`: never send the original past a FailClosed plugin that still runs.
        PoisonPolicy::Forward if refused != *original && guarding_plugin(live).is_some() => {
            blocked(
                &format!(
                    "{why}; the original not forwarded: a FailClosed plugin runs in the chain"
                ),
                attempts,
            )
        }
        PoisonPolicy::Forward if refused != *original => {
            match send(sidecar, live, url, original.clone()).await {
                Ok(()) => {
                    sidecar.poison.settled(key);
                    Answer::Delivered("forwarded")
                }
                Err(error) => blocked(&format!("{why}; as it arrived too: {error}"), attempts),
            }
        }
        PoisonPolicy::Forward | PoisonPolicy::Block => blocked(&why, attempts),
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
        .poison_events
        .get_or_create(&PolicyLabel { policy: name })
        .inc();
    tracing::error!(event = %key, attempts, policy = name, reason = %why, "poison event: failed {attempts} times");
}

fn blocked(why: &str, attempts: u32) -> Answer {
    Answer::Failed(format!(
        "{why}; blocked as a poison event after {attempts} attempts"
    ))
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
) -> Answer {
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
            sidecar.poison.settled(key);
            Answer::Quarantined
        }
        Err(error) => {
            sidecar.metrics.quarantine_failures.inc();
            tracing::error!(event = %key, %error, "the quarantine did not take the poison event; it stays unacknowledged and is tried again on redelivery");
            Answer::Retry(format!(
                "{why}; the quarantine did not take it either ({error}): not delivered, retry"
            ))
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
) -> Answer {
    let attempts = sidecar.poison.failed(key);
    let limit = live.config.delivery.poison_attempts;
    if attempts < limit {
        return Answer::Failed(format!("{why} (attempt {attempts} of {limit})"));
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
            &format!("{why}; not forwarded: a FailClosed plugin still runs in the chain"),
            attempts,
        ),
        PoisonPolicy::Forward => match send(sidecar, live, target, original).await {
            Ok(()) => {
                sidecar.poison.settled(key);
                Answer::Delivered("forwarded")
            }
            Err(error) if error.blame() == Blame::Event => blocked(
                &format!("{why}; the upstream refused it too: {error}"),
                attempts,
            ),
            Err(error) => not_delivered(&error),
        },
        PoisonPolicy::Block => blocked(why, attempts),
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
fn record(sidecar: &Sidecar, live: &Live, processed: &Processed) {
    if processed.replayed {
        return;
    }
    for step in &processed.outcome.steps {
        let plugin = live.plugin_label(&step.plugin);
        let mode = if step.shadow { "shadow" } else { "enforce" };
        let result = match &step.result {
            StepResult::NotSelected => "not_selected",
            StepResult::Forwarded => "forwarded",
            StepResult::Modified(_) => "modified",
            StepResult::Skipped => "skipped",
            StepResult::Failed(error) => {
                sidecar
                    .metrics
                    .plugin_failures
                    .get_or_create(&PluginReasonLabels {
                        plugin: plugin.clone(),
                        reason: error.reason(),
                    })
                    .inc();
                tracing::warn!(plugin = %step.plugin, mode, %error, "plugin failed on an event");
                "failed"
            }
        };
        sidecar
            .metrics
            .plugin_events
            .get_or_create(&PluginStepLabels {
                plugin: plugin.clone(),
                mode,
                result,
            })
            .inc();
        if result != "not_selected" {
            sidecar
                .metrics
                .plugin_call(&plugin, step.elapsed, step.waited);
        }
        for log in &step.logs {
            tracing::info!(plugin = %step.plugin, level = ?log.level, "{}", log.message);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::check_session_id;

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
