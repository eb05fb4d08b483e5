//! `eventplug-operator`: `crd` prints the CustomResourceDefinitions.
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// The eventplug operator.
#[derive(Debug, Parser)]
#[command(name = "eventplug-operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions (EventPlugin, EventPluginTarget) as YAML, as `crds/`
    /// holds them.
    Crd,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match eventplug_operator::crd::crds_yaml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("eventplug-operator: cannot render the CRDs: {error}");
                ExitCode::FAILURE
            }
        },
    }
}
