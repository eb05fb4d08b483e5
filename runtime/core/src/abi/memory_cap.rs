//! The per-instance memory cap, enforced by wasmtime's resource limiter.

use wasmtime::ResourceLimiter;

/// Refuses memory growth past a limit and remembers that it did, so a resulting trap is reported as
/// a memory-limit error.
pub struct MemoryCap {
    limit: usize,
    exceeded: bool,
}

impl MemoryCap {
    /// A cap of `limit` bytes of linear memory.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            exceeded: false,
        }
    }

    /// Whether growth was refused since the last reset.
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }

    /// Forgets earlier refusals (at the start of each call).
    pub fn reset(&mut self) {
        self.exceeded = false;
    }
}

/// Tables are small in real plugins; this bounds a hostile one.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}
