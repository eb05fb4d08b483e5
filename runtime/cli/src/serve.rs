//! `eventplug serve --config FILE`: the sidecar.

use eventplug_contract::{LogFormat, SidecarConfig};
use eventplug_sidecar::{Sidecar, serve};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `eventplug serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The sidecar config (YAML, `kind: SidecarConfig`; see docs/sidecar.md). Changes to it, or to
    /// the module files it names, are applied while running.
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Once listening, write the ingest and admin addresses here (JSON: `{"listen": …, "admin":
    /// …}`): how a caller learns the ports when the config asks for port 0.
    #[arg(long, value_name = "FILE")]
    addresses_file: Option<PathBuf>,
}

/// Runs the command until SIGTERM or Ctrl-C, then drains and exits 0.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let format = SidecarConfig::load(&args.config)
        .map_err(anyhow::Error::msg)?
        .logging
        .format;
    super::init_logging(format == LogFormat::Json, "info");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("eventplug-serve")
        .build()?;
    let sidecar = Sidecar::start(&args.config, runtime.handle()).map_err(anyhow::Error::msg)?;
    let addresses = args.addresses_file;
    runtime.block_on(async move {
        let shutdown = async {
            let mut term = match tokio::signal::unix::signal(
                tokio::signal::unix::SignalKind::terminate(),
            ) {
                Ok(term) => term,
                Err(error) => {
                    tracing::error!(%error, "cannot watch SIGTERM; only Ctrl-C stops the sidecar");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        serve(sidecar, shutdown, addresses.as_deref())
            .await
            .map_err(anyhow::Error::msg)
    })?;
    Ok(ExitCode::SUCCESS)
}
