//! `eventplug push REF FILE.wasm`: checks the module as `eventplug run` would load it, then pushes
//! it in the CNCF wasm layout and prints `REF@sha256:…`.

use super::oci_args::{RegistryArgs, parse_reference};
use anyhow::{Context, bail};
use eventplug_contract::PluginSettings;
use eventplug_runtime::engine::{EngineSettings, PluginEngine};
use eventplug_runtime::store::LocalTokenStore;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Arguments of `eventplug push`.
#[derive(Debug, clap::Args)]
pub struct PushArgs {
    /// Where to push: `host[:port]/repository[:tag]` (`oci://` optional).
    reference: String,
    /// The compiled plugin module (.wasm).
    module: PathBuf,
    /// A manifest annotation `key=value`; repeat for more. Overrides the ones eventplug sets.
    #[arg(long = "annotation", value_name = "KEY=VALUE")]
    annotations: Vec<String>,
    /// `org.opencontainers.image.source`: where the plugin's source lives (a repository URL).
    #[arg(long, value_name = "URL")]
    source: Option<String>,
    /// `org.opencontainers.image.version` (default: the tag).
    #[arg(long, value_name = "VERSION")]
    version: Option<String>,
    #[command(flatten)]
    registry: RegistryArgs,
}

/// The SDK a module was built with, from its `eventplug.sdk` custom section (`name version`),
/// which the AssemblyScript SDK's asc transform writes.
pub(crate) fn sdk_version(bytes: &[u8]) -> Option<String> {
    wasmparser::Parser::new(0)
        .parse_all(bytes)
        .find_map(|payload| match payload {
            Ok(wasmparser::Payload::CustomSection(section))
                if section.name() == "eventplug.sdk" =>
            {
                std::str::from_utf8(section.data())
                    .ok()
                    .map(|v| v.trim().to_string())
            }
            _ => None,
        })
}

/// Runs the command.
pub fn push(args: PushArgs) -> anyhow::Result<ExitCode> {
    let reference = parse_reference(&args.reference)?;
    if reference.digest().is_some() {
        bail!("push to a tag (or a bare repository), not to a digest: {reference}");
    }
    let bytes = std::fs::read(&args.module)
        .with_context(|| format!("cannot read {}", args.module.display()))?;
    if !bytes.starts_with(b"\0asm") {
        bail!(
            "{} is not a compiled WebAssembly module; push the .wasm binary",
            args.module.display()
        );
    }
    // Exactly what `eventplug run --plugin FILE` does, so a module that would not load is refused
    // with the same message.
    let name = args
        .module
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "plugin".into());
    let engine = PluginEngine::new(EngineSettings::with_default_cache())?;
    super::chain_file::load_all(
        &engine,
        &[PluginSettings::for_module(
            name.clone(),
            args.module.clone(),
        )],
        Arc::new(LocalTokenStore::new()),
    )?;

    let mut annotations = BTreeMap::new();
    if let Some(version) = args.version.as_deref().or(reference.tag()) {
        annotations.insert(
            "org.opencontainers.image.version".into(),
            version.to_string(),
        );
    }
    if let Some(source) = args.source {
        annotations.insert("org.opencontainers.image.source".into(), source);
    }
    annotations.insert("org.opencontainers.image.title".into(), name.clone());
    annotations.insert(
        eventplug_oci::ANNOTATION_ABI_VERSION.into(),
        eventplug_runtime::abi::ABI_VERSION.to_string(),
    );
    annotations.insert(
        eventplug_oci::ANNOTATION_SDK_VERSION.into(),
        sdk_version(&bytes).unwrap_or_else(|| "unknown".into()),
    );
    for pair in &args.annotations {
        let Some((key, value)) = pair.split_once('=').filter(|(k, _)| !k.is_empty()) else {
            bail!("--annotation {pair:?} must be KEY=VALUE");
        };
        annotations.insert(key.to_string(), value.to_string());
    }
    let client = args.registry.client(&reference)?;
    let pinned = eventplug_oci::block_on(client.push(
        &reference,
        eventplug_oci::PushRequest {
            module: bytes,
            file_name: format!("{name}.wasm"),
            annotations,
        },
    ))?;
    println!("{pinned}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::sdk_version;

    #[test]
    fn the_sdk_version_comes_from_the_eventplug_sdk_custom_section() {
        let plain = wat::parse_str("(module)").expect("wat");
        assert_eq!(sdk_version(&plain), None);
        let mut module = plain.clone();
        let name = b"eventplug.sdk";
        let value = b"assemblyscript 0.1.0";
        module.push(0);
        module.push((1 + name.len() + value.len()) as u8);
        module.push(name.len() as u8);
        module.extend_from_slice(name);
        module.extend_from_slice(value);
        assert_eq!(
            sdk_version(&module).as_deref(),
            Some("assemblyscript 0.1.0")
        );
        assert_eq!(sdk_version(&module[..module.len() - 3]), None);
    }
}
