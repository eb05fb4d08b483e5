//! Registry options shared by `eventplug push`, `pull` and `inspect`.

use eventplug_contract::ByteSize;
use eventplug_oci::{Cache, Credentials, HostSettings, Reference, Registry, RegistrySettings};
use eventplug_runtime::engine::EngineSettings;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

/// How to reach the registry a reference names.
#[derive(Debug, clap::Args)]
pub struct RegistryArgs {
    /// Speak plain HTTP to the reference's registry host (a local or in-cluster registry).
    #[arg(long)]
    plain_http: bool,
    /// Trust only this CA certificate (PEM) for the reference's registry host.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Credentials: a Docker config JSON file, or a folder holding `.dockerconfigjson` (a mounted
    /// pull secret). Default: $REGISTRY_AUTH_FILE, $DOCKER_CONFIG/config.json, ~/.docker/config.json.
    #[arg(long, value_name = "FILE")]
    auth_file: Option<PathBuf>,
    /// Timeout of each registry request, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    timeout: u64,
    /// The largest module accepted (`64Mi`, `500Ki`, bytes).
    #[arg(long, value_name = "SIZE", default_value = "64Mi", value_parser = ByteSize::parse)]
    max_module_size: ByteSize,
}

impl RegistryArgs {
    /// A registry client for `reference`'s host with these options.
    pub fn client(&self, reference: &Reference) -> anyhow::Result<Registry> {
        let credentials = match &self.auth_file {
            Some(path) => Credentials::from_path(path)?,
            None => Credentials::from_environment()?,
        };
        let mut hosts = HashMap::new();
        hosts.insert(
            reference.registry().to_string(),
            HostSettings {
                plain_http: self.plain_http,
                ca: self.ca.clone(),
            },
        );
        Ok(Registry::new(RegistrySettings {
            hosts,
            credentials,
            timeout: Duration::from_secs(self.timeout.max(1)),
            max_module_bytes: self.max_module_size.get(),
            ..RegistrySettings::default()
        }))
    }
}

/// The module cache pulls go through: `oci/` in the engine's module cache folder (next to the
/// precompiled modules), shared with the sidecar when it uses the same folder.
pub fn default_cache() -> Option<Cache> {
    EngineSettings::with_default_cache()
        .cache_dir
        .map(|dir| Cache::new(dir.join("oci")))
}

/// Parses a reference given on the command line.
pub fn parse_reference(text: &str) -> anyhow::Result<Reference> {
    Ok(text.parse::<Reference>()?)
}
