//! Helpers of the runtime's integration tests: the shared test support, and an engine with its
//! module cache in a temp folder that loads WAT plugins through the real engine.
#![allow(dead_code)]

pub use eventplug_test_support::*;

use eventplug_contract::PluginSettings;
use eventplug_runtime::abi::{ImportSpec, InstanceState, import};
use eventplug_runtime::engine::{
    EngineSettings, HostExtension, InstanceLimits, LoadError, PluginEngine,
};
use eventplug_runtime::pipeline::{LoadedPlugin, Pipeline, PipelineSettings};
use eventplug_runtime::store::LocalTokenStore;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

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

    /// A harness whose plugins may import [`Gate::IMPORT`], and the gate they stop at.
    pub fn with_gate() -> (Self, Arc<Gate>) {
        let dir = TempDir::new("engine");
        let gate = Arc::new(Gate::default());
        let engine = PluginEngine::with_extension(
            EngineSettings {
                cache_dir: Some(dir.0.join("cache")),
                ..EngineSettings::default()
            },
            Arc::new(GateExtension(gate.clone())),
        )
        .expect("engine starts");
        let harness = Self {
            engine,
            dir,
            tokens: Arc::new(LocalTokenStore::new()),
        };
        (harness, gate)
    }

    /// Writes `wat` compiled to a .wasm file and returns default settings for it.
    pub fn settings(&self, name: &str, wat: &str) -> PluginSettings {
        PluginSettings::for_module(name, write_module(&self.dir, name, wat))
    }

    pub fn try_load(&self, settings: &PluginSettings) -> Result<LoadedPlugin, LoadError> {
        LoadedPlugin::load(&self.engine, settings, self.tokens.clone())
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

/// A host function for tests that need a call to be running at a known moment: the first call to
/// reach `gate.hold` tells [`Gate::entered`] and then blocks its thread (as a plugin running to its
/// timeout would) until [`Gate::open`]; later calls pass straight through.
pub struct Gate {
    armed: AtomicBool,
    entered: tokio::sync::Notify,
    open: Mutex<bool>,
    opened: Condvar,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            armed: AtomicBool::new(true),
            entered: tokio::sync::Notify::new(),
            open: Mutex::new(false),
            opened: Condvar::new(),
        }
    }
}

impl Gate {
    /// The import a plugin declares to call `$hold`.
    pub const IMPORT: &str = r#"(import "gate" "hold" (func $hold))"#;

    fn hold(&self) {
        if !self.armed.swap(false, Ordering::SeqCst) {
            return;
        }
        self.entered.notify_one();
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        while !*open {
            open = self.opened.wait(open).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Returns once a call is held at the gate (at once if one already is).
    pub async fn entered(&self) {
        self.entered.notified().await;
    }

    /// Lets the held call go on.
    pub fn open(&self) {
        *self.open.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.opened.notify_all();
    }

    /// Opens the gate when dropped, so a failing test does not leave a thread held (and its
    /// runtime waiting for it).
    pub fn open_on_drop(self: &Arc<Self>) -> OpenOnDrop {
        OpenOnDrop(self.clone())
    }
}

/// See [`Gate::open_on_drop`].
pub struct OpenOnDrop(Arc<Gate>);

impl Drop for OpenOnDrop {
    fn drop(&mut self) {
        self.0.open();
    }
}

struct GateExtension(Arc<Gate>);

impl HostExtension for GateExtension {
    fn imports(&self) -> &'static [ImportSpec] {
        const IMPORTS: &[ImportSpec] = &[import("gate", "hold", &[], &[])];
        IMPORTS
    }

    fn link(&self, linker: &mut wasmtime::Linker<InstanceState>) -> wasmtime::Result<()> {
        let gate = self.0.clone();
        linker.func_wrap("gate", "hold", move || gate.hold())?;
        Ok(())
    }

    fn instance_state(&self, _limits: InstanceLimits) -> Box<dyn std::any::Any + Send> {
        Box::new(())
    }
}
