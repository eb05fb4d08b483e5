//! The wasmtime engine eventplug runs plugins on: pooling allocator, epoch interruption driven by a
//! ticker thread, a module cache, and loading of plugins into instance pools.

mod compile_limits;
mod error;
mod extension;
mod module_cache;
mod pool;

pub use compile_limits::CompileLimits;
pub use error::{CallError, LoadError};
pub use extension::{HostExtension, InstanceLimits};
pub use module_cache::{ModuleSource, module_digest};
pub use pool::{CallOutput, InstancePool, PoolStats, TestRun};

use crate::abi::{self, InstanceState, PluginContext};
use crate::store::TokenStore;
use eventplug_contract::PluginLimits;
use module_cache::ModuleCache;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, Linker, PoolingAllocationConfig};

/// Bytes of each pooled memory and table kept mapped and cleared by memset when an instance ends.
const KEEP_RESIDENT_BYTES: usize = 128 << 10;

/// Settings of the engine shared by all plugins.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Instances that may exist at once across all plugins (the pooling allocator's size).
    pub max_instances: u32,
    /// The largest memory limit any plugin may ask for, in bytes.
    pub max_memory_limit: u64,
    /// How often the epoch advances; call timeouts are accurate to about one tick.
    pub epoch_tick: Duration,
    /// Where precompiled modules are kept across restarts; `None` keeps them in memory only.
    pub cache_dir: Option<PathBuf>,
    /// The largest module file accepted, in bytes.
    pub max_module_bytes: u64,
    /// What a module may contain to be compiled (functions, code and data bytes).
    pub compile_limits: CompileLimits,
    /// The size the on-disk module cache is pruned to, least recently used first.
    pub max_cache_bytes: u64,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            max_instances: eventplug_contract::MAX_INSTANCES,
            max_memory_limit: 1 << 30,
            epoch_tick: Duration::from_millis(10),
            cache_dir: None,
            max_module_bytes: 64 << 20,
            compile_limits: CompileLimits::default(),
            max_cache_bytes: 512 << 20,
        }
    }
}

impl EngineSettings {
    /// Defaults, with the module cache in `$EVENTPLUG_CACHE_DIR`, else `$XDG_CACHE_HOME/eventplug/modules`,
    /// else `~/.cache/eventplug/modules`.
    pub fn with_default_cache() -> Self {
        let dir = std::env::var_os("EVENTPLUG_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("XDG_CACHE_HOME")
                    .map(|d| PathBuf::from(d).join("eventplug/modules"))
            })
            .or_else(|| {
                std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/eventplug/modules"))
            });
        Self {
            cache_dir: dir,
            ..Self::default()
        }
    }
}

/// What the engine needs to load one plugin: its name, its module and how its instances run.
#[derive(Debug, Clone, Copy)]
pub struct ModuleRequest<'a> {
    /// The plugin's name (labels its tokens, effects, logs and errors).
    pub name: &'a str,
    /// The module file (`.wasm`, or `.wat` text).
    pub module: &'a Path,
    /// The `sha256:<hex>` digest the module's bytes must have, if pinned.
    pub digest: Option<&'a str>,
    /// Limits of every call.
    pub limits: &'a PluginLimits,
    /// The configuration handed to `eventplug_init`.
    pub config: &'a [u8],
}

/// A module ready to run: its digest and its instances.
pub struct LoadedModule {
    /// `sha256:<hex>` of the module bytes.
    pub digest: String,
    /// Where the compiled module came from.
    pub source: ModuleSource,
    /// Its instances.
    pub pool: InstancePool,
}

/// Advances the engine's epoch every tick until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: &Engine, tick: Duration) -> Result<Self, LoadError> {
        let stop = Arc::new(AtomicBool::new(false));
        let weak = engine.weak();
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("eventplug-epoch".into())
            .spawn(move || {
                while !stopped.load(Ordering::Relaxed) {
                    std::thread::sleep(tick);
                    match weak.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => break,
                    }
                }
            })
            .map_err(|e| LoadError::Engine(format!("cannot start the epoch thread: {e}")))?;
        Ok(Self { stop })
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The engine, its host functions and its module cache.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<InstanceState>,
    modules: ModuleCache,
    settings: EngineSettings,
    extension: Option<Arc<dyn HostExtension>>,
    _ticker: EpochTicker,
}

impl PluginEngine {
    /// Sets up wasmtime with eventplug's configuration and the ABI's host functions.
    pub fn new(settings: EngineSettings) -> Result<Self, LoadError> {
        Self::build(settings, None)
    }

    /// An engine whose instances also get `extension`'s host functions and per-instance state
    /// (the test harness of `eventplug test`).
    pub fn with_extension(
        settings: EngineSettings,
        extension: Arc<dyn HostExtension>,
    ) -> Result<Self, LoadError> {
        Self::build(settings, Some(extension))
    }

    fn build(
        settings: EngineSettings,
        extension: Option<Arc<dyn HostExtension>>,
    ) -> Result<Self, LoadError> {
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_core_instances(settings.max_instances)
            .total_memories(settings.max_instances)
            .total_tables(settings.max_instances)
            // A call on a multi-thread runtime runs on a fiber stack of its own; there are never
            // more calls at once than instances.
            .total_stacks(settings.max_instances)
            .max_memory_size(usize::try_from(settings.max_memory_limit).unwrap_or(usize::MAX))
            // Reset the first pages of a recycled memory and table with memset instead of
            // returning them to the kernel: cheaper for the small plugins eventplug runs.
            .linear_memory_keep_resident(KEEP_RESIDENT_BYTES)
            .table_keep_resident(KEEP_RESIDENT_BYTES);
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        abi::define_imports(&mut linker).map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        if let Some(extension) = &extension {
            extension
                .link(&mut linker)
                .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        }
        let modules = ModuleCache::new(
            &engine,
            settings.cache_dir.clone(),
            settings.compile_limits,
            settings.max_cache_bytes,
        );
        let ticker = EpochTicker::start(&engine, settings.epoch_tick)?;
        Ok(Self {
            engine,
            linker,
            modules,
            settings,
            extension,
            _ticker: ticker,
        })
    }

    /// The engine's settings.
    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Compiled modules in memory now: one per distinct module some loaded plugin still uses.
    pub fn modules_in_memory(&self) -> usize {
        self.modules.in_memory()
    }

    /// Bytes of precompiled modules in the on-disk cache.
    pub fn disk_cache_bytes(&self) -> u64 {
        self.modules.disk_bytes()
    }

    /// Loads a plugin's module: reads and compiles it (or takes it from the cache), checks it
    /// against the ABI, starts one instance (ABI version, `eventplug_init` with the configuration)
    /// and returns it ready to run.
    pub fn load(
        &self,
        request: ModuleRequest<'_>,
        tokens: Arc<dyn TokenStore>,
    ) -> Result<LoadedModule, LoadError> {
        let ModuleRequest {
            name,
            module: path,
            digest: expected_digest,
            limits,
            config,
        } = request;
        let settings_error = |message: String| LoadError::Settings {
            plugin: name.to_string(),
            message,
        };
        limits
            .check()
            .map_err(|e| settings_error(e.within("limits").to_string()))?;
        if limits.memory_limit.get() > self.settings.max_memory_limit {
            return Err(settings_error(format!(
                "limits.memoryLimit {} is over the engine's maximum of {}",
                limits.memory_limit,
                eventplug_contract::ByteSize(self.settings.max_memory_limit)
            )));
        }
        if limits.concurrency > self.settings.max_instances {
            return Err(settings_error(format!(
                "limits.concurrency must be from 1 to {}, not {}",
                self.settings.max_instances, limits.concurrency
            )));
        }
        let size = std::fs::metadata(path)
            .map_err(|error| LoadError::Read {
                path: path.to_path_buf(),
                error,
            })?
            .len();
        if size > self.settings.max_module_bytes {
            return Err(LoadError::TooLarge {
                path: path.to_path_buf(),
                size,
                limit: self.settings.max_module_bytes,
            });
        }
        // Read at most one byte past the limit: the file may have grown since it was measured.
        let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        let read_error = |error| LoadError::Read {
            path: path.to_path_buf(),
            error,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        std::io::Read::read_to_end(
            &mut std::io::Read::take(file, self.settings.max_module_bytes + 1),
            &mut bytes,
        )
        .map_err(read_error)?;
        if bytes.len() as u64 > self.settings.max_module_bytes {
            return Err(LoadError::TooLarge {
                path: path.to_path_buf(),
                size: bytes.len() as u64,
                limit: self.settings.max_module_bytes,
            });
        }
        if let Some(expected) = expected_digest {
            let found = module_digest(&bytes);
            if !found.eq_ignore_ascii_case(expected) {
                return Err(settings_error(format!(
                    "module {} has digest {found}, not the configured {expected}: the file changed, or the digest is wrong",
                    path.display()
                )));
            }
        }
        let (module, digest, source) =
            self.modules
                .get(&self.engine, &bytes)
                .map_err(|message| LoadError::Invalid {
                    path: path.to_path_buf(),
                    message,
                })?;
        let extension_imports = self.extension.as_ref().map_or(&[][..], |e| e.imports());
        let problems = abi::check_module(&module, extension_imports);
        if !problems.is_empty() {
            return Err(LoadError::Abi {
                path: path.to_path_buf(),
                problems,
            });
        }
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Invalid {
                path: path.to_path_buf(),
                message: format!("{e:#}"),
            })?;
        let context = Arc::new(PluginContext {
            name: name.to_string(),
            tokens,
            max_log_lines_per_call: limits.max_log_lines_per_call,
        });
        let pool = InstancePool::new(pool::PoolParts {
            engine: self.engine.clone(),
            module,
            pre,
            context,
            limits: *limits,
            config: config.to_vec(),
            epoch_tick: self.settings.epoch_tick,
            extension: self.extension.clone(),
        });
        pool.warm_up().map_err(|error| LoadError::Start {
            plugin: name.to_string(),
            error,
        })?;
        Ok(LoadedModule {
            digest,
            source,
            pool,
        })
    }
}
