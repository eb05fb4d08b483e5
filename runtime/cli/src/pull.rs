//! `eventplug pull REF -o FILE`: the module, verified, through the module cache.

use super::oci_args::{RegistryArgs, default_cache, parse_reference};
use anyhow::Context;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `eventplug pull`.
#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// What to pull: `host[:port]/repository[:tag][@sha256:…]` (`oci://` optional).
    reference: String,
    /// Where to write the module.
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Do not read or fill the module cache.
    #[arg(long)]
    no_cache: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// Runs the command: prints the pinned reference `REF@sha256:…` on stdout.
pub fn pull(args: PullArgs) -> anyhow::Result<ExitCode> {
    let reference = parse_reference(&args.reference)?;
    let client = args.registry.client(&reference)?;
    let cache = if args.no_cache { None } else { default_cache() };
    let pulled = eventplug_oci::block_on(client.pull(&reference, cache.as_ref()))?;
    // A device or pipe (`/dev/null`, `/dev/stdout`) is written as it is, never replaced.
    if std::fs::metadata(&args.output).is_ok_and(|m| !m.is_file() && !m.is_dir()) {
        std::fs::write(&args.output, &pulled.module)
            .with_context(|| format!("cannot write {}", args.output.display()))?;
        println!("{}", pulled.reference);
        return Ok(ExitCode::SUCCESS);
    }
    let dir = args
        .output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let tmp = dir.join(format!(
        ".{}.tmp{}",
        args.output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&pulled.module)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &args.output)
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(error).with_context(|| format!("cannot write {}", args.output.display()));
    }
    eprintln!(
        "pulled {} ({}, {} bytes, module {}{}) to {}",
        pulled.reference,
        pulled.layout.name(),
        pulled.module.len(),
        pulled.module_digest,
        if pulled.from_cache {
            ", from the cache"
        } else {
            ""
        },
        args.output.display()
    );
    println!("{}", pulled.reference);
    Ok(ExitCode::SUCCESS)
}
