//! Helpers of the runtime's integration tests: the shared test support, and an engine with its
//! module cache in a temp folder that loads WAT plugins through the real engine.
#![allow(dead_code)]

pub use eventplug_test_support::*;

use eventplug_contract::PluginSettings;
use eventplug_runtime::engine::{EngineSettings, LoadError, PluginEngine};
use eventplug_runtime::pipeline::{LoadedPlugin, Pipeline, PipelineSettings};
use eventplug_runtime::store::LocalTokenStore;
use std::sync::Arc;

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
