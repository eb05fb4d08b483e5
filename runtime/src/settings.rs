//! Settings of plugins and of the engine, as written in YAML (`eventplug run --config`, and the
//! sidecar's config later), with human units for durations and sizes.

use serde::{Deserialize, Deserializer};
use std::path::PathBuf;
use std::time::Duration;

/// Whether a plugin's verdict counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum FailurePolicy {
    /// The event continues as it entered the failing plugin (the failure is logged and counted).
    #[default]
    FailOpen,
    /// The event fails, so that nothing unfiltered leaves (for redaction plugins).
    FailClosed,
}

/// Limits that hold for every call into one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct PluginLimits {
    /// Wall-clock time one call may take; running wasm is interrupted when it is up.
    #[serde(deserialize_with = "de_duration")]
    pub timeout: Duration,
    /// Linear memory one instance may grow to, in bytes.
    #[serde(deserialize_with = "de_bytes")]
    pub memory_limit: u64,
    /// Instances of the plugin, each running one call at a time.
    pub concurrency: u32,
    /// How long a call waits for a free instance before it fails as busy.
    #[serde(deserialize_with = "de_duration")]
    pub max_wait: Duration,
    /// Largest response a call may return, in bytes.
    #[serde(deserialize_with = "de_bytes")]
    pub max_output: u64,
    /// Log lines one call may write; more are dropped and counted.
    pub max_log_lines_per_call: u32,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(100),
            memory_limit: 64 << 20,
            concurrency: 2,
            max_wait: Duration::from_secs(2),
            max_output: 8 << 20,
            max_log_lines_per_call: 32,
        }
    }
}

/// One plugin as configured: which module, which events, how it runs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PluginSettings {
    /// A name unique in the chain; used in logs, metrics and effects.
    pub name: String,
    /// The module file (`.wasm`, or `.wat` text).
    pub module: PathBuf,
    /// The module's expected `sha256:<hex>` digest; a file with other bytes is refused.
    #[serde(default)]
    pub digest: Option<String>,
    /// A label for the module's version (an OCI tag, say), reported in status.
    #[serde(default)]
    pub version: Option<String>,
    /// Lower runs first; plugins with equal priority run in the order given.
    #[serde(default)]
    pub priority: i32,
    /// Event types the plugin is called for (`user.login`, `session.*`, `*`); empty means all.
    #[serde(default)]
    pub events: Vec<String>,
    /// Enforce or shadow.
    #[serde(default)]
    pub mode: Mode,
    /// What happens to an event when the plugin fails on it.
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// The plugin's own configuration, handed to its `eventplug_init` as JSON text.
    #[serde(default)]
    pub config: Option<serde_json::Value>,
    /// Time, memory and concurrency limits.
    #[serde(default)]
    pub limits: PluginLimits,
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
        }
    }

    /// The configuration as the bytes handed to `eventplug_init` (empty when there is none).
    pub fn config_bytes(&self) -> Vec<u8> {
        match &self.config {
            None => Vec::new(),
            Some(value) => value.to_string().into_bytes(),
        }
    }
}

/// The longest duration any setting takes: longer values are mistakes, and refusing them keeps
/// every sum of durations far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

fn at_most_a_day(text: &str, duration: Duration) -> Result<Duration, String> {
    if duration > MAX_DURATION {
        return Err(format!(
            "`{text}` is longer than the 24 h any eventplug duration may be"
        ));
    }
    Ok(duration)
}

/// Parses a duration such as `250ms`, `2s`, `1m`, `500us` (a bare number is seconds), at most 24 h.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: write e.g. `250ms`, `2s` or `1m`"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" | "µs" => value / 1e6,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "`{text}` has the unknown unit `{other}`: use us, ms, s, m or h"
            ));
        }
    };
    if seconds > MAX_DURATION.as_secs_f64() {
        return at_most_a_day(text, Duration::MAX);
    }
    let duration = Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))?;
    at_most_a_day(text, duration)
}

/// Parses a size such as `64Mi`, `1Gi`, `512KiB`, `4096` (bytes).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size: write e.g. `64Mi`, `1Gi` or `4096`"))?;
    let shift = match unit.trim() {
        "" | "B" => 0,
        "Ki" | "KiB" => 10,
        "Mi" | "MiB" => 20,
        "Gi" | "GiB" => 30,
        other => {
            return Err(format!(
                "`{text}` has the unknown unit `{other}`: use Ki, Mi or Gi (powers of 1024)"
            ));
        }
    };
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("`{text}` is too large"))
}

/// A number or a string with a unit, as YAML gives it.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Number(u64),
    Text(String),
}

fn de_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    match NumberOrText::deserialize(deserializer)? {
        NumberOrText::Number(seconds) => {
            at_most_a_day(&seconds.to_string(), Duration::from_secs(seconds))
                .map_err(serde::de::Error::custom)
        }
        NumberOrText::Text(text) => parse_duration(&text).map_err(serde::de::Error::custom),
    }
}

fn de_bytes<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    match NumberOrText::deserialize(deserializer)? {
        NumberOrText::Number(bytes) => Ok(bytes),
        NumberOrText::Text(text) => parse_bytes(&text).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_unknown_ones() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert!(parse_duration("5 parsecs").unwrap_err().contains("parsecs"));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("25h").unwrap_err().contains("24 h"));
        assert!(
            parse_duration("18446744073709551615")
                .unwrap_err()
                .contains("24 h")
        );
        let yaml = "name: x\nmodule: x.wasm\nlimits: {maxWait: 18446744073709551615}\n";
        let err = serde_saphyr::from_str::<PluginSettings>(yaml).unwrap_err();
        assert!(err.to_string().contains("24 h"), "{err}");
    }

    #[test]
    fn sizes_parse_in_powers_of_1024() {
        assert_eq!(parse_bytes("64Mi"), Ok(64 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert!(parse_bytes("64MB").unwrap_err().contains("MB"));
        assert!(parse_bytes("99999999999999999999Gi").is_err());
    }

    #[test]
    fn plugin_settings_read_from_yaml_with_defaults_and_units() {
        let yaml = "name: redact\nmodule: r.wasm\nevents: [user.login]\nfailurePolicy: FailClosed\nmode: shadow\nconfig: {fields: [a]}\nlimits: {timeout: 20ms, memoryLimit: 16Mi}\n";
        let settings: PluginSettings = serde_saphyr::from_str(yaml).expect("valid settings");
        assert_eq!(settings.failure_policy, FailurePolicy::FailClosed);
        assert_eq!(settings.mode, Mode::Shadow);
        assert_eq!(settings.limits.timeout, Duration::from_millis(20));
        assert_eq!(settings.limits.memory_limit, 16 << 20);
        assert_eq!(
            settings.limits.concurrency,
            PluginLimits::default().concurrency
        );
        assert_eq!(settings.config_bytes(), br#"{"fields":["a"]}"#.to_vec());
    }

    #[test]
    fn unknown_keys_are_refused() {
        let yaml = "name: x\nmodule: x.wasm\nlimitz: {}\n";
        let err = serde_saphyr::from_str::<PluginSettings>(yaml).unwrap_err();
        assert!(err.to_string().contains("limitz"), "{err}");
    }
}
