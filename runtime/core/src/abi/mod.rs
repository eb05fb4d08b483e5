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

pub use eventplug_abi::{ABI_VERSION, HOST_MODULE, TEST_MODULE, exports};

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
