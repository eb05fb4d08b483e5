//! Helpers of the runtime's integration tests: the shared test support, and an engine with its
//! module cache in a temp folder that loads WAT plugins through the real engine.
#![allow(dead_code)]

pub use eventplug_test_support::*;

use eventplug_contract::PluginSettings;
use eventplug_runtime::engine::{EngineSettings, LoadError, PluginEngine};
use eventplug_runtime::pipeline::{LoadedPlugin, Pipeline, PipelineSettings};
use eventplug_runtime::store::{LocalTokenStore, TokenStore, TokenStoreError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

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
        PluginSettings::for_module(name, write_module(&self.dir, name, wat))
    }

    pub fn try_load(&self, settings: &PluginSettings) -> Result<LoadedPlugin, LoadError> {
        LoadedPlugin::load(&self.engine, settings, self.tokens.clone())
    }

    /// Loads `settings` with `tokens` behind the store imports instead of the harness's store.
    pub fn load_with_tokens(
        &self,
        settings: &PluginSettings,
        tokens: Arc<dyn TokenStore>,
    ) -> Arc<LoadedPlugin> {
        Arc::new(
            LoadedPlugin::load(&self.engine, settings, tokens)
                .unwrap_or_else(|e| panic!("{} loads: {e}", settings.name)),
        )
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

/// A request to hand a pool directly.
pub fn request_for(event: &[u8]) -> Vec<u8> {
    eventplug_runtime::pipeline::encode_event(event)
        .expect("test event encodes")
        .request
}

/// WAT import of `store_take_token`, as `$take`.
pub const TAKE_TOKEN_IMPORT: &str =
    r#"(import "eventplug" "store_take_token" (func $take (param i32 i32 i32) (result i32)))"#;

/// A handle_event body that calls `$take` (so a plugin built with [`TAKE_TOKEN_IMPORT`] waits in
/// a [`Gate`]) when the request is longer than `threshold` bytes, then forwards.
pub fn gated_when_longer_than(threshold: usize) -> String {
    format!(
        "(if (i32.gt_u (local.get $len) (i32.const {threshold}))
           (then (drop (call $take (i32.const 0) (i32.const 1) (i32.const 60)))))
         (i64.const 0)"
    )
}

/// A token store that holds every `store_take_token` call until the test opens it: a plugin that
/// takes a token is inside its call, provably, for as long as the test needs, where a busy loop
/// in the plugin only makes that likely.
#[derive(Default)]
pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Default)]
struct GateState {
    entered: usize,
    open: bool,
}

impl Gate {
    /// How long a call waits before it fails on its own, so a test that never opens the gate
    /// fails instead of hanging.
    const HOLD_AT_MOST: Duration = Duration::from_secs(60);

    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until `calls` calls have reached the gate; panics after 30 s.
    pub fn wait_entered(&self, calls: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut state = self.lock();
        while state.entered < calls {
            let now = Instant::now();
            assert!(
                now < deadline,
                "{} of {calls} plugin calls reached the gate within 30 s",
                state.entered
            );
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// How many calls have reached the gate so far.
    pub fn entered(&self) -> usize {
        self.lock().entered
    }

    /// Lets every held call, and every later one, through.
    pub fn open(&self) {
        self.lock().open = true;
        self.changed.notify_all();
    }
}

impl TokenStore for Gate {
    fn take_token(&self, _: &str, _: &str, _: u32) -> Result<u32, TokenStoreError> {
        let deadline = Instant::now() + Self::HOLD_AT_MOST;
        let mut state = self.lock();
        state.entered += 1;
        self.changed.notify_all();
        while !state.open {
            let now = Instant::now();
            if now >= deadline {
                return Err(TokenStoreError("the test never opened the gate".into()));
            }
            state = self
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        Ok(1)
    }

    fn release_tokens(&self, _: &str, _: &str) -> Result<u32, TokenStoreError> {
        Ok(0)
    }
}
