//! A plugin of the chain: its settings (which events, which mode, which failure policy) and the
//! module the engine loaded for it.

use crate::engine::{InstancePool, LoadError, ModuleRequest, ModuleSource, PluginEngine};
use crate::store::TokenStore;
use eventplug_contract::PluginSettings;
use std::sync::Arc;

/// A plugin ready to run: its settings, its module's digest and its instances.
pub struct LoadedPlugin {
    /// The settings it was loaded with.
    pub settings: PluginSettings,
    /// `sha256:<hex>` of the module bytes.
    pub digest: String,
    /// Where the compiled module came from.
    pub source: ModuleSource,
    /// Its instances.
    pub pool: InstancePool,
}

impl LoadedPlugin {
    /// Loads the module `settings` names into `engine`, with the settings' limits and config.
    pub fn load(
        engine: &PluginEngine,
        settings: &PluginSettings,
        tokens: Arc<dyn TokenStore>,
    ) -> Result<Self, LoadError> {
        let config = settings.config_bytes();
        let loaded = engine.load(
            ModuleRequest {
                name: &settings.name,
                module: &settings.module,
                digest: settings.digest.as_deref(),
                limits: &settings.limits,
                config: &config,
            },
            tokens,
        )?;
        Ok(Self {
            settings: settings.clone(),
            digest: loaded.digest,
            source: loaded.source,
            pool: loaded.pool,
        })
    }
}
