//! Test support shared by eventplug's crates: a temporary folder per test, plugins written in WAT
//! inside each test, sample events, and the real components end-to-end tests start (nginx as
//! fluentd with mTLS, the sidecar process, an event-handler emulator).
#![forbid(unsafe_code)]

pub mod components;
pub mod registry;

use eventplug_proto::v1 as pb;
use prost::Message;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A folder of its own for one test, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new empty folder named after `tag`, the process and a counter.
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "eventplug-test-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `condition` until it holds or `timeout` passes; whether it held. For waiting on what
/// another thread or process does, instead of sleeping and hoping it is done.
pub fn poll_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `condition` until it holds; panics naming `what` when `timeout` passes first.
pub fn wait_until(what: &str, timeout: Duration, condition: impl FnMut() -> bool) {
    assert!(
        poll_until(timeout, condition),
        "timed out after {timeout:?} waiting until {what}"
    );
}

/// Compiles `wat` into `dir/<name>.wasm` and returns the file's path.
pub fn write_module(dir: &TempDir, name: &str, wat: &str) -> PathBuf {
    let wasm = wat::parse_str(wat)
        .unwrap_or_else(|e| panic!("test WAT for {name} does not parse: {e}\n{wat}"));
    let path = dir.0.join(format!("{name}.wasm"));
    std::fs::write(&path, wasm).expect("write module");
    path
}

/// Bytes as a WAT data string.
pub fn wat_bytes(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\{b:02x}")).collect()
}

/// Where test responses are placed in memory.
pub const RESPONSE_AT: u32 = 256;

/// An i64 region expression for `len` bytes at `RESPONSE_AT`.
pub fn region(len: usize) -> String {
    format!(
        "(i64.const {})",
        (u64::from(RESPONSE_AT) << 32) | len as u64
    )
}

/// A whole plugin module: the ABI exports around a handle_event `body` (params `$ptr`, `$len`,
/// result i64), with `extra` module fields (imports must come first, so they go in `imports`).
pub fn plugin_wat(imports: &str, body: &str, extra: &str) -> String {
    format!(
        r#"(module
  {imports}
  (memory (export "memory") 1)
  (func (export "eventplug_abi_version") (result i32) (i32.const 1))
  (func (export "eventplug_alloc") (param $n i32) (result i32)
    (local $need i32)
    (local.set $need (i32.add (i32.const 65536) (local.get $n)))
    (if (i32.gt_u (local.get $need) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.div_u (i32.sub (local.get $need) (i32.mul (memory.size) (i32.const 65536))) (i32.const 65536)) (i32.const 1))))))
    (i32.const 65536))
  (func (export "eventplug_handle_event") (param $ptr i32) (param $len i32) (result i64)
    {body})
  {extra}
)"#
    )
}

/// A plugin that always answers with `response`.
pub fn constant_plugin(response: &pb::HandleEventResponse) -> String {
    let bytes = response.encode_to_vec();
    plugin_wat(
        "",
        &region(bytes.len()),
        &format!(
            r#"(data (i32.const {RESPONSE_AT}) "{}")"#,
            wat_bytes(&bytes)
        ),
    )
}

/// A user.login event as event-handler posts it.
pub fn login_event(uid: &str) -> Vec<u8> {
    format!(
        r#"{{"ei":0,"event":"user.login","uid":"{uid}","code":"T1000W","time":"2024-02-23T18:56:50.628Z","cluster_name":"teleport.example.com","user":"mallory","success":false,"method":"local","addr.remote":"203.0.113.7:41022","error":"invalid username, password or second factor"}}"#
    )
    .into_bytes()
}

/// A session.start event.
pub fn session_event(uid: &str) -> Vec<u8> {
    format!(
        r#"{{"ei":0,"event":"session.start","uid":"{uid}","time":"2024-02-23T19:05:10.511Z","user":"alice","login":"ubuntu","sid":"s-1","server_labels":{{"env":"prod"}}}}"#
    )
    .into_bytes()
}

/// WAT fields for a plugin that answers `if_found` when the request contains `needle`, else
/// `otherwise` (both responses placed in data).
pub fn branching_plugin(
    imports: &str,
    needle: &str,
    if_found: &pb::HandleEventResponse,
    otherwise: &pb::HandleEventResponse,
    before: &str,
) -> String {
    let found = if_found.encode_to_vec();
    let other = otherwise.encode_to_vec();
    let other_at = RESPONSE_AT + 1024;
    plugin_wat(
        imports,
        &format!(
            "{before}
             (if (result i64) (call $contains (local.get $ptr) (local.get $len) (i32.const 8192) (i32.const {needle_len}))
               (then {found_region})
               (else (i64.const {other_region})))",
            needle_len = needle.len(),
            found_region = region(found.len()),
            other_region = (u64::from(other_at) << 32) | other.len() as u64,
        ),
        &format!(
            r#"(data (i32.const {RESPONSE_AT}) "{}")
               (data (i32.const {other_at}) "{}")
               (data (i32.const 8192) "{}")
               {CONTAINS}"#,
            wat_bytes(&found),
            wat_bytes(&other),
            wat_bytes(needle.as_bytes()),
        ),
    )
}

/// `$contains(hay, hay_len, needle, needle_len) -> i32`: whether the needle occurs in the hay.
pub const CONTAINS: &str = r#"
  (func $contains (param $h i32) (param $hl i32) (param $n i32) (param $nl i32) (result i32)
    (local $i i32) (local $j i32)
    (block $none
      (loop $outer
        (br_if $none (i32.gt_u (i32.add (local.get $i) (local.get $nl)) (local.get $hl)))
        (local.set $j (i32.const 0))
        (block $mismatch
          (loop $inner
            (if (i32.eq (local.get $j) (local.get $nl)) (then (return (i32.const 1))))
            (br_if $mismatch (i32.ne
              (i32.load8_u (i32.add (local.get $h) (i32.add (local.get $i) (local.get $j))))
              (i32.load8_u (i32.add (local.get $n) (local.get $j)))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $inner)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $outer)))
    (i32.const 0))"#;

/// A response that sets one top-level key.
pub fn set_response(key: &str, value_json: &str) -> pb::HandleEventResponse {
    pb::HandleEventResponse {
        edits: vec![pb::Edit {
            path: vec![key.into()],
            op: pb::EditOp::Set as i32,
            value_json: value_json.into(),
        }],
        ..Default::default()
    }
}

/// A response with only a verdict.
pub fn verdict(verdict: pb::Verdict) -> pb::HandleEventResponse {
    pb::HandleEventResponse {
        verdict: verdict as i32,
        ..Default::default()
    }
}

/// A plugin that declares one Teleport lock per event (on the user `mallory`) and forwards it.
pub fn lock_plugin() -> String {
    let lock = pb::CreateLock {
        name: "brute-force-mallory".into(),
        target: Some(pb::LockTarget {
            user: "mallory".into(),
            ..Default::default()
        }),
        message: "too many failed logins".into(),
        ttl_seconds: 3600,
        ..Default::default()
    };
    effect_plugin("lock_create", &lock.encode_to_vec())
}

/// A plugin that calls the effect import `import` once per event with `message` and forwards it.
fn effect_plugin(import: &str, message: &[u8]) -> String {
    plugin_wat(
        &format!(r#"(import "eventplug" "{import}" (func $effect (param i32 i32) (result i32)))"#),
        &format!(
            "(drop (call $effect (i32.const 4096) (i32.const {}))) (i64.const 0)",
            message.len()
        ),
        &format!(r#"(data (i32.const 4096) "{}")"#, wat_bytes(message)),
    )
}

/// A plugin that declares one WARNING alert per event and forwards it.
pub fn alert_plugin() -> String {
    let alert = pb::Alert {
        message: "failed login".into(),
        severity: pb::Severity::Warning as i32,
        include_event: true,
        metadata: [("rule".to_string(), "brute-force".to_string())].into(),
    };
    effect_plugin("alert", &alert.encode_to_vec())
}
