//! A pool of instances of one plugin: up to `concurrency` instances, each used by one call at a time,
//! created from an `InstancePre` (cheap with the pooling allocator), thrown away after a trap,
//! timeout or memory-limit error and replaced on demand. Waiting for a free instance is bounded.

use super::error::CallError;
use super::extension::{HostExtension, InstanceLimits};
use crate::abi::{self, CallRecord, InstanceState, PluginContext, read_guest_bytes, unpack_region};
use eventplug_contract::PluginLimits;
use eventplug_proto::v1 as pb;
use prost::Message;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use wasmtime::{Engine, InstancePre, Memory, Store, Trap, TypedFunc};

/// What a successful call returned.
#[derive(Debug, Clone, PartialEq)]
pub struct CallOutput {
    /// The response bytes (a `HandleEventResponse`).
    pub response: Vec<u8>,
    /// Effects and log lines the call declared.
    pub record: CallRecord,
}

/// The result of running a test build's `test` export.
#[derive(Debug)]
pub struct TestRun {
    /// `Ok` when `test()` returned; the failure (usually a trap with the assertion's message).
    pub outcome: Result<(), CallError>,
    /// Log lines written during the run, including those of the events it handled.
    pub logs: Vec<crate::abi::PluginLog>,
    /// Log lines dropped by the per-call limit.
    pub dropped_logs: u32,
}

/// Counters of one pool.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Instances created.
    pub created: AtomicU64,
    /// Instances thrown away after a failure.
    pub discarded: AtomicU64,
    /// Calls running now.
    pub in_use: AtomicU32,
    /// The most calls that ran at once.
    pub max_in_use: AtomicU32,
    /// Total nanoseconds calls waited for an instance.
    pub wait_nanos: AtomicU64,
    /// Calls made (`eventplug_handle_event`), successful or not.
    pub calls: AtomicU64,
}

/// One live instance and typed handles to its exports.
pub(crate) struct PooledInstance {
    instance: wasmtime::Instance,
    store: Store<InstanceState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    handle_event: TypedFunc<(i32, i32), i64>,
}

/// The instances of one plugin.
pub struct InstancePool {
    pre: InstancePre<InstanceState>,
    engine: Engine,
    context: Arc<PluginContext>,
    limits: PluginLimits,
    config: Vec<u8>,
    deadline_ticks: u64,
    extension: Option<Arc<dyn HostExtension>>,
    /// Keeps the compiled module in the engine's module cache while the pool lives.
    _module: Arc<wasmtime::Module>,
    idle: Mutex<Vec<PooledInstance>>,
    free_slots: Mutex<u32>,
    slot_freed: Condvar,
    stats: PoolStats,
}

/// A claim on one of the pool's `concurrency` slots, given back on drop.
struct Slot<'a> {
    pool: &'a InstancePool,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.pool.stats.in_use.fetch_sub(1, Ordering::Relaxed);
        let mut free = self.pool.lock_free_slots();
        *free += 1;
        self.pool.slot_freed.notify_one();
    }
}

/// What a pool is made of: the compiled module ready to instantiate, and how instances run.
pub(crate) struct PoolParts {
    pub(crate) engine: Engine,
    pub(crate) module: Arc<wasmtime::Module>,
    pub(crate) pre: InstancePre<InstanceState>,
    pub(crate) context: Arc<PluginContext>,
    pub(crate) limits: PluginLimits,
    pub(crate) config: Vec<u8>,
    pub(crate) epoch_tick: Duration,
    pub(crate) extension: Option<Arc<dyn HostExtension>>,
}

impl InstancePool {
    pub(crate) fn new(parts: PoolParts) -> Self {
        let PoolParts {
            engine,
            module,
            pre,
            context,
            limits,
            config,
            epoch_tick,
            extension,
        } = parts;
        // One tick more than the timeout needs, because the current tick may end at once.
        let ticks = limits
            .timeout
            .get()
            .as_nanos()
            .div_ceil(epoch_tick.as_nanos().max(1));
        let deadline_ticks = u64::try_from(ticks).unwrap_or(u64::MAX).saturating_add(1);
        Self {
            pre,
            engine,
            context,
            free_slots: Mutex::new(limits.concurrency.max(1)),
            limits,
            config,
            deadline_ticks,
            extension,
            _module: module,
            idle: Mutex::new(Vec::new()),
            slot_freed: Condvar::new(),
            stats: PoolStats::default(),
        }
    }

    /// The pool's counters.
    pub fn stats(&self) -> &PoolStats {
        &self.stats
    }

    /// The limits calls run under.
    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    fn lock_free_slots(&self) -> std::sync::MutexGuard<'_, u32> {
        self.free_slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<PooledInstance>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn claim_slot(&self) -> Result<Slot<'_>, CallError> {
        let started = Instant::now();
        let deadline = started + self.limits.max_wait.get();
        let mut free = self.lock_free_slots();
        while *free == 0 {
            let now = Instant::now();
            if now >= deadline {
                return Err(CallError::Busy {
                    waited: now - started,
                    concurrency: self.limits.concurrency,
                });
            }
            free = self
                .slot_freed
                .wait_timeout(free, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *free -= 1;
        drop(free);
        let waited = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.stats.wait_nanos.fetch_add(waited, Ordering::Relaxed);
        let in_use = self.stats.in_use.fetch_add(1, Ordering::Relaxed) + 1;
        self.stats.max_in_use.fetch_max(in_use, Ordering::Relaxed);
        Ok(Slot { pool: self })
    }

    /// Runs `eventplug_handle_event` on `request` in a free instance.
    pub fn handle_event(&self, request: &[u8]) -> Result<CallOutput, CallError> {
        self.handle_event_checked(request, |response| Ok(response.to_vec()))
            .map(|(response, record)| CallOutput { response, record })
    }

    /// Runs `eventplug_handle_event` on `request` and interprets the response with `interpret`
    /// while the instance is still held: an instance whose response is a bad output is thrown away
    /// like one that trapped (an error verdict is the plugin's answer, not a fault).
    pub fn handle_event_checked<T>(
        &self,
        request: &[u8],
        interpret: impl FnOnce(&[u8]) -> Result<T, CallError>,
    ) -> Result<(T, CallRecord), CallError> {
        let _slot = self.claim_slot()?;
        let idle = self.lock_idle().pop();
        let mut instance = match idle {
            Some(instance) => instance,
            None => self.instantiate()?,
        };
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let result = self
            .call(&mut instance, request)
            .and_then(|output| interpret(&output.response).map(|value| (value, output.record)));
        match result {
            Err(error @ (CallError::Plugin(_) | CallError::Busy { .. })) => {
                self.lock_idle().push(instance);
                Err(error)
            }
            Err(error) => {
                self.stats.discarded.fetch_add(1, Ordering::Relaxed);
                Err(error)
            }
            Ok(value) => {
                self.lock_idle().push(instance);
                Ok(value)
            }
        }
    }

    /// Runs the `test` export of a test build in a fresh instance (`eventplug test`).
    pub fn run_test(&self) -> Result<TestRun, CallError> {
        let mut instance = self.instantiate()?;
        let test: TypedFunc<(), ()> = instance
            .instance
            .get_typed_func(&mut instance.store, abi::exports::TEST)
            .map_err(|_| {
                CallError::Instantiate(
                    "the module exports no `test: () -> ()`: build the test entry (e.g. assembly/test.ts to build/test.wasm)".into(),
                )
            })?;
        let store = &mut instance.store;
        store.data_mut().memory_cap.reset();
        store.set_epoch_deadline(self.deadline_ticks);
        let outcome = test
            .call(&mut *store, ())
            .map_err(|e| self.classify(store, e, "test()"));
        let record = std::mem::take(&mut store.data_mut().record);
        Ok(TestRun {
            outcome,
            logs: record.logs,
            dropped_logs: record.dropped_logs,
        })
    }

    /// Starts one more instance (to check a module at load, and for benchmarks) and keeps it idle.
    pub(crate) fn warm_up(&self) -> Result<(), CallError> {
        let instance = self.instantiate()?;
        self.lock_idle().push(instance);
        Ok(())
    }

    /// Creates a fresh instance as a call would (instantiate, ABI version, init) and drops it:
    /// what `eventplug bench` measures.
    pub fn start_and_drop_instance(&self) -> Result<(), CallError> {
        self.instantiate().map(drop)
    }

    /// Creates an instance: instantiates, checks the ABI version, hands over the configuration.
    pub(crate) fn instantiate(&self) -> Result<PooledInstance, CallError> {
        let memory_limit = usize::try_from(self.limits.memory_limit.get()).unwrap_or(usize::MAX);
        let extension = self.extension.as_ref().map(|extension| {
            extension.instance_state(InstanceLimits {
                call_deadline_ticks: self.deadline_ticks,
                max_output: self.limits.max_output.get(),
            })
        });
        let mut store = Store::new(
            &self.engine,
            InstanceState::new(self.context.clone(), memory_limit, extension),
        );
        store.limiter(|state| &mut state.memory_cap);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.deadline_ticks);
        let instance = self
            .pre
            .instantiate(&mut store)
            .map_err(|e| self.classify(&store, e, "instantiating"))?;
        self.stats.created.fetch_add(1, Ordering::Relaxed);
        let missing =
            |name: &str| CallError::Instantiate(format!("export `{name}` is missing or mistyped"));
        let memory = instance
            .get_memory(&mut store, abi::exports::MEMORY)
            .ok_or_else(|| missing(abi::exports::MEMORY))?;
        let typed = |store: &mut Store<InstanceState>, name: &str| {
            instance
                .get_func(&mut *store, name)
                .ok_or_else(|| missing(name))
        };
        let version: TypedFunc<(), i32> = typed(&mut store, abi::exports::ABI_VERSION)?
            .typed(&store)
            .map_err(|_| missing(abi::exports::ABI_VERSION))?;
        let alloc: TypedFunc<i32, i32> = typed(&mut store, abi::exports::ALLOC)?
            .typed(&store)
            .map_err(|_| missing(abi::exports::ALLOC))?;
        let handle_event: TypedFunc<(i32, i32), i64> =
            typed(&mut store, abi::exports::HANDLE_EVENT)?
                .typed(&store)
                .map_err(|_| missing(abi::exports::HANDLE_EVENT))?;
        if let Some(initialize) = instance.get_func(&mut store, abi::exports::INITIALIZE) {
            let initialize: TypedFunc<(), ()> = initialize
                .typed(&store)
                .map_err(|_| missing(abi::exports::INITIALIZE))?;
            initialize
                .call(&mut store, ())
                .map_err(|e| self.classify(&store, e, "running _initialize"))?;
        }
        let found = version
            .call(&mut store, ())
            .map_err(|e| self.classify(&store, e, "asking the ABI version"))?;
        if found != abi::ABI_VERSION {
            return Err(CallError::Instantiate(format!(
                "the module speaks ABI version {found}, this eventplug speaks version {}: build the plugin with an SDK for ABI {}",
                abi::ABI_VERSION,
                abi::ABI_VERSION
            )));
        }
        let mut pooled = PooledInstance {
            instance,
            store,
            memory,
            alloc,
            handle_event,
        };
        if let Some(init) = instance.get_func(&mut pooled.store, abi::exports::INIT) {
            let init: TypedFunc<(i32, i32), i64> = init
                .typed(&pooled.store)
                .map_err(|_| missing(abi::exports::INIT))?;
            let response = self.call_with_input(&mut pooled, &self.config, |store, ptr, len| {
                init.call(store, (ptr, len))
            })?;
            let response = pb::InitResponse::decode(response.as_slice()).map_err(|e| {
                CallError::BadOutput(format!(
                    "eventplug_init returned bytes that are not an InitResponse: {e}"
                ))
            })?;
            if !response.error.is_empty() {
                return Err(CallError::Instantiate(format!(
                    "the plugin refused its configuration: {}",
                    response.error
                )));
            }
        }
        pooled.store.data_mut().record = CallRecord::default();
        Ok(pooled)
    }

    fn call(&self, instance: &mut PooledInstance, request: &[u8]) -> Result<CallOutput, CallError> {
        let handle_event = instance.handle_event.clone();
        let response = self.call_with_input(instance, request, |store, ptr, len| {
            handle_event.call(store, (ptr, len))
        })?;
        let record = std::mem::take(&mut instance.store.data_mut().record);
        Ok(CallOutput { response, record })
    }

    /// Copies `input` into the instance, runs `entry` on it under the deadline and copies the
    /// returned region out.
    fn call_with_input(
        &self,
        instance: &mut PooledInstance,
        input: &[u8],
        entry: impl FnOnce(&mut Store<InstanceState>, i32, i32) -> wasmtime::Result<i64>,
    ) -> Result<Vec<u8>, CallError> {
        let store = &mut instance.store;
        store.data_mut().memory_cap.reset();
        store.data_mut().record = CallRecord::default();
        store.set_epoch_deadline(self.deadline_ticks);
        let len = i32::try_from(input.len())
            .map_err(|_| CallError::BadOutput("input over 2 GiB".to_string()))?;
        let ptr = instance
            .alloc
            .call(&mut *store, len)
            .map_err(|e| self.classify(store, e, "eventplug_alloc"))?;
        instance
            .memory
            .write(&mut *store, ptr as u32 as usize, input)
            .map_err(|_| {
                CallError::BadOutput(format!(
                    "eventplug_alloc({len}) returned {ptr:#x}, which has no room for {len} bytes in the plugin's memory"
                ))
            })?;
        let packed = entry(store, ptr, len).map_err(|e| self.classify(store, e, "the call"))?;
        let (out_ptr, out_len) = unpack_region(packed);
        if u64::from(out_len) > self.limits.max_output.get() {
            return Err(CallError::BadOutput(format!(
                "the response is {out_len} bytes, over the limit of {} bytes",
                self.limits.max_output.get()
            )));
        }
        if out_len == 0 {
            return Ok(Vec::new());
        }
        read_guest_bytes(&instance.memory, &*store, out_ptr, out_len, "response")
            .map_err(CallError::BadOutput)
    }

    /// Turns a wasmtime error into the call error it stands for.
    fn classify(
        &self,
        store: &Store<InstanceState>,
        error: wasmtime::Error,
        during: &str,
    ) -> CallError {
        if store.data().memory_cap.exceeded() {
            return CallError::MemoryLimit {
                limit: self.limits.memory_limit.get(),
            };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => CallError::Timeout(self.limits.timeout.get()),
            Some(trap) => CallError::Trap(format!("{trap} during {during}")),
            // A host function's error (AssemblyScript's abort, a missing fixture): its own message,
            // without the wasm backtrace wrapped around it.
            None if during == "instantiating" => {
                CallError::Instantiate(error.root_cause().to_string())
            }
            None => CallError::Trap(error.root_cause().to_string()),
        }
    }
}
