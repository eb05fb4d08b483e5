//! The ABI is language-neutral: a plugin written in C, built with Debian's clang-14 for wasm32 with
//! no libc, runs through the same pipeline. The build is real; a missing compiler fails the test.

mod common;

use common::Harness;
use eventplug_proto::v1 as pb;
use eventplug_runtime::abi::EffectKind;
use eventplug_runtime::pipeline::{StepResult, Verdict};
use std::path::PathBuf;
use std::process::Command;

/// Builds the example once per test process (tests run in parallel and share the output file).
fn build_c_filter() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT.get_or_init(build).clone()
}

fn build() -> PathBuf {
    let example = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/c-filter");
    let status = Command::new("bash")
        .arg(example.join("build.sh"))
        .status()
        .expect("run examples/c-filter/build.sh (needs bash)");
    assert!(
        status.success(),
        "examples/c-filter/build.sh failed: install clang-14 and lld-14 (scripts/setup.sh does)"
    );
    example.join("build/c-filter.wasm")
}

#[tokio::test]
async fn the_c_plugin_skips_annotates_and_alerts() {
    let module = build_c_filter();
    let harness = Harness::new();
    let mut settings = eventplug_contract::PluginSettings::for_module("c-filter", module);
    settings.config = Some(serde_json::json!({"drop": ["session.data", "role.created"]}));
    let pipeline = harness.pipeline(&[settings]);
    let events: Vec<&str> = include_str!("../../../examples/events/sample.jsonl")
        .lines()
        .collect();

    // A successful login: forwarded with one edit, every original byte kept.
    let processed = pipeline.process(events[0].as_bytes()).await.expect("valid");
    let Verdict::Modified(bytes) = &processed.outcome.verdict else {
        panic!("{:?}", processed.outcome.verdict)
    };
    let original = events[0].trim_end_matches('}');
    assert_eq!(
        std::str::from_utf8(bytes).expect("utf-8"),
        format!(r#"{original},"processed_by":"eventplug-c"}}"#)
    );
    assert!(processed.outcome.effects.is_empty());

    // A failed login: annotated too, plus a WARNING alert that asks for the event, and a log line.
    let processed = pipeline.process(events[1].as_bytes()).await.expect("valid");
    assert!(matches!(processed.outcome.verdict, Verdict::Modified(_)));
    assert_eq!(processed.outcome.effects.len(), 1);
    let EffectKind::Alert(alert) = &processed.outcome.effects[0].kind else {
        panic!("an alert")
    };
    assert_eq!(
        (alert.message.as_str(), alert.severity, alert.include_event),
        ("failed login", pb::Severity::Warning as i32, true)
    );
    assert_eq!(
        processed.outcome.steps[0].logs[0].message,
        "c-filter: failed login seen"
    );

    // A type listed in the config's "drop": skipped.
    let role = events
        .iter()
        .find(|e| e.contains(r#""event":"role.created""#))
        .expect("a role.created sample");
    let processed = pipeline.process(role.as_bytes()).await.expect("valid");
    assert_eq!(
        processed.outcome.verdict,
        Verdict::Skip {
            plugin: "c-filter".into()
        }
    );
    assert_eq!(processed.outcome.steps[0].result, StepResult::Skipped);
}

#[test]
fn the_c_plugin_refuses_an_oversized_config_at_load() {
    let module = build_c_filter();
    let harness = Harness::new();
    let mut settings = eventplug_contract::PluginSettings::for_module("c-filter", module);
    settings.config = Some(serde_json::json!({"drop": ["x".repeat(5000)]}));
    let err = harness.load_error(&settings);
    assert!(
        err.contains("refused its configuration: config is larger than 4096 bytes"),
        "{err}"
    );
}
