//! The running plugins and how a new config becomes them: unchanged plugins are kept as they are,
//! changed ones are loaded anew, and a plugin whose new version fails keeps its last good version.

use crate::module_source::ModuleSources;
use eventplug_contract::PluginSettings;
use eventplug_contract::PluginStatus;
use eventplug_runtime::engine::{PluginEngine, module_digest};
use eventplug_runtime::pipeline::LoadedPlugin;
use eventplug_runtime::store::TokenStore;
use std::collections::HashMap;
use std::sync::Arc;

/// The outcome of applying plugin settings.
pub struct Applied {
    /// Plugins to run, in config order.
    pub plugins: Vec<Arc<LoadedPlugin>>,
    /// One status per configured plugin.
    pub statuses: Vec<PluginStatus>,
}

impl Applied {
    /// Configured plugins with no version running at all (the chain is incomplete without them).
    pub fn missing(&self) -> Vec<&PluginStatus> {
        self.statuses
            .iter()
            .filter(|s| s.running_digest.is_none())
            .collect()
    }
}

/// Loads `wanted`, reusing plugins of `running` whose settings and module bytes are unchanged and
/// keeping a running plugin's last good version when its new one fails to load. `oci://` modules
/// are resolved through `sources` first.
pub fn apply(
    engine: &PluginEngine,
    sources: &ModuleSources,
    running: &[Arc<LoadedPlugin>],
    wanted: &[PluginSettings],
    tokens: &Arc<dyn TokenStore>,
) -> Applied {
    let by_name: HashMap<&str, &Arc<LoadedPlugin>> = running
        .iter()
        .map(|p| (p.settings.name.as_str(), p))
        .collect();
    let mut applied = Applied {
        plugins: Vec::new(),
        statuses: Vec::new(),
    };
    for configured in wanted {
        let resolved = sources.resolve(configured);
        let settings: &PluginSettings = resolved.as_deref().unwrap_or(configured);
        let previous = by_name.get(settings.name.as_str()).copied();
        let unchanged = previous.filter(|p| {
            p.settings == *settings
                && std::fs::read(&settings.module)
                    .map(|bytes| module_digest(&bytes))
                    .ok()
                    .as_deref()
                    == Some(p.digest.as_str())
        });
        let status = |running: Option<&Arc<LoadedPlugin>>, error: Option<String>| PluginStatus {
            name: settings.name.clone(),
            module: configured.module.display().to_string(),
            version: settings.version.clone(),
            running_digest: running.map(|p| p.digest.clone()),
            loaded: error.is_none(),
            error,
        };
        if let Some(plugin) = unchanged {
            applied.statuses.push(status(Some(plugin), None));
            applied.plugins.push(plugin.clone());
            continue;
        }
        let loaded = resolved
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|settings| {
                LoadedPlugin::load(engine, settings, tokens.clone()).map_err(|e| e.to_string())
            });
        match loaded {
            Ok(plugin) => {
                let plugin = Arc::new(plugin);
                tracing::info!(plugin = %settings.name, digest = %plugin.digest, "plugin loaded");
                applied.statuses.push(status(Some(&plugin), None));
                applied.plugins.push(plugin);
            }
            Err(error) => {
                let error = reportable(&error, settings.config.as_ref());
                match previous {
                    Some(last_good) => {
                        tracing::error!(plugin = %settings.name, %error, running = %last_good.digest, "new plugin version failed to load; its last good version keeps running");
                        applied.statuses.push(status(Some(last_good), Some(error)));
                        applied.plugins.push(last_good.clone());
                    }
                    None => {
                        tracing::error!(plugin = %settings.name, %error, "plugin failed to load; events are refused (503) until it loads");
                        applied.statuses.push(status(None, Some(error)));
                    }
                }
            }
        }
    }
    applied
}

/// A load error as `/readyz` and `/status` show it: one line, and with every string of the
/// plugin's own `config` (which may hold credentials, and which a plugin may quote when refusing
/// it) replaced by `<config value>`.
fn reportable(error: &str, config: Option<&serde_json::Value>) -> String {
    fn strings<'a>(value: &'a serde_json::Value, found: &mut Vec<&'a str>) {
        match value {
            serde_json::Value::String(s) => found.push(s),
            serde_json::Value::Array(items) => items.iter().for_each(|v| strings(v, found)),
            serde_json::Value::Object(map) => map.values().for_each(|v| strings(v, found)),
            _ => {}
        }
    }
    let mut secrets = Vec::new();
    if let Some(config) = config {
        strings(config, &mut secrets);
    }
    // Longest first, so that a value containing another is replaced whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut text = super::response::one_line(error);
    for secret in secrets.into_iter().filter(|s| s.len() >= 4) {
        text = text.replace(secret, "<config value>");
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn reported_load_errors_are_one_line_without_config_values() {
        let config = serde_json::json!({"apiKey": "hunter2-secret", "n": [ "abc", "token-xyz" ]});
        let text = super::reportable(
            "refused its configuration:\nkey hunter2-secret is wrong\n  token-xyz too; abc",
            Some(&config),
        );
        assert_eq!(
            text,
            "refused its configuration: key <config value> is wrong token-xyz too; abc"
                .replace("token-xyz", "<config value>")
        );
    }
}
