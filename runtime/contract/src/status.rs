//! What a sidecar reports at `/status`: the config it runs and what each plugin runs. The operator
//! reads it to decide whether an EventPlugin is Ready.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What one configured plugin is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginStatus {
    /// The plugin's name.
    pub name: String,
    /// The module configured.
    pub module: String,
    /// The configured version label, if any.
    pub version: Option<String>,
    /// Digest of the version running now, if any.
    pub running_digest: Option<String>,
    /// Whether the configured version is the one running.
    pub loaded: bool,
    /// Why the configured version is not running.
    pub error: Option<String>,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// The `apiVersion` of the config running.
    pub api_version: String,
    /// The config `apiVersion`s this sidecar reads, newest first (empty from a sidecar older
    /// than this field: it reads `api_version`).
    #[serde(default)]
    pub accepted_api_versions: Vec<String>,
    /// `sha256:<hex>` of the config file's bytes.
    pub config_hash: String,
    /// Configs applied since start (1 for the first).
    pub generation: u64,
    /// The running config's `revision` (0 for a config without one).
    #[serde(default)]
    pub revision: u64,
    /// Whether events are accepted.
    pub ready: bool,
    /// Why not, when not.
    pub blocked: Option<String>,
    /// Set while the upstream refuses the sidecar itself (401, 403 or 404: a certificate or URL
    /// it does not accept); events are refused with 503 meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_refused: Option<String>,
    /// Set while effects are degraded (the lock effect queue is full, or a lock effect keeps
    /// failing): events whose lock effects cannot be carried out are refused with 503 meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degraded: Option<String>,
    /// Per configured plugin, in config order.
    pub plugins: Vec<PluginStatus>,
    /// The sidecar's version.
    pub version: String,
}

impl StatusReport {
    /// The config `apiVersion`s this sidecar reads (a report from before the list: the version of
    /// the config it runs).
    pub fn reads(&self) -> Vec<&str> {
        if self.accepted_api_versions.is_empty() {
            vec![self.api_version.as_str()]
        } else {
            self.accepted_api_versions
                .iter()
                .map(String::as_str)
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_reads_back_from_its_json() {
        let report = StatusReport {
            api_version: crate::API_VERSION.into(),
            accepted_api_versions: vec![crate::API_VERSION.into()],
            config_hash: "sha256:00".into(),
            generation: 3,
            revision: 7,
            ready: false,
            blocked: Some("plugins not loaded".into()),
            upstream_refused: None,
            degraded: None,
            plugins: vec![PluginStatus {
                name: "redact".into(),
                module: "/m/redact.wasm".into(),
                version: None,
                running_digest: Some("sha256:11".into()),
                loaded: false,
                error: Some("bad module".into()),
            }],
            version: "0.1.0".into(),
        };
        let json = serde_json::to_string(&report).expect("serializes");
        assert!(json.contains("\"runningDigest\":\"sha256:11\""), "{json}");
        let back: StatusReport = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, report);
    }
}
