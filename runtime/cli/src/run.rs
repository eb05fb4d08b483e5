//! `eventplug run`: plugins on events from stdin, forwarded events to stdout, everything else to
//! stderr.

use super::chain_file::{load_all, plugin_settings};
use eventplug_runtime::engine::{EngineSettings, PluginEngine};
use eventplug_runtime::pipeline::{Pipeline, PipelineSettings, Processed, StepResult, Verdict};
use eventplug_runtime::store::LocalTokenStore;
use std::io::{BufRead, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Arguments of `eventplug run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A plugin module (.wasm or .wat); repeat for a chain (run in the order given).
    #[arg(long = "plugin", value_name = "FILE")]
    plugins: Vec<PathBuf>,
    /// Configuration (JSON) handed to each `--plugin` at init.
    #[arg(long, value_name = "JSON")]
    plugin_config: Option<String>,
    /// A chain file (YAML, `plugins:` with per-plugin settings; see docs/abi.md).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Do not print the plugins' log lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(Default)]
struct Summary {
    received: u64,
    forwarded: u64,
    modified: u64,
    skipped: u64,
    /// Forwarded although an enforcing plugin failed on them (its policy is `FailOpen`): the
    /// event continued as it entered that plugin.
    failed_open: u64,
    failed: u64,
}

/// Runs the command.
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let settings = plugin_settings(
        &args.plugins,
        args.plugin_config.as_deref(),
        args.config.as_deref(),
    )?;
    let engine = PluginEngine::new(EngineSettings::with_default_cache())?;
    let plugins = load_all(&engine, &settings, Arc::new(LocalTokenStore::new()))?;
    let pipeline = Pipeline::new(plugins, PipelineSettings::default());
    // Events run one at a time: the pipeline's waits need a runtime, not more threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;

    let stdin = std::io::stdin().lock();
    let mut out = BufWriter::new(std::io::stdout().lock());
    let mut err = std::io::stderr().lock();
    let mut summary = Summary::default();
    for (number, line) in stdin.split(b'\n').enumerate() {
        let line = line?;
        let number = number + 1;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        summary.received += 1;
        match runtime.block_on(pipeline.process(&line)) {
            Err(error) => {
                summary.failed += 1;
                writeln!(err, "event {number}: {error}")?;
            }
            Ok(processed) => {
                report(&mut err, number, &processed, args.quiet)?;
                let failed_open = processed
                    .outcome
                    .steps
                    .iter()
                    .any(|step| !step.shadow && matches!(step.result, StepResult::Failed(_)));
                match &processed.outcome.verdict {
                    Verdict::Forward => {
                        if failed_open {
                            summary.failed_open += 1;
                        } else {
                            summary.forwarded += 1;
                        }
                        out.write_all(&line)?;
                        out.write_all(b"\n")?;
                    }
                    Verdict::Modified(bytes) => {
                        if failed_open {
                            summary.failed_open += 1;
                        } else {
                            summary.modified += 1;
                        }
                        out.write_all(bytes)?;
                        out.write_all(b"\n")?;
                    }
                    Verdict::Skip { plugin } => {
                        summary.skipped += 1;
                        writeln!(err, "event {number}: skipped by {plugin}")?;
                    }
                    Verdict::Fail { plugin, error } => {
                        summary.failed += 1;
                        writeln!(
                            err,
                            "event {number}: failed in {plugin} (FailClosed): {error}"
                        )?;
                    }
                }
            }
        }
    }
    out.flush()?;
    writeln!(
        err,
        "summary: in={} forwarded={} modified={} skipped={} failed-open={} failed={}",
        summary.received,
        summary.forwarded,
        summary.modified,
        summary.skipped,
        summary.failed_open,
        summary.failed
    )?;
    Ok(ExitCode::SUCCESS)
}

fn report(
    err: &mut impl Write,
    number: usize,
    processed: &Processed,
    quiet: bool,
) -> std::io::Result<()> {
    if processed.replayed {
        return writeln!(
            err,
            "event {number}: a redelivery of an earlier event ({}): its verdict is reused, no plugin ran and no effect is repeated",
            processed.identity.key()
        );
    }
    for step in &processed.outcome.steps {
        if !quiet {
            for log in &step.logs {
                writeln!(
                    err,
                    "event {number}: [{}] {:?}: {}",
                    step.plugin, log.level, log.message
                )?;
            }
        }
        if step.dropped_logs > 0 {
            writeln!(
                err,
                "event {number}: [{}] {} log lines dropped (per-call limit)",
                step.plugin, step.dropped_logs
            )?;
        }
        let shadow = if step.shadow {
            " (shadow: not applied)"
        } else {
            ""
        };
        let failed_closed = matches!(
            &processed.outcome.verdict,
            Verdict::Fail { plugin, .. } if *plugin == step.plugin
        );
        match &step.result {
            StepResult::Failed(error) if step.shadow || failed_closed => writeln!(
                err,
                "event {number}: [{}] failed: {error}{shadow}",
                step.plugin
            )?,
            StepResult::Failed(error) => writeln!(
                err,
                "event {number}: [{}] failed-open: {error} (FailOpen: the event continues as it entered this plugin)",
                step.plugin
            )?,
            StepResult::Skipped if step.shadow => {
                writeln!(err, "event {number}: [{}] would skip{shadow}", step.plugin)?
            }
            StepResult::Modified(n) if step.shadow => writeln!(
                err,
                "event {number}: [{}] would make {n} edits{shadow}",
                step.plugin
            )?,
            _ => {}
        }
    }
    // As the sidecar does: effects belong to events whose fate is final (forwarded or skipped).
    if matches!(processed.outcome.verdict, Verdict::Fail { .. }) || !processed.claim_effects() {
        return Ok(());
    }
    for effect in &processed.outcome.effects {
        writeln!(err, "event {number}: effect: {effect}")?;
    }
    for effect in &processed.outcome.shadow_effects {
        writeln!(
            err,
            "event {number}: effect (shadow, recorded only): {effect}"
        )?;
    }
    Ok(())
}
