//! `eventplug bench`: how fast a plugin compiles, loads, instantiates and handles events, measured on
//! this machine with the same code paths production uses.

use super::chain_file::plugin_settings;
use anyhow::{Context, bail};
use eventplug_runtime::engine::{EngineSettings, PluginEngine};
use eventplug_runtime::pipeline::{
    LoadedPlugin, Pipeline, PipelineSettings, Verdict, encode_event,
};
use eventplug_runtime::store::LocalTokenStore;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Arguments of `eventplug bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// The plugin module to measure.
    #[arg(long, value_name = "FILE")]
    plugin: PathBuf,
    /// Configuration (JSON) handed to the plugin at init.
    #[arg(long, value_name = "JSON")]
    plugin_config: Option<String>,
    /// Events to cycle through, one JSON object per line (default: the bundled sample events).
    #[arg(long, value_name = "FILE")]
    events: Option<PathBuf>,
    /// How long to run the pipeline measurement.
    #[arg(long, default_value = "3s", value_parser = eventplug_contract::Duration::parse)]
    duration: eventplug_contract::Duration,
}

/// The sample events bundled with eventplug (about 1 KB each).
pub const SAMPLE_EVENTS: &str = include_str!("../../../examples/events/sample.jsonl");

fn rate(count: u64, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64()
}

/// Runs the command.
pub fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let text = match &args.events {
        Some(file) => std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?,
        None => SAMPLE_EVENTS.to_string(),
    };
    let events: Vec<Vec<u8>> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.as_bytes().to_vec())
        .collect();
    if events.is_empty() {
        bail!("no events to run: the events file has no lines");
    }
    let mut settings = plugin_settings(
        std::slice::from_ref(&args.plugin),
        args.plugin_config.as_deref(),
        None,
    )?
    .remove(0);
    settings.limits.concurrency = 1;
    let cache = std::env::temp_dir().join(format!("eventplug-bench-{}", std::process::id()));
    let engine_settings = EngineSettings {
        cache_dir: Some(cache.clone()),
        ..EngineSettings::default()
    };
    let tokens = Arc::new(LocalTokenStore::new());

    writeln!(out, "plugin: {}", args.plugin.display())?;
    let started = Instant::now();
    let cold = LoadedPlugin::load(
        &PluginEngine::new(engine_settings.clone())?,
        &settings,
        tokens.clone(),
    )?;
    writeln!(
        out,
        "load, compiling:                 {:>10.2} ms",
        started.elapsed().as_secs_f64() * 1e3
    )?;
    drop(cold);

    let engine = PluginEngine::new(engine_settings)?;
    let started = Instant::now();
    let plugin = LoadedPlugin::load(&engine, &settings, tokens)?;
    let load = started.elapsed();
    writeln!(
        out,
        "load, precompiled from disk:     {:>10.3} ms  (includes the first instance; source: {:?})",
        load.as_secs_f64() * 1e3,
        plugin.source
    )?;

    let rounds = 2000u32;
    let started = Instant::now();
    for _ in 0..rounds {
        plugin.pool.start_and_drop_instance()?;
    }
    writeln!(
        out,
        "fresh instance (incl. init):     {:>10.2} µs",
        started.elapsed().as_secs_f64() * 1e6 / f64::from(rounds)
    )?;

    let mean_size = events.iter().map(Vec::len).sum::<usize>() / events.len();
    let (encoded, elapsed) = run_for(args.duration.get() / 3, &events, |event| {
        encode_event(event).map(|_| ()).map_err(anyhow::Error::from)
    })?;
    writeln!(
        out,
        "JSON -> envelope only:           {:>10.0} events/s  (mean event {mean_size} bytes)",
        rate(encoded, elapsed)
    )?;

    let pipeline = Pipeline::new(
        vec![Arc::new(plugin)],
        PipelineSettings {
            verdict_cache_entries: 0,
            ..PipelineSettings::default()
        },
    );
    let mut modified = 0u64;
    let mut skipped = 0u64;
    // As in `eventplug run`: a current-thread runtime, so each call runs directly on this thread.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    let (count, elapsed) =
        runtime.block_on(run_for_async(args.duration.get(), &events, async |event| {
            match &pipeline.process(event).await?.outcome.verdict {
                Verdict::Modified(_) => modified += 1,
                Verdict::Skip { .. } => skipped += 1,
                Verdict::Fail { plugin, error } => bail!("{plugin} failed: {error}"),
                Verdict::Forward => {}
            }
            Ok(())
        }))?;
    writeln!(
        out,
        "pipeline, one thread:            {:>10.0} events/s  ({:.2} µs/event; {count} events: {modified} modified, {skipped} skipped)",
        rate(count, elapsed),
        elapsed.as_secs_f64() * 1e6 / count as f64
    )?;
    let _ = std::fs::remove_dir_all(cache);
    Ok(ExitCode::SUCCESS)
}

/// Calls `work` on the events in turn until `duration` has passed; returns the count and time.
fn run_for(
    duration: Duration,
    events: &[Vec<u8>],
    mut work: impl FnMut(&[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < duration {
        for event in events {
            work(event)?;
            count += 1;
        }
    }
    Ok((count, started.elapsed()))
}

/// [`run_for`] for work that is awaited.
async fn run_for_async(
    duration: Duration,
    events: &[Vec<u8>],
    mut work: impl AsyncFnMut(&[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<(u64, Duration)> {
    let started = Instant::now();
    let mut count = 0u64;
    while started.elapsed() < duration {
        for event in events {
            work(event).await?;
            count += 1;
        }
    }
    Ok((count, started.elapsed()))
}
