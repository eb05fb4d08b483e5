//! The plugin ABI (docs/abi.md): what a module must export, what it may import, and the host side of
//! every import.
//!
//! The ABI is language-neutral: pointers and lengths into the plugin's own memory, protobuf messages
//! from `proto/` for structured data, UTF-8 for text. AssemblyScript's own `env` imports are served
//! as AssemblyScript defines them, so an AssemblyScript module needs no second ABI.

mod check;
mod effects;
mod host;
mod memory;
mod memory_cap;

pub use check::{FuncSig, ImportSpec, ValueKind, check_module, import, known_imports};
pub use effects::{Effect, EffectKind, LogLevel, PluginLog};
pub use host::{CallRecord, InstanceState, PluginContext, define_imports};
pub use memory::{read_guest_bytes, unpack_region};
pub use memory_cap::MemoryCap;

/// The ABI version this host speaks; a module's `eventplug_abi_version` must return it.
pub const ABI_VERSION: i32 = 1;

/// The import module of eventplug's own host functions.
pub const HOST_MODULE: &str = "eventplug";

/// The import module of the test harness's functions (docs/abi.md, "Testing plugins"), served only
/// by `eventplug test`.
pub const TEST_MODULE: &str = "eventplug_test";

/// Names of the functions and memory a plugin exports.
pub mod exports {
    /// The plugin's linear memory.
    pub const MEMORY: &str = "memory";
    /// `() -> i32`: the ABI version the plugin was built for.
    pub const ABI_VERSION: &str = "eventplug_abi_version";
    /// `(size: i32) -> i32`: memory for the host to write `size` bytes of input into.
    pub const ALLOC: &str = "eventplug_alloc";
    /// `(ptr: i32, len: i32) -> i64`: handle one `HandleEventRequest`; returns the response region.
    pub const HANDLE_EVENT: &str = "eventplug_handle_event";
    /// Optional `(ptr: i32, len: i32) -> i64`: take the plugin's configuration; returns an
    /// `InitResponse` region (0 for success).
    pub const INIT: &str = "eventplug_init";
    /// Optional `() -> ()`: run once before anything else (C and WASI reactors' constructors).
    pub const INITIALIZE: &str = "_initialize";
    /// `() -> ()` in a test build: the plugin's tests, run by `eventplug test`.
    pub const TEST: &str = "test";
}

/// Limits that bound what one call may ask of the host.
pub mod caps {
    /// Effects (alerts, lock calls) one call may declare; further ones are refused with -2.
    pub const MAX_EFFECTS_PER_CALL: usize = 16;
    /// Bytes of one effect message.
    pub const MAX_EFFECT_BYTES: usize = 64 << 10;
    /// Bytes of one log line; longer lines are cut.
    pub const MAX_LOG_LINE_BYTES: usize = 4 << 10;
    /// Bytes of the file name in an AssemblyScript `abort`; the message is capped like a log line.
    pub const MAX_FILE_NAME_BYTES: usize = 512;
    /// Bytes of a token scope name.
    pub const MAX_SCOPE_BYTES: usize = 256;
}
