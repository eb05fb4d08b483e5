//! The plugin chain a command runs: `--plugin` files and/or a `--config` YAML file.

use anyhow::{Context, bail};
use eventplug_contract::{PluginSettings, from_yaml};
use eventplug_runtime::engine::PluginEngine;
use eventplug_runtime::pipeline::LoadedPlugin;
use eventplug_runtime::store::TokenStore;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A chain file: `plugins:` as a list of plugin settings (docs/abi.md, "Running plugins").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChainFile {
    plugins: Vec<PluginSettings>,
}

/// Collects plugin settings from `--plugin` paths (with `--plugin-config`) and a `--config` file;
/// module paths in the file are relative to the file.
pub(crate) fn plugin_settings(
    modules: &[PathBuf],
    plugin_config: Option<&str>,
    config_file: Option<&Path>,
) -> anyhow::Result<Vec<PluginSettings>> {
    let mut all = Vec::new();
    if let Some(file) = config_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the chain file {}", file.display()))?;
        let invalid = |e: eventplug_contract::ValidationError| {
            anyhow::anyhow!("chain file {} is not valid: {e}", file.display())
        };
        let chain: ChainFile = from_yaml(&text).map_err(invalid)?;
        for (i, settings) in chain.plugins.iter().enumerate() {
            settings
                .check()
                .map_err(|e| invalid(e.within(&format!("plugins[{i}]"))))?;
        }
        let base = file.parent().unwrap_or(Path::new("."));
        for mut settings in chain.plugins {
            if settings.module.is_relative() {
                settings.module = base.join(&settings.module);
            }
            all.push(settings);
        }
    }
    let config = plugin_config
        .map(|text| {
            serde_json::from_str::<serde_json::Value>(text)
                .with_context(|| format!("--plugin-config is not valid JSON: {text}"))
        })
        .transpose()?;
    for module in modules {
        let name = module
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "plugin".to_string());
        let mut settings = PluginSettings::for_module(name, module.clone());
        settings.config = config.clone();
        all.push(settings);
    }
    if all.is_empty() {
        bail!("no plugin given: pass --plugin FILE.wasm or --config CHAIN.yaml");
    }
    let mut names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    if let Some(pair) = names.windows(2).find(|pair| pair[0] == pair[1]) {
        bail!(
            "two plugins are named {:?}; names must be unique (set `name:` in the chain file)",
            pair[0]
        );
    }
    Ok(all)
}

/// Loads every plugin, stopping at the first that fails.
pub(crate) fn load_all(
    engine: &PluginEngine,
    settings: &[PluginSettings],
    tokens: Arc<dyn TokenStore>,
) -> anyhow::Result<Vec<Arc<LoadedPlugin>>> {
    settings
        .iter()
        .map(|s| {
            LoadedPlugin::load(engine, s, tokens.clone())
                .map(Arc::new)
                .map_err(anyhow::Error::from)
        })
        .collect()
}
