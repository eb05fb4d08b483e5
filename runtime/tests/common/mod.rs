//! Helpers shared by the integration tests: plugins written in WAT inside each test, compiled with
//! the `wat` crate, loaded through the real engine.
#![allow(dead_code)]

pub mod components;

use eventplug::engine::{EngineSettings, LoadError, LoadedPlugin, PluginEngine};
use eventplug::pipeline::{Pipeline, PipelineSettings};
use eventplug::proto::v1 as pb;
use eventplug::settings::PluginSettings;
use eventplug::store::LocalTokenStore;
use prost::Message;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// A folder of its own for one test, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
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

/// An engine for tests, with the module cache in a temp folder.
pub struct Harness {
    pub engine: PluginEngine,
    pub dir: TempDir,
    pub tokens: Arc<LocalTokenStore>,
}

impl Harness {
    pub fn new() -> Self {
        let dir = TempDir::new("engine");
        let engine = PluginEngine::new(EngineSettings {
            cache_dir: Some(dir.0.join("cache")),
            ..EngineSettings::default()
        })
        .expect("engine starts");
        Self {
            engine,
            dir,
            tokens: Arc::new(LocalTokenStore::new()),
        }
    }

    /// Writes `wat` compiled to a .wasm file and returns default settings for it.
    pub fn settings(&self, name: &str, wat: &str) -> PluginSettings {
        let wasm = wat::parse_str(wat)
            .unwrap_or_else(|e| panic!("test WAT for {name} does not parse: {e}\n{wat}"));
        let path = self.dir.0.join(format!("{name}.wasm"));
        std::fs::write(&path, wasm).expect("write module");
        PluginSettings::for_module(name, path)
    }

    pub fn try_load(&self, settings: &PluginSettings) -> Result<LoadedPlugin, LoadError> {
        self.engine.load_plugin(settings, self.tokens.clone())
    }

    /// The message of the error that refuses `settings`; panics when they load.
    pub fn load_error(&self, settings: &PluginSettings) -> String {
        match self.try_load(settings) {
            Ok(_) => panic!("{} should be refused", settings.name),
            Err(error) => error.to_string(),
        }
    }

    pub fn load(&self, settings: &PluginSettings) -> Arc<LoadedPlugin> {
        Arc::new(
            self.try_load(settings)
                .unwrap_or_else(|e| panic!("{} loads: {e}", settings.name)),
        )
    }

    pub fn pipeline(&self, settings: &[PluginSettings]) -> Pipeline {
        Pipeline::new(
            settings.iter().map(|s| self.load(s)).collect(),
            PipelineSettings::default(),
        )
    }
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

/// A request to hand a pool directly.
pub fn request_for(event: &[u8]) -> Vec<u8> {
    eventplug::pipeline::encode_event(event)
        .expect("test event encodes")
        .request
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

/// A plugin that declares one WARNING alert per event and forwards it.
pub fn alert_plugin() -> String {
    let alert = pb::Alert {
        message: "failed login".into(),
        severity: pb::Severity::Warning as i32,
        include_event: true,
        metadata: [("rule".to_string(), "brute-force".to_string())].into(),
    };
    let bytes = alert.encode_to_vec();
    plugin_wat(
        r#"(import "eventplug" "alert" (func $alert (param i32 i32) (result i32)))"#,
        &format!(
            "(drop (call $alert (i32.const 4096) (i32.const {}))) (i64.const 0)",
            bytes.len()
        ),
        &format!(r#"(data (i32.const 4096) "{}")"#, wat_bytes(&bytes)),
    )
}
