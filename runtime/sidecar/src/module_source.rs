//! Plugin modules named by OCI reference (`oci://host/repository@sha256:…`, or a tag with the
//! manifest digest in `digest:`): resolved through the content-addressed cache, pulled from the
//! registry only on a miss, so a sidecar whose modules are cached starts and reloads while the
//! registry is down. What runs is always the pinned digest, never what a tag points at now.

use eventplug_contract::{PluginSettings, RegistriesConfig};
use eventplug_oci::{Cache, Credentials, HostSettings, Reference, Registry, RegistrySettings};
use std::borrow::Cow;
use std::path::Path;

/// Where `oci://` modules come from: the registries of the config and the cache.
pub struct ModuleSources {
    registry: Registry,
    cache: Cache,
    credentials_error: Option<String>,
}

impl ModuleSources {
    /// Sources for `config`; the cache defaults to `oci/` in the engine's module cache folder.
    pub fn new(config: &RegistriesConfig, engine_cache: Option<&Path>) -> Self {
        let (credentials, credentials_error) = match &config.pull_secret {
            None => (Credentials::anonymous(), None),
            Some(path) => match Credentials::from_path(path) {
                Ok(credentials) => (credentials, None),
                Err(error) => (Credentials::anonymous(), Some(error.to_string())),
            },
        };
        let hosts = config
            .hosts
            .iter()
            .map(|h| {
                let settings = HostSettings {
                    plain_http: h.plain_http,
                    ca: h.ca.clone(),
                };
                (h.host.clone(), settings)
            })
            .collect();
        let dir = config.cache_dir.clone().unwrap_or_else(|| {
            engine_cache
                .map(|d| d.join("oci"))
                .unwrap_or_else(|| std::env::temp_dir().join("eventplug-oci"))
        });
        Self {
            registry: Registry::new(RegistrySettings {
                hosts,
                credentials,
                timeout: config.timeout.get(),
                max_module_bytes: config.max_module_bytes.get(),
                ..RegistrySettings::default()
            }),
            cache: Cache::new(dir),
            credentials_error,
        }
    }

    /// `settings` as the engine loads them: an `oci://` module becomes its verified file in the
    /// cache (pulled on a miss) with the module's own digest pinned; a file module is unchanged.
    pub fn resolve<'a>(
        &self,
        settings: &'a PluginSettings,
    ) -> Result<Cow<'a, PluginSettings>, String> {
        let Some(text) = settings.oci_reference() else {
            return Ok(Cow::Borrowed(settings));
        };
        let reference: Reference = text.parse().map_err(|e| format!("module: {e}"))?;
        let digest = reference
            .digest()
            .map(str::to_string)
            .or_else(|| settings.digest.clone())
            .ok_or_else(|| format!("module oci://{text} names no digest"))?;
        let pinned = reference.with_digest(&digest);
        let pulled = eventplug_oci::block_on(self.registry.pull(&pinned, Some(&self.cache)))
            .map_err(|error| match &self.credentials_error {
                Some(credentials) => format!("{error} (registries.pullSecret: {credentials})"),
                None => error.to_string(),
            })?;
        let path = pulled
            .module_path
            .ok_or_else(|| format!("{pinned}: the module was not cached"))?;
        if !pulled.from_cache {
            tracing::info!(plugin = %settings.name, reference = %pinned, module_digest = %pulled.module_digest, layout = pulled.layout.name(), "module pulled into the cache");
        }
        let mut resolved = settings.clone();
        resolved.module = path;
        resolved.digest = Some(pulled.module_digest);
        resolved.version = settings
            .version
            .clone()
            .or_else(|| reference.tag().map(str::to_string));
        Ok(Cow::Owned(resolved))
    }
}
