//! The `eventplug` command line: one module per subcommand.
#![forbid(unsafe_code)]

mod bench;
mod chain_file;
mod fixtures;
mod inspect;
mod new;
mod oci_args;
mod pull;
mod push;
mod run;
mod serve;
mod test;
mod testing;
mod wait_ready;

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
    /// Create a plugin project from an example, with the SDK, and install its tools.
    New(new::NewArgs),
    /// List fixture templates, or make a fixture file from one.
    Fixtures(fixtures::FixturesArgs),
    /// Run plugins on events read from stdin, one JSON object per line.
    Run(run::RunArgs),
    /// The sidecar: receive events from event-handler, run the plugin chain, forward to fluentd.
    Serve(serve::ServeArgs),
    /// Run a plugin's tests (its test build's `test()` export) against its fixtures.
    Test(test::TestArgs),
    /// Measure a plugin: compile, load, instantiate, and events per second through the pipeline.
    Bench(bench::BenchArgs),
    /// Push a plugin module to an OCI registry (checked against the ABI first).
    Push(push::PushArgs),
    /// Pull a plugin module from an OCI registry, verified by digest.
    Pull(pull::PullArgs),
    /// Show what a plugin artifact in a registry holds.
    Inspect(inspect::InspectArgs),
    /// Wait until a sidecar's admin listener answers `/readyz` with 200 (a postStart hook's job).
    WaitReady(wait_ready::WaitReadyArgs),
}

/// Exit code for a plugin or configuration that could not be loaded.
pub const EXIT_LOAD_ERROR: u8 = 2;

/// Parses the command line and runs the subcommand.
fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        init_logging(false, "warn,eventplug_oci=info");
    }
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Run(args) => run::run(args),
        Command::Bench(args) => bench::bench(args),
        Command::Test(args) => test::test(args),
        Command::New(args) => new::new(args),
        Command::Fixtures(args) => fixtures::fixtures(args),
        Command::Push(args) => push::push(args),
        Command::Pull(args) => pull::pull(args),
        Command::Inspect(args) => inspect::inspect(args),
        Command::WaitReady(args) => wait_ready::wait_ready(args),
    };
    match result {
        Ok(code) => code,
        // A reader that went away (`eventplug … | head`) is not an error of ours.
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("eventplug: {error:#}");
            ExitCode::from(EXIT_LOAD_ERROR)
        }
    }
}

/// Logs to stderr at `default_level` (or `EVENTPLUG_LOG`), as text (coloured only when stderr is
/// a terminal) or JSON lines.
fn init_logging(json: bool, default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EVENTPLUG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    // Colours only for a terminal: a log file or a collector gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
