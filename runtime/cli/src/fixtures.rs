//! `eventplug fixtures`: templates of realistic audit events, and fixture files made from them.

use crate::testing::FixtureSet;
use anyhow::{Context, bail};
use eventplug_runtime::pipeline::format_rfc3339;
use serde::Deserialize;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// The templates, generated from Teleport's audit event reference into `sdk/fixture-templates.json`.
const TEMPLATES: &str = include_str!("../../../sdk/fixture-templates.json");

/// Arguments of `eventplug fixtures`.
#[derive(Debug, clap::Args)]
pub struct FixturesArgs {
    #[command(subcommand)]
    command: FixturesCommand,
}

#[derive(Debug, clap::Subcommand)]
enum FixturesCommand {
    /// List the templates: one per typed event of the SDK.
    ListTemplates,
    /// Write `<dir>/<next id>-<NAME>.json` from a template, with a fresh uid and the current time.
    Generate {
        /// The template (see list-templates).
        template: String,
        /// The fixture's name (letters, digits, `-`, `_`).
        name: String,
        /// The fixtures folder.
        #[arg(long, default_value = "fixtures")]
        dir: PathBuf,
    },
}

/// One template.
#[derive(Debug, Deserialize)]
pub struct Template {
    /// Its name (`user-login`).
    pub name: String,
    /// The event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The event code.
    #[serde(default)]
    pub code: String,
    /// What the event is.
    #[serde(default)]
    pub description: String,
    /// The flat event.
    pub event: serde_json::Map<String, serde_json::Value>,
}

/// Every template.
pub fn templates() -> anyhow::Result<Vec<Template>> {
    serde_json::from_str(TEMPLATES).context("the bundled fixture templates are malformed")
}

/// A random UUID (version 4), from the standard library's per-process random keys.
fn uuid_v4() -> String {
    let random = || {
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    };
    let (high, low) = (random(), random());
    let high = (high & 0xffff_ffff_ffff_0fff) | 0x4000;
    let low = (low & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        high >> 32,
        (high >> 16) & 0xffff,
        high & 0xffff,
        low >> 48,
        low & 0xffff_ffff_ffff
    )
}

/// Runs the command.
pub fn fixtures(args: FixturesArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let templates = templates()?;
    match args.command {
        FixturesCommand::ListTemplates => {
            for template in &templates {
                writeln!(
                    out,
                    "{:<32} {:<28} {}",
                    template.name, template.event_type, template.code
                )?;
                if !template.description.is_empty() {
                    writeln!(out, "    {}", template.description)?;
                }
                writeln!(
                    out,
                    "    eventplug fixtures generate {} my-{}",
                    template.name, template.name
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
        FixturesCommand::Generate {
            template,
            name,
            dir,
        } => {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                bail!("fixture name {name:?}: use letters, digits, `-` and `_`");
            }
            let Some(found) = templates.iter().find(|t| t.name == template) else {
                let names: Vec<&str> = templates.iter().map(|t| t.name.as_str()).collect();
                bail!(
                    "no template {template:?}; the templates are: {}",
                    names.join(", ")
                );
            };
            let existing = FixtureSet::load(&dir).map_err(anyhow::Error::msg)?;
            let mut event = found.event.clone();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            event.insert("uid".into(), uuid_v4().into());
            event.insert(
                "time".into(),
                format_rfc3339(
                    i64::try_from(now.as_secs()).unwrap_or(i64::MAX),
                    now.subsec_millis(),
                )
                .into(),
            );
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            let path = dir.join(format!("{}-{name}.json", existing.next_id()));
            let text = serde_json::to_string_pretty(&serde_json::Value::Object(event))?;
            std::fs::write(&path, text + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
            writeln!(out, "{}", path.display())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4_and_differ() {
        let (a, b) = (uuid_v4(), uuid_v4());
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }

    #[test]
    fn every_template_is_a_typed_event() {
        let templates = templates().expect("templates parse");
        assert!(templates.len() >= 20, "only {} templates", templates.len());
        for template in &templates {
            assert_eq!(
                template.event.get("event").and_then(|v| v.as_str()),
                Some(template.event_type.as_str()),
                "{}",
                template.name
            );
        }
    }
}
