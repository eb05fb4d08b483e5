//! `eventplug test` runs a test build through the real harness: fixtures, the production pipeline
//! on the same instance, recorded effects, assertion failures with their location.

mod common;

use common::{CONTAINS, TempDir, wat_bytes};
use std::path::Path;
use std::process::{Command, Output};

fn as_string(text: &str) -> String {
    let units: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut bytes = (units.len() as u32).to_le_bytes().to_vec();
    bytes.extend(units);
    wat_bytes(&bytes)
}

/// A test build: the plugin annotates every event with `"seen":true` and raises an alert, but skips
/// events containing "skipme"; `test()` handles fixture 1 and asserts the edit and the alert.
fn test_build() -> Vec<u8> {
    let response = prost::Message::encode_to_vec(&eventplug_proto::v1::HandleEventResponse {
        edits: vec![eventplug_proto::v1::Edit {
            path: vec!["seen".into()],
            op: 0,
            value_json: "true".into(),
        }],
        ..Default::default()
    });
    let alert = prost::Message::encode_to_vec(&eventplug_proto::v1::Alert {
        message: "hi".into(),
        ..Default::default()
    });
    let wat = format!(
        r#"(module
  (import "env" "abort" (func $abort (param i32 i32 i32 i32)))
  (import "eventplug" "alert" (func $alert (param i32 i32) (result i32)))
  (import "eventplug" "log" (func $log (param i32 i32 i32)))
  (import "eventplug_test" "fixture_size" (func $fixture_size (param i32) (result i32)))
  (import "eventplug_test" "fixture_read" (func $fixture_read (param i32 i32 i32) (result i32)))
  (import "eventplug_test" "handle_event" (func $handle (param i32 i32) (result i32)))
  (import "eventplug_test" "result_size" (func $result_size (result i32)))
  (import "eventplug_test" "result_read" (func $result_read (param i32 i32) (result i32)))
  (import "eventplug_test" "alerts_count" (func $alerts_count (result i32)))
  (memory (export "memory") 2)
  (func (export "eventplug_abi_version") (result i32) (i32.const 1))
  (func (export "eventplug_alloc") (param $n i32) (result i32) (i32.const 65536))
  (func (export "eventplug_handle_event") (param $ptr i32) (param $len i32) (result i64)
    (if (call $contains (local.get $ptr) (local.get $len) (i32.const 1536) (i32.const 6))
      (then (return (i64.const 0x0000070000000002))))
    (drop (call $alert (i32.const 1280) (i32.const {alert_len})))
    (call $log (i32.const 1) (i32.const 1600) (i32.const 8))
    (i64.const {response_region}))
  (func (export "test")
    (local $n i32)
    (local.set $n (call $fixture_size (i32.const 1)))
    (drop (call $fixture_read (i32.const 1) (i32.const 20000) (local.get $n)))
    (if (i32.ne (call $handle (i32.const 20000) (local.get $n)) (i32.const 1))
      (then (call $abort (i32.const 2052) (i32.const 3076) (i32.const 7) (i32.const 3))))
    (if (i32.ne (call $alerts_count) (i32.const 1))
      (then (call $abort (i32.const 2564) (i32.const 3076) (i32.const 9) (i32.const 3))))
    (local.set $n (call $result_size))
    (drop (call $result_read (i32.const 30000) (local.get $n)))
    (if (i32.eqz (call $contains (i32.const 30000) (local.get $n) (i32.const 1024) (i32.const 11)))
      (then (call $abort (i32.const 2564) (i32.const 3076) (i32.const 12) (i32.const 3)))))
  (data (i32.const 1024) "\"seen\":true")
  (data (i32.const 1280) "{alert}")
  (data (i32.const 1536) "skipme")
  (data (i32.const 1600) "handled!")
  (data (i32.const 1792) "\08\01")
  (data (i32.const 2048) "{msg1}")
  (data (i32.const 2560) "{msg2}")
  (data (i32.const 3072) "{file}")
  (data (i32.const 4096) "{response}")
  {CONTAINS}
)"#,
        alert_len = alert.len(),
        alert = wat_bytes(&alert),
        response_region = (4096u64 << 32) | response.len() as u64,
        response = wat_bytes(&response),
        msg1 = as_string("expected a modified event"),
        msg2 = as_string("expected one alert"),
        file = as_string("assembly/test.ts"),
    );
    wat::parse_str(&wat).expect("test build parses")
}

fn eventplug_test(dir: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eventplug"))
        .arg("test")
        .args(extra)
        .current_dir(dir)
        .env("EVENTPLUG_CACHE_DIR", dir.join("cache"))
        .output()
        .expect("run eventplug test")
}

fn project(fixture: &str) -> TempDir {
    let dir = TempDir::new("cli-test");
    std::fs::create_dir_all(dir.0.join("build")).expect("mkdir");
    std::fs::create_dir_all(dir.0.join("fixtures")).expect("mkdir");
    std::fs::write(dir.0.join("build/test.wasm"), test_build()).expect("write build");
    std::fs::write(dir.0.join("fixtures/1-login.json"), fixture).expect("write fixture");
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn a_passing_test_prints_its_logs_and_success() {
    let dir = project(r#"{"event":"user.login","uid":"1","user":"alice"}"#);
    let output = eventplug_test(&dir.0, &[]);
    let stdout = text(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        text(&output.stderr)
    );
    assert!(stdout.contains("Info: handled!"), "{stdout}");
    assert!(stdout.trim_end().ends_with("Success!"), "{stdout}");
}

#[test]
fn a_failed_assertion_names_its_message_and_location() {
    let dir = project(r#"{"event":"user.login","uid":"1","user":"skipme"}"#);
    let output = eventplug_test(&dir.0, &[]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("Failed: trapped: expected a modified event (at assembly/test.ts:7:3)"),
        "{stdout}"
    );
}

#[test]
fn a_missing_fixture_names_the_id_and_what_exists() {
    let dir = project(r#"{"event":"x"}"#);
    std::fs::rename(
        dir.0.join("fixtures/1-login.json"),
        dir.0.join("fixtures/4-login.json"),
    )
    .expect("rename");
    let output = eventplug_test(&dir.0, &[]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = text(&output.stdout);
    assert!(
        stdout.contains("fixture 1 not found: the fixtures folder has [4]"),
        "{stdout}"
    );
}

#[test]
fn bad_fixtures_and_modules_without_test_fail_to_load() {
    let dir = project("{not json");
    let output = eventplug_test(&dir.0, &[]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("fixture 1 (") && stderr.contains("1-login.json): not valid JSON"),
        "{stderr}"
    );

    let dir = project(r#"{"event":"x"}"#);
    let plugin = common::plugin_wat("", "(i64.const 0)", "");
    std::fs::write(
        dir.0.join("build/plain.wasm"),
        wat::parse_str(plugin).expect("parses"),
    )
    .expect("write");
    let output = eventplug_test(&dir.0, &["--build", "build/plain.wasm"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("exports no `test: () -> ()`"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn production_refuses_a_test_build() {
    let dir = project(r#"{"event":"x"}"#);
    let output = Command::new(env!("CARGO_BIN_EXE_eventplug"))
        .args(["run", "--plugin", "build/test.wasm"])
        .current_dir(&dir.0)
        .env("EVENTPLUG_CACHE_DIR", dir.0.join("cache"))
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("imports `eventplug_test.fixture_size`")
            && stderr.contains("served only by `eventplug test`"),
        "{stderr}"
    );
}
