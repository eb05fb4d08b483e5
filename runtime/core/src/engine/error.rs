//! Errors of loading a plugin and of calling one.

use std::path::PathBuf;
use std::time::Duration;

/// Why a plugin could not be loaded. Each names the plugin or file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The module file could not be read.
    #[error("cannot read plugin module {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The module is larger than the engine accepts.
    #[error("plugin module {path} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The bytes are not a WebAssembly module wasmtime accepts.
    #[error("plugin module {path} is not a valid WebAssembly module: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What the compiler said.
        message: String,
    },
    /// Imports or exports do not meet the ABI.
    #[error("plugin module {path} does not meet the eventplug ABI (docs/abi.md): {}", problems.join("; "))]
    Abi {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<String>,
    },
    /// The settings cannot be honoured.
    #[error("plugin {plugin}: {message}")]
    Settings {
        /// The plugin.
        plugin: String,
        /// What is wrong.
        message: String,
    },
    /// The first instance could not be started, or refused its configuration.
    #[error("plugin {plugin} failed to start: {error}")]
    Start {
        /// The plugin.
        plugin: String,
        /// What went wrong.
        error: CallError,
    },
    /// The engine could not be set up.
    #[error("wasm engine: {0}")]
    Engine(String),
}

/// Why one call into a plugin failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The call ran past its timeout and was interrupted.
    #[error("timed out after {0:?} and was interrupted")]
    Timeout(Duration),
    /// The instance tried to grow its memory past the plugin's limit.
    #[error("exceeded its memory limit of {limit} bytes")]
    MemoryLimit {
        /// The limit in bytes.
        limit: u64,
    },
    /// The plugin trapped (including AssemblyScript's `abort`).
    #[error("trapped: {0}")]
    Trap(String),
    /// No instance became free in time.
    #[error(
        "busy: no instance became free within {waited:?} (all {concurrency} in use); raise concurrency or maxWait"
    )]
    Busy {
        /// How long the call waited.
        waited: Duration,
        /// The plugin's instance count.
        concurrency: u32,
    },
    /// The response broke the ABI (outside memory, too large, not a response message, bad edit).
    #[error("returned a bad response: {0}")]
    BadOutput(String),
    /// The plugin answered with an error verdict.
    #[error("reported an error: {0}")]
    Plugin(String),
    /// A new instance could not be created or initialised.
    #[error("could not start an instance: {0}")]
    Instantiate(String),
}

impl CallError {
    /// Every value `reason` returns.
    pub const REASONS: [&'static str; 7] = [
        "timeout",
        "memory_limit",
        "trap",
        "busy",
        "bad_output",
        "plugin_error",
        "instantiate",
    ];

    /// A short stable name for metrics and logs; one of `REASONS`.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::MemoryLimit { .. } => "memory_limit",
            Self::Trap(_) => "trap",
            Self::Busy { .. } => "busy",
            Self::BadOutput(_) => "bad_output",
            Self::Plugin(_) => "plugin_error",
            Self::Instantiate(_) => "instantiate",
        }
    }
}
