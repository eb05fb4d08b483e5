//! `eventplug inspect REF`: what an artifact holds: digests, layout, media types, size,
//! annotations, the module's imports and exports, and whether it meets the ABI.

use super::oci_args::{RegistryArgs, default_cache, parse_reference};
use std::process::ExitCode;

/// Arguments of `eventplug inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// What to inspect: `host[:port]/repository[:tag][@sha256:…]` (`oci://` optional).
    reference: String,
    /// `text` or `json`.
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    output: String,
    /// Do not read or fill the module cache.
    #[arg(long)]
    no_cache: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// Runs the command.
pub fn inspect(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let reference = parse_reference(&args.reference)?;
    let client = args.registry.client(&reference)?;
    let cache = if args.no_cache { None } else { default_cache() };
    let pulled = eventplug_oci::block_on(client.pull(&reference, cache.as_ref()))?;
    let engine = wasmtime::Engine::default();
    let (imports, exports, problems) = match wasmtime::Module::new(&engine, &pulled.module) {
        Ok(module) => (
            module
                .imports()
                .map(|i| format!("{}.{}", i.module(), i.name()))
                .collect::<Vec<_>>(),
            module
                .exports()
                .map(|e| e.name().to_string())
                .collect::<Vec<_>>(),
            eventplug_runtime::abi::check_module(&module, &[]),
        ),
        Err(error) => (
            Vec::new(),
            Vec::new(),
            vec![format!("is not a valid WebAssembly module: {error:#}")],
        ),
    };
    let report = serde_json::json!({
        "reference": pulled.reference.to_string(),
        "digest": pulled.manifest_digest,
        "layout": pulled.layout.name(),
        "manifestMediaType": pulled.manifest_media_type,
        "configMediaType": pulled.config_media_type,
        "layerMediaTypes": pulled.layer_media_types,
        "layerDigest": pulled.layer_digest,
        "moduleDigest": pulled.module_digest,
        "size": pulled.module.len(),
        "annotations": pulled.annotations,
        "imports": imports,
        "exports": exports,
        "abi": { "ok": problems.is_empty(), "problems": problems },
    });
    if args.output == "json" {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("reference:   {}", pulled.reference);
    println!("digest:      {}", pulled.manifest_digest);
    println!("layout:      {}", pulled.layout.name());
    println!(
        "media types: manifest {}, config {}, layers {}",
        pulled.manifest_media_type,
        pulled.config_media_type,
        pulled.layer_media_types.join(", ")
    );
    println!(
        "module:      {} ({} bytes)",
        pulled.module_digest,
        pulled.module.len()
    );
    println!("annotations:");
    for (key, value) in &pulled.annotations {
        println!("  {key}: {value}");
    }
    println!("imports:     {}", imports.join(", "));
    println!("exports:     {}", exports.join(", "));
    if problems.is_empty() {
        println!(
            "abi:         ok (eventplug ABI {})",
            eventplug_runtime::abi::ABI_VERSION
        );
    } else {
        println!(
            "abi:         does not meet the eventplug ABI (docs/abi.md): {}",
            problems.join("; ")
        );
    }
    Ok(ExitCode::SUCCESS)
}
