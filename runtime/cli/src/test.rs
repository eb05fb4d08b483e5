//! `eventplug test`: runs a plugin's test build offline, against its fixtures, through the same
//! pipeline code as production, with host APIs recorded instead of carried out.

use crate::testing::{FixtureSet, TestHarness};
use anyhow::Context;
use eventplug_contract::PluginSettings;
use eventplug_runtime::engine::{EngineSettings, PluginEngine};
use eventplug_runtime::pipeline::LoadedPlugin;
use eventplug_runtime::store::LocalTokenStore;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Arguments of `eventplug test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The test build: the plugin plus its exported `test()`.
    #[arg(short, long, default_value = "build/test.wasm", value_name = "FILE")]
    build: PathBuf,
    /// The fixtures folder (`<id>-<name>.json` files).
    #[arg(short, long, default_value = "fixtures", value_name = "DIR")]
    fixtures: PathBuf,
    /// Configuration (JSON) handed to the plugin at init.
    #[arg(long, value_name = "JSON")]
    plugin_config: Option<String>,
    /// The time limit for each event `test()` handles, and for `test()`'s own code between them.
    #[arg(short, long, default_value = "10s", value_parser = eventplug_contract::Duration::parse)]
    timeout: eventplug_contract::Duration,
}

/// Exit code of a failed test.
const EXIT_TEST_FAILED: u8 = 1;

/// Runs the command.
pub fn test(args: TestArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let fixtures = FixtureSet::load(&args.fixtures).map_err(anyhow::Error::msg)?;
    let mut settings = PluginSettings::for_module("test", &args.build);
    settings.limits.timeout = args.timeout;
    settings.limits.concurrency = 1;
    settings.limits.max_log_lines_per_call = 100_000;
    if let Some(text) = &args.plugin_config {
        settings.config = Some(
            serde_json::from_str(text)
                .with_context(|| format!("--plugin-config is not valid JSON: {text}"))?,
        );
    }
    let engine = PluginEngine::with_extension(
        EngineSettings::with_default_cache(),
        Arc::new(TestHarness::new(Arc::new(fixtures))),
    )?;
    let plugin = LoadedPlugin::load(&engine, &settings, Arc::new(LocalTokenStore::new()))?;
    let run = plugin.pool.run_test()?;
    for log in &run.logs {
        writeln!(out, "{:?}: {}", log.level, log.message)?;
    }
    match run.outcome {
        Ok(()) => {
            writeln!(out, "Success!")?;
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            writeln!(out, "Failed: {}", first_line(&error.to_string()))?;
            Ok(ExitCode::from(EXIT_TEST_FAILED))
        }
    }
}

/// The message without the wasm backtrace that follows it.
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}
