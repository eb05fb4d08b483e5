//! The sidecar's current state: config, plugin chain, upstream client and what each plugin runs.
//! Requests take a snapshot at their start, so a reload never changes an event mid-way.

use super::upstream::Upstream;
use crate::metrics::PluginName;
use eventplug_contract::{PluginStatus, SidecarConfig, StatusReport};
use eventplug_runtime::pipeline::Pipeline;
use hyper::Uri;
use std::collections::HashMap;
use std::sync::Arc;

/// Where events go.
pub struct Routes {
    /// The path audit events arrive on.
    pub audit_path: String,
    /// The path session events arrive under.
    pub session_path: Option<String>,
    /// Upstream for audit events.
    pub audit_url: Uri,
    /// Upstream base for session events (`.<sid>.log` is appended).
    pub session_url: Option<String>,
    /// Upstream for quarantined events.
    pub quarantine_url: Uri,
}

impl Routes {
    /// Routes from a checked config.
    pub fn new(config: &SidecarConfig) -> Result<Self, String> {
        let audit_url: Uri = config
            .upstream
            .audit_url
            .parse()
            .map_err(|e| format!("upstream.auditUrl: {e}"))?;
        let authority = audit_url
            .authority()
            .map(|a| a.as_str())
            .unwrap_or_default();
        let scheme = audit_url.scheme_str().unwrap_or("http");
        let quarantine_url = format!("{scheme}://{authority}/{}", config.delivery.quarantine_tag)
            .parse()
            .map_err(|e| format!("delivery.quarantineTag: {e}"))?;
        Ok(Self {
            audit_path: config.audit_path(),
            session_path: config.session_path(),
            audit_url,
            session_url: config.upstream.session_url.clone(),
            quarantine_url,
        })
    }

    /// The upstream URL of a session event.
    pub fn session_url(&self, session_id: &str) -> Option<Uri> {
        self.session_url
            .as_ref()
            .and_then(|base| format!("{base}.{session_id}.log").parse().ok())
    }
}

/// One applied config.
pub struct Live {
    /// The config.
    pub config: SidecarConfig,
    /// sha256 of the config file's bytes.
    pub config_hash: String,
    /// How many configs have been applied since start (1 for the first).
    pub generation: u64,
    /// The chain.
    pub pipeline: Arc<Pipeline>,
    /// Set when a configured plugin has no version running: events are refused until it loads.
    pub blocked: Option<String>,
    /// What each plugin runs.
    pub statuses: Vec<PluginStatus>,
    /// The upstream client.
    pub upstream: Arc<Upstream>,
    /// What the client was made from (settings and certificate files), to know when to remake it.
    pub upstream_fingerprint: String,
    /// Paths and URLs.
    pub routes: Routes,
    /// Each running plugin's name as a metric label.
    pub plugin_names: HashMap<String, PluginName>,
}

/// The metric labels of a chain's plugins.
pub fn plugin_names(pipeline: &Pipeline) -> HashMap<String, PluginName> {
    pipeline
        .plugins()
        .map(|p| (p.settings.name.clone(), Arc::new(p.settings.name.clone())))
        .collect()
}

impl Live {
    /// The metric label of a plugin of this chain.
    pub fn plugin_label(&self, name: &str) -> PluginName {
        self.plugin_names
            .get(name)
            .cloned()
            .unwrap_or_else(|| Arc::new(name.to_string()))
    }

    /// The status report.
    pub fn status(&self) -> StatusReport {
        StatusReport {
            api_version: self.config.api_version.clone(),
            accepted_api_versions: Vec::new(),
            config_hash: self.config_hash.clone(),
            generation: self.generation,
            revision: self.config.revision,
            ready: self.blocked.is_none(),
            blocked: self.blocked.clone(),
            upstream_refused: None,
            degraded: None,
            plugins: self.statuses.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}
