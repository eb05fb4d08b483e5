//! Compiles each module once: a compiled module is shared in memory by digest for as long as a
//! plugin uses it (the cache holds it weakly, so a version no pool runs any more is freed) and,
//! when a cache folder is set, precompiled on disk keyed by module digest and engine settings; the
//! folder is pruned to a size cap, least recently used first.
//!
//! A precompiled artifact is machine code that runs as it is, so one is used only from a folder and
//! file owned by this user and writable by no one else, and only when it is what this cache wrote
//! for this module: each file starts with a record of the module digest, the engine key and the
//! sha256 of the artifact bytes, written with it and checked before the bytes are deserialized. The
//! record guards against corruption and mix-ups (another module's artifact under this name, garbled
//! machine code, a truncated write), not against someone who may write the folder: the ownership
//! and mode checks do that. A file that fails is logged, removed and the module compiled again.

use super::CompileLimits;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
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
    limits: CompileLimits,
    engine_key: String,
    compiled: Mutex<HashMap<String, Weak<Module>>>,
    /// One lock per digest being loaded, so concurrent loads of one module compile it once.
    loading: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    max_disk_bytes: u64,
}

impl ModuleCache {
    pub(crate) fn new(
        engine: &Engine,
        dir: Option<PathBuf>,
        limits: CompileLimits,
        max_disk_bytes: u64,
    ) -> Self {
        // A hash that is stable across builds of eventplug, so a rebuild keeps the cache.
        let mut hasher = StableHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let key = hasher.0.finalize();
        Self {
            dir,
            limits,
            engine_key: key[..8].iter().map(|b| format!("{b:02x}")).collect(),
            compiled: Mutex::new(HashMap::new()),
            loading: Mutex::new(HashMap::new()),
            max_disk_bytes,
        }
    }

    fn record(&self, digest: &str, artifact: &[u8]) -> String {
        format!(
            "{CACHE_MAGIC} {digest} {} {}\n",
            self.engine_key,
            module_digest(artifact)
        )
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
    ) -> Result<(Arc<Module>, String, ModuleSource), String> {
        if Engine::detect_precompiled(bytes).is_some() {
            return Err("this is a precompiled artifact (.cwasm); give the .wasm module".into());
        }
        let digest = module_digest(bytes);
        // The limits hold whatever the caches hold, so whether a module loads never depends on them.
        let wasm = wat::parse_bytes(bytes).map_err(|e| format!("{e:#}"))?;
        self.limits.check(&wasm)?;
        let gate = self.loading_gate(&digest);
        let _loading = gate.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(module) = self.lock().get(&digest).and_then(Weak::upgrade) {
            return Ok((module, digest, ModuleSource::MemoryCache));
        }
        let cache_file = self.cache_file(&digest);
        let (module, source) = match cache_file
            .as_deref()
            .and_then(|f| self.load_precompiled(engine, f, &digest))
        {
            Some(module) => {
                if let Some(file) = &cache_file {
                    touch(file);
                }
                (module, ModuleSource::DiskCache)
            }
            None => {
                let module = Module::from_binary(engine, &wasm).map_err(|e| format!("{e:#}"))?;
                if let Some(file) = &cache_file
                    && let Err(e) = self.store_precompiled(&module, file, &digest)
                {
                    tracing::warn!(file = %file.display(), error = %e, "could not write the module cache; modules will be compiled again on the next start");
                }
                self.prune_disk();
                (module, ModuleSource::Compiled)
            }
        };
        let module = Arc::new(module);
        let mut compiled = self.lock();
        compiled.retain(|_, weak| weak.strong_count() > 0);
        compiled.insert(digest.clone(), Arc::downgrade(&module));
        drop(compiled);
        self.loading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, gate| Arc::strong_count(gate) > 1);
        Ok((module, digest, source))
    }

    fn loading_gate(&self, digest: &str) -> Arc<Mutex<()>> {
        self.loading
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(digest.to_string())
            .or_default()
            .clone()
    }

    /// Compiled modules held in memory now (by some running plugin).
    pub(crate) fn in_memory(&self) -> usize {
        self.lock()
            .values()
            .filter(|w| w.strong_count() > 0)
            .count()
    }

    /// Bytes of precompiled modules in the cache folder.
    pub(crate) fn disk_bytes(&self) -> u64 {
        self.disk_entries().iter().map(|(_, len, _)| len).sum()
    }

    /// The cache folder's artifacts: path, size and last use.
    fn disk_entries(&self) -> Vec<(PathBuf, u64, std::time::SystemTime)> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let stale = std::time::SystemTime::now() - STALE_TEMP_AFTER;
        entries
            .flatten()
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                let modified = meta.modified().ok()?;
                let name = e.file_name();
                let name = name.to_string_lossy();
                // Artifacts, and temporary files a crashed write left behind.
                let counted =
                    name.ends_with(".cwasm") || (name.contains(".cwasm.tmp") && modified < stale);
                counted.then(|| (e.path(), meta.len(), modified))
            })
            .collect()
    }

    /// Removes the least recently used artifacts until the folder is within its size cap.
    fn prune_disk(&self) {
        let mut entries = self.disk_entries();
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        if total <= self.max_disk_bytes {
            return;
        }
        entries.sort_by_key(|(_, _, used)| *used);
        for (path, len, _) in entries {
            if total <= self.max_disk_bytes {
                break;
            }
            if std::fs::remove_file(&path).is_ok() {
                tracing::info!(file = %path.display(), "module cache over its size cap: removed the least recently used artifact");
                total -= len;
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Weak<Module>>> {
        self.compiled
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The first word of every cache file.
const CACHE_MAGIC: &str = "eventplug-cwasm-v1";

impl ModuleCache {
    /// Loads the module precompiled for `digest`, or `None` when the file is missing or is not
    /// provably the artifact this cache wrote for it (then it is removed).
    ///
    /// The file is read into memory rather than mapped, so a file changed or truncated on disk later
    /// cannot fault a running module.
    #[allow(unsafe_code)]
    fn load_precompiled(&self, engine: &Engine, file: &Path, digest: &str) -> Option<Module> {
        let dir = file.parent()?;
        if !file.exists() {
            return None;
        }
        if let Err(reason) = private_to_us(dir).and_then(|()| private_to_us(file)) {
            tracing::warn!(file = %file.display(), %reason, "cached module not used: compiling instead");
            return None;
        }
        let before = std::fs::metadata(file).ok()?;
        let bytes = std::fs::read(file).ok()?;
        let refuse = |reason: &str| {
            tracing::warn!(file = %file.display(), reason, "cached module refused; removing it and compiling again");
            // Only the file that was read: a good one renamed into place meanwhile stays.
            if std::fs::metadata(file).is_ok_and(|now| now.ino() == before.ino()) {
                let _ = std::fs::remove_file(file);
            }
            None
        };
        let Some(end) = bytes.iter().position(|&b| b == b'\n') else {
            return refuse("no record of what it holds");
        };
        let (record, artifact) = (&bytes[..=end], &bytes[end + 1..]);
        if record != self.record(digest, artifact).as_bytes() {
            return refuse(
                "its record does not match this module, this engine or the artifact's checksum",
            );
        }
        if Engine::detect_precompiled(artifact).is_none() {
            return refuse("not a precompiled module");
        }
        // SAFETY: the file and its folder are owned by this user and writable by no one else, and
        // the bytes are, checksum-verified, the artifact this cache wrote for this module digest and
        // engine key (`store_precompiled`), from `Module::serialize` of an engine with the same
        // compatibility hash; wasmtime checks its header again.
        match unsafe { Module::deserialize(engine, artifact) } {
            Ok(module) => Some(module),
            Err(e) => refuse(&format!("wasmtime refused it: {e}")),
        }
    }

    fn store_precompiled(&self, module: &Module, file: &Path, digest: &str) -> std::io::Result<()> {
        let artifact = module.serialize().map_err(std::io::Error::other)?;
        if let Some(dir) = file.parent() {
            create_private_dir(dir)?;
        }
        let mut bytes = self.record(digest, &artifact).into_bytes();
        bytes.extend_from_slice(&artifact);
        // A name no other writer, thread or process, uses; created new, written whole, synced, then
        // renamed into place, so a reader sees the old file or the whole new one.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = file.with_extension(format!(
            "cwasm.tmp{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let written = (|| {
            use std::io::Write;
            let mut out = std::fs::File::options()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            out.write_all(&bytes)?;
            out.sync_all()?;
            std::fs::rename(&tmp, file)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

/// How old a temporary file must be before pruning takes it for a crashed write's leftover.
const STALE_TEMP_AFTER: std::time::Duration = std::time::Duration::from_secs(3600);

/// A `Hasher` over sha256, stable across Rust releases (unlike `DefaultHasher`).
struct StableHasher(Sha256);

impl Hasher for StableHasher {
    fn finish(&self) -> u64 {
        let digest = self.0.clone().finalize();
        u64::from_le_bytes([
            digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
        ])
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Whether `path` is owned by this process's user and writable by no one else.
fn private_to_us(path: &Path) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    // `/proc/self` belongs to the process's effective user: its uid without a libc call.
    let us = std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .map_err(|e| format!("cannot tell this process's user: {e}"))?;
    if meta.uid() != us {
        return Err(format!(
            "{} is owned by uid {}, not {us}",
            path.display(),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "{} is writable by others (mode {:o})",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    if meta.file_type().is_symlink() {
        return Err(format!("{} is a symbolic link", path.display()));
    }
    Ok(())
}

/// Marks an artifact as just used (its modification time orders pruning).
fn touch(file: &Path) {
    if let Ok(handle) = std::fs::File::options().append(true).open(file) {
        let _ = handle.set_modified(std::time::SystemTime::now());
    }
}

/// Creates the cache folder readable and writable by its owner only: it holds executable code.
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let meta = std::fs::metadata(dir)?;
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
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
