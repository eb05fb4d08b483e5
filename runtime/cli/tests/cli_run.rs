//! `eventplug run` as a user runs it: the real binary, events on stdin.

mod common;

use common::{TempDir, constant_plugin, set_response, write_module};
use eventplug_proto::v1 as pb;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_eventplug"))
        .arg("run")
        .args(args)
        .env(
            "EVENTPLUG_CACHE_DIR",
            std::env::temp_dir().join("eventplug-test-cli-cache"),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start eventplug");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write events");
    child.wait_with_output().expect("eventplug finishes")
}

#[test]
fn run_forwards_verbatim_reports_failures_and_summarises() {
    let dir = TempDir::new("cli-run");
    let module = write_module(
        &dir,
        "annotate",
        &constant_plugin(&set_response("seen", "true")),
    );
    let module = module.to_str().expect("utf-8 path");
    let input =
        b"{\"event\":\"a\", \"uid\":\"1\"}\nnot json\n\n[1]\n{\"event\":\"b\",\"uid\":\"2\"}\n";
    let output = run(&["--plugin", module], input);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8(output.stdout).expect("utf-8"),
        "{\"event\":\"a\", \"uid\":\"1\",\"seen\":true}\n{\"event\":\"b\",\"uid\":\"2\",\"seen\":true}\n"
    );
    let stderr = String::from_utf8(output.stderr).expect("utf-8");
    assert!(
        stderr.contains("event 2: the body is not valid JSON"),
        "{stderr}"
    );
    assert!(
        stderr.contains("event 4: the body is JSON but not an object"),
        "{stderr}"
    );
    assert!(
        stderr.contains("summary: in=4 forwarded=0 modified=2 skipped=0 failed-open=0 failed=2"),
        "{stderr}"
    );
}

#[test]
fn run_with_a_chain_file_applies_per_plugin_settings() {
    let dir = TempDir::new("cli-run");
    let skip = write_module(
        &dir,
        "skip",
        &constant_plugin(&pb::HandleEventResponse {
            verdict: pb::Verdict::Skip as i32,
            ..Default::default()
        }),
    );
    let pass = write_module(
        &dir,
        "pass",
        &constant_plugin(&pb::HandleEventResponse::default()),
    );
    let chain = dir.0.join("chain.yaml");
    std::fs::write(
        &chain,
        format!(
            "plugins:\n  - name: skip-logins\n    module: {}\n    events: [user.login]\n  - name: pass\n    module: {}\n    limits: {{timeout: 50ms, memoryLimit: 16Mi}}\n",
            skip.file_name().and_then(|n| n.to_str()).expect("name"),
            pass.display()
        ),
    )
    .expect("write chain");
    let input =
        b"{\"event\":\"user.login\",\"uid\":\"1\"}\n{\"event\":\"session.start\",\"uid\":\"2\"}\n";
    let output = run(&["--config", chain.to_str().expect("utf-8")], input);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        output.stdout,
        b"{\"event\":\"session.start\",\"uid\":\"2\"}\n"
    );
    let stderr = String::from_utf8(output.stderr).expect("utf-8");
    assert!(
        stderr.contains("event 1: skipped by skip-logins"),
        "{stderr}"
    );
    assert!(
        stderr.contains("summary: in=2 forwarded=1 modified=0 skipped=1 failed-open=0 failed=0"),
        "{stderr}"
    );
}

#[test]
fn a_bad_output_under_fail_open_is_shown_and_counted_as_failed_open() {
    let dir = TempDir::new("cli-run");
    let garbage = write_module(
        &dir,
        "garbage",
        &common::plugin_wat(
            "",
            &common::region(3),
            &format!(r#"(data (i32.const {}) "\ff\ff\ff")"#, common::RESPONSE_AT),
        ),
    );
    let pass = write_module(
        &dir,
        "pass",
        &constant_plugin(&pb::HandleEventResponse::default()),
    );
    let chain = dir.0.join("chain.yaml");
    std::fs::write(
        &chain,
        format!(
            "plugins:\n  - name: garbage\n    module: {}\n    failurePolicy: FailOpen\n    events: [user.login]\n  - name: pass\n    module: {}\n",
            garbage.display(),
            pass.display()
        ),
    )
    .expect("write chain");
    let input =
        b"{\"event\":\"user.login\",\"uid\":\"1\"}\n{\"event\":\"session.start\",\"uid\":\"2\"}\n";
    let output = run(&["--config", chain.to_str().expect("utf-8")], input);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(output.stdout, input, "both continue unchanged");
    let stderr = String::from_utf8(output.stderr).expect("utf-8");
    assert!(
        stderr.contains("event 1: [garbage] failed-open: returned a bad response"),
        "{stderr}"
    );
    assert!(
        stderr.contains("summary: in=2 forwarded=1 modified=0 skipped=0 failed-open=1 failed=0"),
        "{stderr}"
    );
}

#[test]
fn load_errors_exit_non_zero_with_the_reason() {
    let output = run(&["--plugin", "/nonexistent/plugin.wasm"], b"");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).expect("utf-8");
    assert!(
        stderr.contains("cannot read plugin module /nonexistent/plugin.wasm"),
        "{stderr}"
    );

    let dir = TempDir::new("cli-run");
    let chain = dir.0.join("bad.yaml");
    std::fs::write(
        &chain,
        "plugins:\n  - name: x\n    module: x.wasm\n    timeuot: 5s\n",
    )
    .expect("write");
    let output = run(&["--config", chain.to_str().expect("utf-8")], b"");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).expect("utf-8");
    assert!(stderr.contains("timeuot"), "{stderr}");

    let output = run(&[], b"");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no plugin given"));
}
