//! The plugin chain end to end: JSON in, verdict out, through real wasm plugins.

mod common;

use common::{
    Gate, Harness, alert_plugin, branching_plugin, constant_plugin, login_event, plugin_wat,
    session_event, set_response, verdict,
};
use eventplug_contract::{FailurePolicy, Mode};
use eventplug_proto::v1 as pb;
use eventplug_runtime::abi::EffectKind;
use eventplug_runtime::engine::CallError;
use eventplug_runtime::pipeline::{InputError, Pipeline, PipelineSettings, StepResult, Verdict};
use std::sync::atomic::Ordering;

fn trapping_plugin() -> String {
    plugin_wat("", "unreachable", "")
}

#[tokio::test]
async fn an_event_no_plugin_changes_is_forwarded_as_its_original_bytes() {
    let harness = Harness::new();
    let pipeline = harness.pipeline(&[harness.settings(
        "pass",
        &constant_plugin(&pb::HandleEventResponse::default()),
    )]);
    let processed = pipeline
        .process(&login_event("a"))
        .await
        .expect("valid event");
    assert_eq!(processed.outcome.verdict, Verdict::Forward);
    assert_eq!(processed.outcome.steps[0].result, StepResult::Forwarded);
    assert_eq!(processed.identity.event_type, "user.login");
}

#[tokio::test]
async fn edits_change_only_what_they_touch_byte_for_byte() {
    let harness = Harness::new();
    let pipeline = harness.pipeline(&[harness.settings(
        "annotate",
        &constant_plugin(&set_response("seen-by-us", r#""yes""#)),
    )]);
    // Odd spacing, an escaped string and a number form a re-encoder would normalise.
    let event = br#"{ "event" : "access_request.create", "uid":"u1", "reason":"caf\u00e9 \"now\"", "ei":1.50E1 ,"addr.remote":"1.2.3.4:5" }"#;
    let processed = pipeline.process(event).await.expect("valid");
    let Verdict::Modified(bytes) = &processed.outcome.verdict else {
        panic!("expected Modified, got {:?}", processed.outcome.verdict)
    };
    assert_eq!(
        std::str::from_utf8(bytes).expect("utf-8"),
        r#"{ "event" : "access_request.create", "uid":"u1", "reason":"caf\u00e9 \"now\"", "ei":1.50E1 ,"addr.remote":"1.2.3.4:5","seen-by-us":"yes" }"#
    );
}

#[tokio::test]
async fn a_plugin_is_not_called_for_event_types_its_selector_does_not_take() {
    let harness = Harness::new();
    let mut settings = harness.settings("logins-only", &trapping_plugin());
    settings.events = vec!["user.login".into()];
    settings.failure_policy = FailurePolicy::FailClosed;
    let pipeline = harness.pipeline(&[settings]);
    let processed = pipeline.process(&session_event("s")).await.expect("valid");
    assert_eq!(processed.outcome.verdict, Verdict::Forward);
    assert_eq!(processed.outcome.steps[0].result, StepResult::NotSelected);
    let plugin = pipeline.plugins().next().expect("one plugin");
    assert_eq!(
        plugin.pool.stats().calls.load(Ordering::Relaxed),
        0,
        "the plugin was called"
    );
    let processed = pipeline.process(&login_event("l")).await.expect("valid");
    assert!(matches!(processed.outcome.verdict, Verdict::Fail { .. }));
}

#[tokio::test]
async fn skip_stops_the_chain_and_names_the_plugin() {
    let harness = Harness::new();
    let skip = harness.settings("skipper", &constant_plugin(&verdict(pb::Verdict::Skip)));
    let mut after = harness.settings("after", &trapping_plugin());
    after.priority = 10;
    let pipeline = harness.pipeline(&[after, skip]);
    let processed = pipeline.process(&login_event("k")).await.expect("valid");
    assert_eq!(
        processed.outcome.verdict,
        Verdict::Skip {
            plugin: "skipper".into()
        }
    );
    assert_eq!(
        processed.outcome.steps.len(),
        1,
        "the plugin after a skip did not run"
    );
}

#[tokio::test]
async fn plugins_run_in_priority_order_and_each_sees_the_edits_before_it() {
    let harness = Harness::new();
    let mut first = harness.settings(
        "first",
        &constant_plugin(&set_response("stage", r#""one""#)),
    );
    first.priority = -5;
    // The second plugin skips unless it sees the first one's edit.
    let second = harness.settings(
        "second",
        &branching_plugin(
            "",
            "one",
            &set_response("stage2", "true"),
            &verdict(pb::Verdict::Skip),
            "",
        ),
    );
    let pipeline = harness.pipeline(&[second, first]);
    let processed = pipeline
        .process(br#"{"event":"x","uid":"p"}"#)
        .await
        .expect("valid");
    let Verdict::Modified(bytes) = &processed.outcome.verdict else {
        panic!("{:?}", processed.outcome.verdict)
    };
    assert_eq!(
        bytes,
        br#"{"event":"x","uid":"p","stage":"one","stage2":true}"#
    );
}

#[tokio::test]
async fn failure_policies_decide_what_a_failing_plugin_means() {
    let harness = Harness::new();
    let annotate =
        |name: &str| harness.settings(name, &constant_plugin(&set_response("after", "1")));
    let mut open = harness.settings("open", &trapping_plugin());
    open.failure_policy = FailurePolicy::FailOpen;
    let mut tail = annotate("tail");
    tail.priority = 1;
    let pipeline = harness.pipeline(&[open, tail]);
    let processed = pipeline.process(br#"{"event":"x"}"#).await.expect("valid");
    assert!(matches!(
        &processed.outcome.steps[0].result,
        StepResult::Failed(CallError::Trap(_))
    ));
    assert_eq!(
        processed.outcome.verdict,
        Verdict::Modified(br#"{"event":"x","after":1}"#.to_vec())
    );

    let mut closed = harness.settings("closed", &trapping_plugin());
    closed.failure_policy = FailurePolicy::FailClosed;
    let pipeline = harness.pipeline(&[closed]);
    let processed = pipeline
        .process(br#"{"event":"x","uid":"fc"}"#)
        .await
        .expect("valid");
    assert!(
        matches!(&processed.outcome.verdict, Verdict::Fail { plugin, error: CallError::Trap(_) } if plugin == "closed")
    );
    // A failure is not cached: the next delivery runs the plugin again.
    let again = pipeline
        .process(br#"{"event":"x","uid":"fc"}"#)
        .await
        .expect("valid");
    assert!(!again.replayed);
}

#[tokio::test]
async fn an_error_verdict_is_a_failure_with_the_plugin_s_message() {
    let harness = Harness::new();
    let response = pb::HandleEventResponse {
        verdict: pb::Verdict::Error as i32,
        error: "no user field".into(),
        ..Default::default()
    };
    let mut settings = harness.settings("picky", &constant_plugin(&response));
    settings.failure_policy = FailurePolicy::FailClosed;
    let pipeline = harness.pipeline(&[settings]);
    let processed = pipeline.process(br#"{"event":"x"}"#).await.expect("valid");
    assert_eq!(
        processed.outcome.verdict,
        Verdict::Fail {
            plugin: "picky".into(),
            error: CallError::Plugin("no user field".into())
        }
    );
}

#[tokio::test]
async fn shadow_plugins_are_recorded_but_not_applied() {
    let harness = Harness::new();
    let mut skip = harness.settings("shadow-skip", &constant_plugin(&verdict(pb::Verdict::Skip)));
    skip.mode = Mode::Shadow;
    let mut edit = harness.settings("shadow-edit", &constant_plugin(&set_response("x", "1")));
    edit.mode = Mode::Shadow;
    let mut failing = harness.settings("shadow-fail", &trapping_plugin());
    failing.mode = Mode::Shadow;
    failing.failure_policy = FailurePolicy::FailClosed;
    let pipeline = harness.pipeline(&[skip, edit, failing]);
    let processed = pipeline.process(&login_event("sh")).await.expect("valid");
    assert_eq!(processed.outcome.verdict, Verdict::Forward);
    let results: Vec<_> = processed
        .outcome
        .steps
        .iter()
        .map(|s| (s.shadow, s.result.clone()))
        .collect();
    assert_eq!(results[0], (true, StepResult::Skipped));
    assert_eq!(results[1], (true, StepResult::Modified(1)));
    assert!(matches!(results[2], (true, StepResult::Failed(_))));
}

#[tokio::test]
async fn effects_come_back_once_per_event_and_a_redelivery_replays_the_verdict() {
    let harness = Harness::new();
    let pipeline = harness.pipeline(&[harness.settings("alerter", &alert_plugin())]);
    let event = login_event("once");
    let first = pipeline.process(&event).await.expect("valid");
    assert!(!first.replayed);
    assert_eq!(first.outcome.effects.len(), 1);
    let EffectKind::Alert(alert) = &first.outcome.effects[0].kind else {
        panic!("an alert")
    };
    assert_eq!(alert.message, "failed login");
    assert_eq!(alert.metadata["rule"], "brute-force");
    assert_eq!(first.outcome.effects[0].plugin, "alerter");

    let second = pipeline.process(&event).await.expect("valid");
    assert!(second.replayed, "the redelivery reuses the first outcome");
    let plugin = pipeline.plugins().next().expect("plugin");
    assert_eq!(
        plugin.pool.stats().calls.load(Ordering::Relaxed),
        1,
        "the plugin ran once"
    );

    // Same uid but a different body is not a redelivery of the same event.
    let changed = String::from_utf8(event)
        .expect("utf-8")
        .replace("mallory", "trudy");
    assert!(
        !pipeline
            .process(changed.as_bytes())
            .await
            .expect("valid")
            .replayed
    );
    // Events without a uid are identified by type, time, index and session id.
    let no_uid = br#"{"event":"session.data","time":"2024-02-23T18:56:50Z","ei":4,"sid":"s1"}"#;
    assert!(!pipeline.process(no_uid).await.expect("valid").replayed);
    assert!(pipeline.process(no_uid).await.expect("valid").replayed);
    let next_index = br#"{"event":"session.data","time":"2024-02-23T18:56:50Z","ei":5,"sid":"s1"}"#;
    assert!(!pipeline.process(next_index).await.expect("valid").replayed);
}

#[tokio::test]
async fn the_verdict_cache_is_bounded() {
    let harness = Harness::new();
    let pipeline = Pipeline::new(
        vec![harness.load(&harness.settings(
            "pass",
            &constant_plugin(&pb::HandleEventResponse::default()),
        ))],
        PipelineSettings {
            verdict_cache_entries: 3,
            ..PipelineSettings::default()
        },
    );
    for n in 0..10 {
        pipeline
            .process(&login_event(&format!("bounded-{n}")))
            .await
            .expect("valid");
    }
    assert!(
        !pipeline
            .process(&login_event("bounded-0"))
            .await
            .expect("valid")
            .replayed,
        "evicted"
    );
    assert!(
        pipeline
            .process(&login_event("bounded-9"))
            .await
            .expect("valid")
            .replayed,
        "kept"
    );
}

#[tokio::test]
async fn shadow_effects_are_recorded_apart_from_real_ones() {
    let harness = Harness::new();
    let mut settings = harness.settings("alerter", &alert_plugin());
    settings.mode = Mode::Shadow;
    let pipeline = harness.pipeline(&[settings]);
    let processed = pipeline.process(&login_event("se")).await.expect("valid");
    assert!(processed.outcome.effects.is_empty());
    assert_eq!(processed.outcome.shadow_effects.len(), 1);
}

#[tokio::test]
async fn malformed_input_is_an_error_value_naming_the_problem() {
    let harness = Harness::new();
    let pipeline = Pipeline::new(
        vec![harness.load(&harness.settings(
            "pass",
            &constant_plugin(&pb::HandleEventResponse::default()),
        ))],
        PipelineSettings {
            max_event_bytes: 1024,
            ..PipelineSettings::default()
        },
    );
    assert!(
        matches!(pipeline.process(b"{\"event\":").await, Err(InputError::Malformed(m)) if m.contains("EOF"))
    );
    assert!(matches!(
        pipeline.process(b"not json").await,
        Err(InputError::Malformed(_))
    ));
    assert!(matches!(
        pipeline.process(b"").await,
        Err(InputError::Malformed(_))
    ));
    assert_eq!(
        pipeline.process(b"[1,2]").await.err(),
        Some(InputError::NotObject)
    );
    assert_eq!(
        pipeline.process(b" \"text\"").await.err(),
        Some(InputError::NotObject)
    );
    assert!(matches!(
        pipeline.process(b"{\"a\":1} trailing").await,
        Err(InputError::Malformed(_))
    ));
    assert!(matches!(
        pipeline.process(&[b'{', 0xff, b'}']).await,
        Err(InputError::Malformed(_))
    ));
    let deep = "[".repeat(200) + &"]".repeat(200);
    assert!(matches!(
        pipeline
            .process(format!("{{\"a\":{deep}}}").as_bytes())
            .await,
        Err(InputError::Malformed(_))
    ));
    let big = format!(r#"{{"event":"print","data":"{}"}}"#, "x".repeat(2000));
    assert_eq!(
        pipeline.process(big.as_bytes()).await.err(),
        Some(InputError::TooLarge {
            size: big.len(),
            limit: 1024
        })
    );
}

#[tokio::test]
async fn bad_responses_and_bad_edits_are_plugin_failures() {
    let harness = Harness::new();
    let bad_edit = pb::HandleEventResponse {
        edits: vec![pb::Edit {
            path: vec!["user".into(), "inner".into()],
            op: 0,
            value_json: "1".into(),
        }],
        ..Default::default()
    };
    let mut settings = harness.settings("bad-edit", &constant_plugin(&bad_edit));
    settings.failure_policy = FailurePolicy::FailClosed;
    let pipeline = harness.pipeline(&[settings]);
    let processed = pipeline.process(&login_event("be")).await.expect("valid");
    let Verdict::Fail {
        error: CallError::BadOutput(message),
        ..
    } = &processed.outcome.verdict
    else {
        panic!("{:?}", processed.outcome.verdict)
    };
    assert!(message.contains("holds a string"), "{message}");

    let unknown = pb::HandleEventResponse {
        verdict: 9,
        ..Default::default()
    };
    let mut settings = harness.settings("unknown-verdict", &constant_plugin(&unknown));
    settings.failure_policy = FailurePolicy::FailClosed;
    let processed = harness
        .pipeline(&[settings])
        .process(&login_event("uv"))
        .await
        .expect("valid");
    assert!(
        matches!(&processed.outcome.verdict, Verdict::Fail { error: CallError::BadOutput(m), .. } if m.contains("unknown verdict 9"))
    );
}

#[tokio::test]
async fn tokens_are_counted_per_scope_through_the_store_imports() {
    let harness = Harness::new();
    // Takes a token in scope "mallory" (ttl 300 s) and skips the event once more than 3 are live;
    // releases the scope when the event contains "release".
    let wat = plugin_wat(
        r#"(import "eventplug" "store_take_token" (func $take (param i32 i32 i32) (result i32)))
           (import "eventplug" "store_release_tokens" (func $release (param i32 i32) (result i32)))"#,
        &format!(
            "(if (call $contains (local.get $ptr) (local.get $len) (i32.const 8300) (i32.const 7))
               (then (drop (call $release (i32.const 8192) (i32.const 7))) (return (i64.const 0))))
             (if (result i64) (i32.gt_s (call $take (i32.const 8192) (i32.const 7) (i32.const 300)) (i32.const 3))
               (then {skip})
               (else (i64.const 0)))",
            skip = common::region(2)
        ),
        &format!(
            r#"(data (i32.const 8192) "mallory") (data (i32.const 8300) "release") (data (i32.const {}) "\08\01") {}"#,
            common::RESPONSE_AT,
            common::CONTAINS
        ),
    );
    let pipeline = harness.pipeline(&[harness.settings("count", &wat)]);
    let mut verdicts = Vec::new();
    for n in 0..5 {
        let processed = pipeline
            .process(&login_event(&format!("t{n}")))
            .await
            .expect("valid");
        verdicts.push(matches!(processed.outcome.verdict, Verdict::Skip { .. }));
    }
    assert_eq!(verdicts, [false, false, false, true, true]);
    pipeline
        .process(br#"{"event":"release"}"#)
        .await
        .expect("valid");
    assert!(!matches!(
        pipeline
            .process(&login_event("t9"))
            .await
            .expect("valid")
            .outcome
            .verdict,
        Verdict::Skip { .. }
    ));
}

#[tokio::test]
async fn a_scope_that_is_not_utf8_is_refused_with_minus_one() {
    let harness = Harness::new();
    // Skips the event when store_take_token answers -1 for the scope bytes ff fe.
    let wat = plugin_wat(
        r#"(import "eventplug" "store_take_token" (func $take (param i32 i32 i32) (result i32)))"#,
        &format!(
            "(if (result i64) (i32.eq (call $take (i32.const 4096) (i32.const 2) (i32.const 60)) (i32.const -1)) (then {}) (else (i64.const 0)))",
            common::region(2)
        ),
        &format!(
            r#"(data (i32.const 4096) "\ff\fe") (data (i32.const {}) "\08\01")"#,
            common::RESPONSE_AT
        ),
    );
    let pipeline = harness.pipeline(&[harness.settings("bad-scope", &wat)]);
    let processed = pipeline
        .process(&login_event("scope"))
        .await
        .expect("valid");
    assert_eq!(
        processed.outcome.verdict,
        Verdict::Skip {
            plugin: "bad-scope".into()
        }
    );
}

#[tokio::test]
async fn log_lines_are_collected_and_limited_per_call() {
    let harness = Harness::new();
    let wat = plugin_wat(
        r#"(import "eventplug" "log" (func $log (param i32 i32 i32)))"#,
        "(local $i i32)
         (loop $more
           (call $log (i32.const 2) (i32.const 4096) (i32.const 5))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $more (i32.lt_u (local.get $i) (i32.const 100))))
         (i64.const 0)",
        r#"(data (i32.const 4096) "hello")"#,
    );
    let mut settings = harness.settings("chatty", &wat);
    settings.limits.max_log_lines_per_call = 10;
    let pipeline = harness.pipeline(&[settings]);
    let processed = pipeline.process(&login_event("log")).await.expect("valid");
    let step = &processed.outcome.steps[0];
    assert_eq!(step.logs.len(), 10);
    assert_eq!(step.dropped_logs, 90);
    assert_eq!(step.logs[0].message, "hello");
    assert_eq!(step.logs[0].level, eventplug_runtime::abi::LogLevel::Warn);
}

#[tokio::test]
async fn malformed_effects_are_refused_with_minus_one_and_not_recorded() {
    let harness = Harness::new();
    // Declares an alert from bytes that are not an Alert; skips if the host answered -1.
    let wat = plugin_wat(
        r#"(import "eventplug" "alert" (func $alert (param i32 i32) (result i32)))"#,
        &format!(
            "(if (result i64) (i32.eq (call $alert (i32.const 4096) (i32.const 3)) (i32.const -1)) (then {}) (else (i64.const 0)))",
            common::region(2)
        ),
        &format!(
            r#"(data (i32.const 4096) "\ff\ff\ff") (data (i32.const {}) "\08\01")"#,
            common::RESPONSE_AT
        ),
    );
    let pipeline = harness.pipeline(&[harness.settings("garbled", &wat)]);
    let processed = pipeline.process(&login_event("g")).await.expect("valid");
    assert_eq!(
        processed.outcome.verdict,
        Verdict::Skip {
            plugin: "garbled".into()
        }
    );
    assert!(processed.outcome.effects.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_of_an_event_being_computed_awaits_that_outcome_and_the_chain_runs_once() {
    let (harness, gate) = Harness::with_gate();
    let _open_at_the_end = gate.open_on_drop();
    // The first call stops at the gate; any other call passes it.
    let wat = plugin_wat(Gate::IMPORT, "(call $hold) (i64.const 0)", "");
    let mut settings = harness.settings("held", &wat);
    // A second instance is free, so only the in-flight wait can keep the duplicate from running.
    settings.limits.concurrency = 2;
    settings.limits.timeout = std::time::Duration::from_secs(60).into();
    let pipeline = std::sync::Arc::new(harness.pipeline(&[settings]));
    let calls = || {
        let plugin = pipeline.plugins().next().expect("plugin");
        plugin.pool.stats().calls.load(Ordering::Relaxed)
    };
    let first = {
        let pipeline = pipeline.clone();
        tokio::spawn(async move { pipeline.process(&login_event("racing")).await })
    };
    gate.entered().await;

    // The duplicate, polled once while the first is inside the plugin: it waits, without a call.
    let event = login_event("racing");
    let mut second = std::pin::pin!(pipeline.process(&event));
    let polled = std::future::poll_fn(|cx| std::task::Poll::Ready(second.as_mut().poll(cx))).await;
    assert!(polled.is_pending(), "the duplicate did not wait");
    assert_eq!(calls(), 1, "the duplicate called the plugin");

    gate.open();
    let first = first.await.expect("joined").expect("valid");
    let second = second.await.expect("valid");
    assert_eq!(calls(), 1, "the chain ran once");
    assert!(!first.replayed);
    assert!(second.replayed, "the duplicate took the first outcome");
    assert!(std::sync::Arc::ptr_eq(&first.outcome, &second.outcome));
    assert_eq!(
        [first.claim_effects(), second.claim_effects()]
            .iter()
            .filter(|claimed| **claimed)
            .count(),
        1,
        "effects are claimed once"
    );
}

#[test]
fn the_pipelines_event_limit_is_the_sidecars_default_body_limit() {
    // docs/abi.md states one event size limit for both `eventplug run` and the sidecar.
    assert_eq!(
        PipelineSettings::default().max_event_bytes as u64,
        eventplug_contract::ListenConfig::default()
            .max_body_bytes
            .get()
    );
}

#[tokio::test]
async fn an_event_with_a_key_twice_in_one_object_is_refused_before_any_plugin_runs() {
    // event-handler's JSON comes from a protobuf Struct, whose keys are unique: a repeated key is
    // an input shape that could carry one copy past a redactor that sees the other.
    let harness = Harness::new();
    let pipeline = harness.pipeline(&[]);
    for body in [
        &br#"{"event":"x","uid":"1","secret":"A","secret":"B"}"#[..],
        br#"{"event":"x","uid":"1","mfa":{"secret":"A","secret":"B"}}"#,
        br#"{"event":"x","uid":"1","list":[{"k":1},{"a":{"k":1,"k":2}}]}"#,
    ] {
        match pipeline.process(body).await {
            Err(InputError::DuplicateKey(key)) => assert!(key == "secret" || key == "k", "{key}"),
            other => panic!("{}: {other:?}", String::from_utf8_lossy(body)),
        }
    }
    // The same key in sibling objects, or at two levels, is no repetition.
    let siblings = br#"{"event":"x","uid":"1","a":{"k":1},"b":{"k":2},"k":{"k":3}}"#;
    assert!(pipeline.process(siblings).await.is_ok());
}
