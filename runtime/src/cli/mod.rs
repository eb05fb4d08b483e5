//! The `eventplug` command line: one module per subcommand.

mod bench;
mod chain_file;
mod run;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// Run WebAssembly plugins on Teleport audit events.
#[derive(Debug, Parser)]
#[command(name = "eventplug", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run plugins on events read from stdin, one JSON object per line.
    Run(run::RunArgs),
    /// Measure a plugin: compile, load, instantiate, and events per second through the pipeline.
    Bench(bench::BenchArgs),
}

/// Exit code for a plugin or configuration that could not be loaded.
pub const EXIT_LOAD_ERROR: u8 = 2;

/// Parses the command line and runs the subcommand.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Run(args) => run::run(args),
        Command::Bench(args) => bench::bench(args),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("eventplug: {error:#}");
            ExitCode::from(EXIT_LOAD_ERROR)
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EVENTPLUG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
