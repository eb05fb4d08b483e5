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
    /// Where modules delivered in chunks are joined.
    joined: std::path::PathBuf,
    /// Where chunks read through the Kubernetes API are kept (`api_source`).
    mirror: Option<std::path::PathBuf>,
}

/// The most chunks one module is delivered in.
const MAX_CHUNKS: usize = 256;

impl ModuleSources {
    /// Sources for `config`; the cache defaults to `oci/` in the engine's module cache folder.
    /// Chunks missing from a module's folder are looked for in `mirror` too.
    pub fn new(
        config: &RegistriesConfig,
        engine_cache: Option<&Path>,
        mirror: Option<&Path>,
    ) -> Self {
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
        let joined = engine_cache
            .map(|d| d.join("joined"))
            .unwrap_or_else(|| std::env::temp_dir().join("eventplug-joined"));
        Self {
            joined,
            mirror: mirror.map(Path::to_path_buf),
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
            return self.join_chunks(settings);
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

    /// A module file that is not there but whose chunks are (`<file>.0`, `<file>.1`, …: the
    /// operator's module ConfigMaps, each under the API server's object size limit, mounted into
    /// one folder, or copied through the API into the mirror folder): joined in order, checked
    /// against the pinned `digest` (required for chunks), and loaded from the joined copy. The
    /// mounted chunks are tried first, then the mirror's. Any other module is unchanged.
    fn join_chunks<'a>(
        &self,
        settings: &'a PluginSettings,
    ) -> Result<Cow<'a, PluginSettings>, String> {
        if settings.module.exists() {
            return Ok(Cow::Borrowed(settings));
        }
        let candidates: Vec<std::path::PathBuf> = std::iter::once(settings.module.clone())
            .chain(self.mirror_path(&settings.module))
            .filter(|module| chunk_path(module, 0).exists())
            .collect();
        if candidates.is_empty() {
            return Ok(Cow::Borrowed(settings));
        }
        let digest = settings.digest.as_deref().ok_or_else(|| {
            format!(
                "module {} comes in chunks but no digest pins it: set digest",
                settings.module.display()
            )
        })?;
        let mut failure = String::new();
        for module in &candidates {
            match join_module(module, digest) {
                Ok(bytes) => {
                    return self.keep_joined(settings, &digest.to_ascii_lowercase(), &bytes);
                }
                Err(error) if failure.is_empty() => failure = error,
                Err(_) => {}
            }
        }
        Err(failure)
    }

    /// Where the mirror keeps the chunks of `module`.
    fn mirror_path(&self, module: &Path) -> Option<std::path::PathBuf> {
        Some(self.mirror.as_ref()?.join(module.file_name()?))
    }

    fn keep_joined<'a>(
        &self,
        settings: &'a PluginSettings,
        joined_digest: &str,
        bytes: &[u8],
    ) -> Result<Cow<'a, PluginSettings>, String> {
        private_dir(&self.joined)?;
        let path = self
            .joined
            .join(format!("{}.wasm", joined_digest.replace(':', "-")));
        let partial = path.with_extension("partial");
        std::fs::write(&partial, bytes)
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let mut joined = settings.clone();
        joined.module = path;
        Ok(Cow::Owned(joined))
    }
}

/// The bytes of the module delivered as `module` in chunks, when they join to `digest`.
pub(crate) fn join_module(module: &Path, digest: &str) -> Result<Vec<u8>, String> {
    let chunks = chunk_files(module);
    if chunks.len() > MAX_CHUNKS {
        return Err(format!(
            "module {} comes in more than {MAX_CHUNKS} chunks",
            module.display()
        ));
    }
    let mut bytes = Vec::new();
    for chunk in &chunks {
        let part = std::fs::read(chunk)
            .map_err(|error| format!("cannot read {}: {error}", chunk.display()))?;
        bytes.extend_from_slice(&part);
    }
    let joined_digest = eventplug_runtime::engine::module_digest(&bytes);
    if !joined_digest.eq_ignore_ascii_case(digest) {
        // A ConfigMap update in flight shows old and new chunks side by side: the next reload
        // sees them settled.
        return Err(format!(
            "the chunks of module {} join to {joined_digest}, not the pinned {digest} (an update may be in flight; it is tried again at the next reload)",
            module.display()
        ));
    }
    Ok(bytes)
}

/// Creates `dir` readable by this user only, or checks that it is: joined modules are executable
/// code, so no one else may place or swap files there.
pub(crate) fn private_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let refuse = |why: String| format!("cannot keep joined modules in {}: {why}", dir.display());
    match std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) => return Err(refuse(e.to_string())),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| refuse(e.to_string()))?;
    // This process's uid is the owner of a file it creates.
    let probe = dir.join(".owner-probe");
    let own = std::fs::write(&probe, b"")
        .and_then(|()| std::fs::metadata(&probe))
        .map(|m| m.uid())
        .map_err(|e| refuse(e.to_string()))?;
    let _ = std::fs::remove_file(&probe);
    if !meta.is_dir() || meta.uid() != own || meta.permissions().mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "it must be a folder of this user's (uid {own}) that no one else can write or read, mode 0700"
        )));
    }
    Ok(())
}

impl ModuleSources {
    /// Removes joined modules no running plugin uses.
    pub fn prune_joined(&self, running: &[&Path]) {
        let Ok(entries) = std::fs::read_dir(&self.joined) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !running.contains(&path.as_path())
                && let Err(error) = std::fs::remove_file(&path)
            {
                tracing::warn!(file = %path.display(), %error, "cannot remove a joined module no plugin runs");
            }
        }
    }
}

/// The chunk files of a module delivered as `module` in chunks (`<module>.0`, `.1`, … up to the
/// first missing one, and at most one past `MAX_CHUNKS`); empty when it is not.
pub(crate) fn chunk_files(module: &Path) -> Vec<std::path::PathBuf> {
    (0..=MAX_CHUNKS)
        .map(|index| chunk_path(module, index))
        .take_while(|chunk| chunk.exists())
        .collect()
}

/// The file of chunk `index` of a module delivered as `module`.
fn chunk_path(module: &Path, index: usize) -> std::path::PathBuf {
    let mut name = module.as_os_str().to_owned();
    name.push(format!(".{index}"));
    name.into()
}
