//! The one way to give plugins host functions beyond the ABI's: an engine built with a host
//! extension links its functions beside the ABI's and gives every instance the extension's own
//! state. The test harness of `eventplug test` is built on it; production engines have none.

use crate::abi::{ImportSpec, InstanceState};
use std::any::Any;
use wasmtime::Linker;

/// What an instance's calls are held to, for an extension that makes calls of its own.
#[derive(Debug, Clone, Copy)]
pub struct InstanceLimits {
    /// The epoch deadline of one call, in ticks.
    pub call_deadline_ticks: u64,
    /// The largest response one call may return, in bytes.
    pub max_output: u64,
}

/// Host functions and per-instance state added to an engine.
pub trait HostExtension: Send + Sync {
    /// The imports it serves, so the ABI check accepts modules that use them.
    fn imports(&self) -> &'static [ImportSpec];
    /// Adds its functions to the engine's linker.
    fn link(&self, linker: &mut Linker<InstanceState>) -> wasmtime::Result<()>;
    /// The state its functions work on in a new instance (read back with
    /// [`InstanceState::extension`]).
    fn instance_state(&self, limits: InstanceLimits) -> Box<dyn Any + Send>;
}
