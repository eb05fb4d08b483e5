//! One plugin's settings: which module, which events, how it runs and within which limits. The same
//! keys appear in the sidecar config's `plugins` list and in `eventplug run --config` chain files.

use crate::{ByteSize, Duration, ValidationError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Whether a plugin's verdict counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The plugin's verdict, edits and effects apply.
    #[default]
    Enforce,
    /// The plugin runs and what it would have done is recorded; the event goes on as if the plugin
    /// were absent, and its effects are recorded, not carried out.
    Shadow,
}

/// What happens to an event when a plugin fails on it (error verdict, trap, timeout, memory cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum FailurePolicy {
    /// The event continues as it entered the failing plugin (the failure is logged and counted).
    #[default]
    FailOpen,
    /// The event fails, so that nothing unfiltered leaves (for redaction plugins).
    FailClosed,
}

/// Limits that hold for every call into one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct PluginLimits {
    /// Wall-clock time one call may take; running wasm is interrupted when it is up.
    pub timeout: Duration,
    /// Linear memory one instance may grow to.
    pub memory_limit: ByteSize,
    /// Instances of the plugin, each running one call at a time.
    #[schemars(range(min = 1, max = 256))]
    pub concurrency: u32,
    /// How long a call waits for a free instance before it fails as busy.
    pub max_wait: Duration,
    /// Largest response a call may return.
    pub max_output: ByteSize,
    /// Log lines one call may write; more are dropped and counted.
    pub max_log_lines_per_call: u32,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(100),
            memory_limit: ByteSize(64 << 20),
            concurrency: 2,
            max_wait: Duration::from_secs(2),
            max_output: ByteSize(8 << 20),
            max_log_lines_per_call: 32,
        }
    }
}

impl PluginLimits {
    /// Checks what every engine needs of the limits; the paths are relative to the limits.
    pub fn check(&self) -> Result<(), ValidationError> {
        if self.timeout.get().is_zero() {
            return Err(ValidationError::at("timeout", "must be above zero"));
        }
        if self.concurrency == 0 || self.concurrency > crate::MAX_INSTANCES {
            return Err(ValidationError::at(
                "concurrency",
                format!(
                    "must be from 1 to {}, not {}",
                    crate::MAX_INSTANCES,
                    self.concurrency
                ),
            ));
        }
        if self.memory_limit.get() == 0 {
            return Err(ValidationError::at("memoryLimit", "must be above zero"));
        }
        Ok(())
    }
}

/// The longest plugin name (a Kubernetes object name: the operator names plugins after their EventPlugin).
pub const MAX_NAME_BYTES: usize = 253;

/// One plugin as configured: which module, which events, how it runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PluginSettings {
    /// A name unique in the chain; used in logs, metrics and effects.
    pub name: String,
    /// The module file (`.wasm`, or `.wat` text), or an OCI reference pinned to a digest:
    /// `oci://host/repository@sha256:…`, or `oci://host/repository:tag` with `digest` set to the
    /// manifest digest the tag resolved to (docs/oci.md).
    pub module: PathBuf,
    /// The module's expected `sha256:<hex>` digest; a file with other bytes is refused. For an
    /// `oci://` module, the manifest digest (what `eventplug push` prints after `@`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// A label for the module's version (an OCI tag, say), reported in status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Lower runs first; plugins with equal priority run in the order given.
    #[serde(default)]
    pub priority: i32,
    /// Event types the plugin is called for (`user.login`, `session.*`, `*`); empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// Enforce or shadow.
    #[serde(default)]
    pub mode: Mode,
    /// What happens to an event when the plugin fails on it.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// The plugin's own configuration, handed to its `eventplug_init` as JSON text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<serde_json::Value>,
    /// Time, memory and concurrency limits.
    #[serde(default)]
    pub limits: PluginLimits,
    /// An emergency stop: while set, the sidecar refuses every event with 503 (event-handler
    /// retries), so nothing passes the chain unfiltered; the plugin stays loaded for a quick resume.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

impl PluginSettings {
    /// Settings with every default, for a module file given on the command line.
    pub fn for_module(name: impl Into<String>, module: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            module: module.into(),
            digest: None,
            version: None,
            priority: 0,
            events: Vec::new(),
            mode: Mode::Enforce,
            failure_policy: FailurePolicy::FailOpen,
            config: None,
            limits: PluginLimits::default(),
            suspend: false,
        }
    }

    /// The configuration as the bytes handed to `eventplug_init` (empty when there is none).
    pub fn config_bytes(&self) -> Vec<u8> {
        match &self.config {
            None => Vec::new(),
            Some(value) => value.to_string().into_bytes(),
        }
    }

    /// Whether the plugin guards the chain: it enforces, and an event it fails on fails (a
    /// redactor). While such a plugin runs, no event's original body may leave past it by any path.
    pub fn guards_the_chain(&self) -> bool {
        self.mode == Mode::Enforce && self.failure_policy == FailurePolicy::FailClosed
    }

    /// The module's OCI reference (without `oci://`), when `module` is one.
    pub fn oci_reference(&self) -> Option<&str> {
        self.module.to_str()?.strip_prefix("oci://")
    }

    /// Checks one plugin's settings; the paths are relative to the plugin.
    pub fn check(&self) -> Result<(), ValidationError> {
        if self.name.is_empty() {
            return Err(ValidationError::at("name", "is empty"));
        }
        // The name labels metrics and log lines and keys effects: keep it to a safe alphabet.
        let safe = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
        if self.name.len() > MAX_NAME_BYTES
            || !self.name.chars().all(safe)
            || !self.name.starts_with(|c: char| c.is_ascii_alphanumeric())
        {
            return Err(ValidationError::at(
                "name",
                format!(
                    "`{}` must be 1 to {MAX_NAME_BYTES} letters, digits, `.`, `_` or `-`, starting with a letter or digit",
                    self.name.escape_debug()
                ),
            ));
        }
        if let Some(reference) = self.oci_reference() {
            let pinned = reference.rsplit_once('@').map(|(_, digest)| digest);
            match (pinned, &self.digest) {
                (None, None) => {
                    return Err(ValidationError::at(
                        "module",
                        format!(
                            "`oci://{reference}` names no digest, and a tag can move: pin it as `oci://{reference}@sha256:…`, or set `digest:` to the digest the tag resolved to (`eventplug push` prints it)"
                        ),
                    ));
                }
                (Some(pinned), Some(digest)) if !pinned.eq_ignore_ascii_case(digest) => {
                    return Err(ValidationError::at(
                        "digest",
                        format!(
                            "{digest} differs from the digest in the module reference, {pinned}"
                        ),
                    ));
                }
                (Some(pinned), _)
                    if !(pinned.len() == 71
                        && pinned.starts_with("sha256:")
                        && pinned[7..].bytes().all(|b| b.is_ascii_hexdigit())) =>
                {
                    return Err(ValidationError::at(
                        "module",
                        "the digest after `@` must be `sha256:` and 64 hex digits",
                    ));
                }
                _ => {}
            }
        }
        if let Some(digest) = &self.digest {
            let hex = digest.strip_prefix("sha256:").unwrap_or("");
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ValidationError::at(
                    "digest",
                    "must be `sha256:` and 64 hex digits",
                ));
            }
        }
        self.limits.check().map_err(|e| e.within("limits"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::from_yaml;

    #[test]
    fn plugin_settings_read_from_yaml_with_defaults_and_units() {
        let yaml = "name: redact\nmodule: r.wasm\nevents: [user.login]\nfailurePolicy: FailClosed\nmode: shadow\nconfig: {fields: [a]}\nlimits: {timeout: 20ms, memoryLimit: 16Mi}\n";
        let settings: PluginSettings = from_yaml(yaml).expect("valid settings");
        assert_eq!(settings.failure_policy, FailurePolicy::FailClosed);
        assert_eq!(settings.mode, Mode::Shadow);
        assert_eq!(settings.limits.timeout, Duration::from_millis(20));
        assert_eq!(settings.limits.memory_limit, ByteSize(16 << 20));
        assert_eq!(
            settings.limits.concurrency,
            PluginLimits::default().concurrency
        );
        assert_eq!(settings.config_bytes(), br#"{"fields":["a"]}"#.to_vec());
    }

    #[test]
    fn unknown_keys_and_bad_values_name_their_path() {
        let err = from_yaml::<PluginSettings>("name: x\nmodule: x.wasm\nlimitz: {}\n").unwrap_err();
        assert!(err.message.contains("limitz"), "{err}");
        let err = from_yaml::<PluginSettings>(
            "name: x\nmodule: x.wasm\nlimits: {maxWait: 18446744073709551615s}\n",
        )
        .unwrap_err();
        assert_eq!(err.path, "limits.maxWait", "{err}");
        assert!(err.message.contains("24h"), "{err}");
        let err = from_yaml::<PluginSettings>("name: x\nmodule: x.wasm\nlimits: {timeout: 5}\n")
            .unwrap_err();
        assert_eq!(err.path, "limits.timeout", "{err}");
        assert!(err.message.contains("`5s`"), "{err}");
        assert_eq!(err.position.map(|p| p.0), Some(3), "{err}");
    }

    #[test]
    fn names_are_a_safe_alphabet() {
        for good in ["redact", "c-filter", "team.redact_v2", &"a".repeat(253)] {
            assert_eq!(
                PluginSettings::for_module(good, "x.wasm").check(),
                Ok(()),
                "{good}"
            );
        }
        for bad in ["a\"b", "-x", "a b", "é", "a/b", "a\nb", &"a".repeat(254)] {
            let err = PluginSettings::for_module(bad, "x.wasm")
                .check()
                .unwrap_err();
            assert_eq!(err.path, "name", "{bad}");
        }
    }

    #[test]
    fn checks_name_the_key() {
        let mut settings = PluginSettings::for_module("x", "x.wasm");
        settings.limits.concurrency = 0;
        assert_eq!(settings.check().unwrap_err().path, "limits.concurrency");
        settings.limits.concurrency = 1;
        settings.digest = Some("sha256:abc".into());
        assert_eq!(settings.check().unwrap_err().path, "digest");
        settings.digest = None;
        settings.module = "oci://127.0.0.1:5000/team/redact:v1".into();
        let err = settings.check().unwrap_err();
        assert_eq!(err.path, "module");
        assert!(err.message.contains("a tag can move"), "{err}");
        settings.digest = Some(format!("sha256:{}", "a".repeat(64)));
        settings.check().expect("a tag with its digest beside it");
        settings.module =
            format!("oci://127.0.0.1:5000/team/redact@sha256:{}", "b".repeat(64)).into();
        assert_eq!(settings.check().unwrap_err().path, "digest");
        settings.digest = None;
        settings.check().expect("pinned in the reference");
        settings.limits.timeout = Duration::default();
        assert_eq!(settings.check().unwrap_err().path, "limits.timeout");
    }
}
