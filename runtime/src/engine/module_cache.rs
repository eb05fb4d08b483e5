//! Compiles each module once: compiled modules are kept in memory by digest and, when a cache folder
//! is set, precompiled on disk keyed by module digest and engine settings.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use wasmtime::{Engine, Module};

/// The digest of module bytes, as OCI writes it: `sha256:<hex>`.
pub fn module_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut text = String::with_capacity(7 + 64);
    text.push_str("sha256:");
    for byte in hash {
        text.push_str(&format!("{byte:02x}"));
    }
    text
}

/// Where a compiled module came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleSource {
    /// Compiled now.
    Compiled,
    /// Loaded precompiled from the disk cache.
    DiskCache,
    /// Already compiled in this process.
    MemoryCache,
}

pub(crate) struct ModuleCache {
    dir: Option<PathBuf>,
    engine_key: String,
    compiled: Mutex<HashMap<String, Module>>,
}

impl ModuleCache {
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self {
            dir,
            engine_key: format!("{:016x}", hasher.finish()),
            compiled: Mutex::new(HashMap::new()),
        }
    }

    fn cache_file(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .as_ref()
            .map(|dir| dir.join(format!("{hex}-{}.cwasm", self.engine_key)))
    }

    /// Returns the compiled module for `bytes` (wasm binary or text), compiling it only when neither
    /// cache has it.
    pub(crate) fn get(
        &self,
        engine: &Engine,
        bytes: &[u8],
    ) -> Result<(Module, String, ModuleSource), String> {
        if Engine::detect_precompiled(bytes).is_some() {
            return Err("this is a precompiled artifact (.cwasm); give the .wasm module".into());
        }
        let digest = module_digest(bytes);
        if let Some(module) = self.lock().get(&digest) {
            return Ok((module.clone(), digest, ModuleSource::MemoryCache));
        }
        let cache_file = self.cache_file(&digest);
        let (module, source) = match cache_file
            .as_deref()
            .and_then(|f| load_precompiled(engine, f))
        {
            Some(module) => (module, ModuleSource::DiskCache),
            None => {
                let module = Module::new(engine, bytes).map_err(|e| format!("{e:#}"))?;
                if let Some(file) = &cache_file
                    && let Err(e) = store_precompiled(&module, file)
                {
                    tracing::warn!(file = %file.display(), error = %e, "could not write the module cache; modules will be compiled again on the next start");
                }
                (module, ModuleSource::Compiled)
            }
        };
        self.lock().insert(digest.clone(), module.clone());
        Ok((module, digest, source))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Module>> {
        self.compiled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Loads a module precompiled by [`store_precompiled`], or `None` when the file is missing or was
/// made by another engine build or configuration (wasmtime checks both and refuses a mismatch).
///
/// The file is read into memory rather than mapped, so a file changed or truncated on disk later
/// cannot fault a running module.
#[allow(unsafe_code)]
fn load_precompiled(engine: &Engine, file: &Path) -> Option<Module> {
    let bytes = std::fs::read(file).ok()?;
    Engine::detect_precompiled(&bytes)?;
    // SAFETY: the bytes come from a file this cache wrote itself, whole, by rename into a folder
    // only eventplug writes, from `Module::serialize` of the same engine build and settings (the
    // file name carries the engine's compatibility hash, and wasmtime checks its header again).
    match unsafe { Module::deserialize(engine, &bytes) } {
        Ok(module) => Some(module),
        Err(e) => {
            tracing::info!(file = %file.display(), error = %e, "cached module unusable; compiling again");
            None
        }
    }
}

fn store_precompiled(module: &Module, file: &Path) -> std::io::Result<()> {
    let bytes = module.serialize().map_err(std::io::Error::other)?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)
}

#[cfg(test)]
mod tests {
    use super::module_digest;

    #[test]
    fn digest_is_sha256_in_oci_form() {
        assert_eq!(
            module_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
