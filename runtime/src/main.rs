//! The `eventplug` command.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    eventplug::cli::main()
}
