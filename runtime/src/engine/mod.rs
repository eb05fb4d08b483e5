//! The wasmtime engine eventplug runs plugins on: pooling allocator, epoch interruption driven by a
//! ticker thread, a module cache, and loading of plugins into instance pools.

mod error;
mod limits;
mod module_cache;
mod pool;

pub use error::{CallError, LoadError};
pub use limits::MemoryCap;
pub use module_cache::{ModuleSource, module_digest};
pub use pool::{CallOutput, InstancePool, PoolStats, TestRun};

use crate::abi::{self, InstanceState, PluginContext};
use crate::settings::PluginSettings;
use crate::store::TokenStore;
use crate::testing::FixtureSet;
use module_cache::ModuleCache;
use std::path::PathBuf;
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
    /// Serve the test harness's imports (`eventplug test` only).
    pub test_harness: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            max_instances: 256,
            max_memory_limit: 1 << 30,
            epoch_tick: Duration::from_millis(10),
            cache_dir: None,
            max_module_bytes: 64 << 20,
            test_harness: false,
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

/// A plugin ready to run: its settings, its module's digest and its instances.
pub struct LoadedPlugin {
    /// The settings it was loaded with.
    pub settings: PluginSettings,
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
    _ticker: EpochTicker,
}

impl PluginEngine {
    /// Sets up wasmtime with eventplug's configuration.
    pub fn new(settings: EngineSettings) -> Result<Self, LoadError> {
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_core_instances(settings.max_instances)
            .total_memories(settings.max_instances)
            .total_tables(settings.max_instances)
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
        if settings.test_harness {
            abi::define_test_imports(&mut linker)
                .map_err(|e| LoadError::Engine(format!("{e:#}")))?;
        }
        let modules = ModuleCache::new(&engine, settings.cache_dir.clone());
        let ticker = EpochTicker::start(&engine, settings.epoch_tick)?;
        Ok(Self {
            engine,
            linker,
            modules,
            settings,
            _ticker: ticker,
        })
    }

    /// The engine's settings.
    pub fn settings(&self) -> &EngineSettings {
        &self.settings
    }

    /// Loads a plugin: reads and compiles (or takes from cache) its module, checks it against the
    /// ABI, starts one instance (ABI version, `eventplug_init` with the configuration) and returns
    /// it ready to run.
    pub fn load_plugin(
        &self,
        settings: &PluginSettings,
        tokens: Arc<dyn TokenStore>,
    ) -> Result<LoadedPlugin, LoadError> {
        self.load(settings, tokens, None)
    }

    /// Loads a test build of a plugin for `eventplug test`, with `fixtures` served by the test
    /// harness's imports. The engine must be set up with `test_harness`.
    pub fn load_test_plugin(
        &self,
        settings: &PluginSettings,
        tokens: Arc<dyn TokenStore>,
        fixtures: Arc<FixtureSet>,
    ) -> Result<LoadedPlugin, LoadError> {
        if !self.settings.test_harness {
            return Err(LoadError::Engine(
                "this engine does not serve the test harness".into(),
            ));
        }
        self.load(settings, tokens, Some(fixtures))
    }

    fn load(
        &self,
        settings: &PluginSettings,
        tokens: Arc<dyn TokenStore>,
        test_fixtures: Option<Arc<FixtureSet>>,
    ) -> Result<LoadedPlugin, LoadError> {
        let path = &settings.module;
        let settings_error = |message: String| LoadError::Settings {
            plugin: settings.name.clone(),
            message,
        };
        if settings.limits.memory_limit > self.settings.max_memory_limit {
            return Err(settings_error(format!(
                "memoryLimit {} is over the engine's maximum of {} bytes",
                settings.limits.memory_limit, self.settings.max_memory_limit
            )));
        }
        if settings.limits.concurrency == 0
            || settings.limits.concurrency > self.settings.max_instances
        {
            return Err(settings_error(format!(
                "concurrency must be from 1 to {}, not {}",
                self.settings.max_instances, settings.limits.concurrency
            )));
        }
        if settings.limits.timeout.is_zero() {
            return Err(settings_error("timeout must be above zero".into()));
        }
        let size = std::fs::metadata(path)
            .map_err(|error| LoadError::Read {
                path: path.clone(),
                error,
            })?
            .len();
        if size > self.settings.max_module_bytes {
            return Err(LoadError::TooLarge {
                path: path.clone(),
                size,
                limit: self.settings.max_module_bytes,
            });
        }
        let bytes = std::fs::read(path).map_err(|error| LoadError::Read {
            path: path.clone(),
            error,
        })?;
        if let Some(expected) = &settings.digest {
            let found = module_digest(&bytes);
            if !found.eq_ignore_ascii_case(expected) {
                return Err(LoadError::Settings {
                    plugin: settings.name.clone(),
                    message: format!(
                        "module {} has digest {found}, not the configured {expected}: the file changed, or the digest is wrong",
                        path.display()
                    ),
                });
            }
        }
        let (module, digest, source) =
            self.modules
                .get(&self.engine, &bytes)
                .map_err(|message| LoadError::Invalid {
                    path: path.clone(),
                    message,
                })?;
        let problems = abi::check_module(&module, test_fixtures.is_some());
        if !problems.is_empty() {
            return Err(LoadError::Abi {
                path: path.clone(),
                problems,
            });
        }
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| LoadError::Invalid {
                path: path.clone(),
                message: format!("{e:#}"),
            })?;
        let context = Arc::new(PluginContext {
            name: settings.name.clone(),
            tokens,
            max_log_lines_per_call: settings.limits.max_log_lines_per_call,
            test_fixtures,
        });
        let pool = InstancePool::new(
            self.engine.clone(),
            pre,
            context,
            settings.limits,
            settings.config_bytes(),
            self.settings.epoch_tick,
        );
        pool.warm_up().map_err(|error| LoadError::Start {
            plugin: settings.name.clone(),
            error,
        })?;
        Ok(LoadedPlugin {
            settings: settings.clone(),
            digest,
            source,
            pool,
        })
    }
}
