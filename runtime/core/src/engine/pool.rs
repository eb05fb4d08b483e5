//! A pool of instances of one plugin: up to `concurrency` instances, each used by one call at a time,
//! created from an `InstancePre` (cheap with the pooling allocator), thrown away after a trap,
//! timeout or memory-limit error and replaced on demand.
//!
//! Waiting for a free instance is awaited, not blocked on: a call holds one of `concurrency`
//! semaphore permits, and a caller that finds none waits for one at most `maxWait`, then fails as
//! busy. On a multi-thread runtime (the sidecar) the call itself is a wasmtime async call on the
//! worker, which yields at every epoch tick and traps when its ticks are spent; on a current-thread
//! runtime (`eventplug run` and `bench`) it is a plain synchronous call. docs/performance.md
//! ("Waiting and running calls") has the measurements behind this.

use super::error::CallError;
use super::extension::{HostExtension, InstanceLimits};
use crate::abi::{self, CallRecord, InstanceState, PluginContext, read_guest_bytes, unpack_region};
use eventplug_contract::PluginLimits;
use eventplug_proto::v1 as pb;
use prost::Message;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{Semaphore, SemaphorePermit};
use wasmtime::{Engine, InstancePre, Memory, Store, Trap, TypedFunc, UpdateDeadline};

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
    /// Total nanoseconds calls waited for an instance (calls that got one; not those that were busy).
    pub wait_nanos: AtomicU64,
    /// Calls made (`eventplug_handle_event`), successful or not.
    pub calls: AtomicU64,
    /// Calls waiting for an instance now.
    pub waiting: AtomicU32,
}

/// One live instance and typed handles to its exports.
pub(crate) struct PooledInstance {
    instance: wasmtime::Instance,
    store: Store<InstanceState>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    handle_event: TypedFunc<(i32, i32), i64>,
    /// The running call's ticks, when the store counts them ([`Deadlines::Budget`]).
    budget: Option<Arc<CallBudget>>,
}

/// How an instance's calls meet their deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deadlines {
    /// The store traps when the epoch reaches the deadline. Calls are synchronous only, and a host
    /// extension may set deadlines of its own (`eventplug test` gives each handled event one).
    Trap,
    /// Every tick takes one from the call's [`CallBudget`]: an async call yields to the executor
    /// there, a synchronous one goes on; with the budget spent the call traps. Pooled instances.
    Budget,
}

/// The epoch ticks the running call may still use, and whether it yields at each.
#[derive(Debug, Default)]
struct CallBudget {
    ticks_left: AtomicU64,
    may_yield: AtomicBool,
}

impl CallBudget {
    /// Gives the call about to start `ticks` ticks, the same deadline a trapping store would set.
    fn start(&self, ticks: u64, may_yield: bool) {
        self.ticks_left
            .store(ticks.saturating_sub(1), Ordering::Relaxed);
        self.may_yield.store(may_yield, Ordering::Relaxed);
    }

    /// What the store does at a tick.
    fn tick(&self) -> UpdateDeadline {
        let spent = self
            .ticks_left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .is_err();
        if spent {
            UpdateDeadline::Interrupt
        } else if self.may_yield.load(Ordering::Relaxed) {
            UpdateDeadline::Yield(1)
        } else {
            UpdateDeadline::Continue(1)
        }
    }
}

/// Counts an instance as discarded if dropped while armed: a call's future dropped while the call
/// was suspended at a tick takes its instance with it, mid-call, and that instance is not reused.
struct DiscardIfDropped<'a> {
    discarded: &'a AtomicU64,
    armed: bool,
}

impl DiscardIfDropped<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for DiscardIfDropped<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.discarded.fetch_add(1, Ordering::Relaxed);
        }
    }
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
    /// One permit per slot (`concurrency`); waiters are served first come, first served.
    slots: Semaphore,
    stats: PoolStats,
}

/// A claim on one of the pool's `concurrency` slots, given back on drop.
struct Slot<'a> {
    stats: &'a PoolStats,
    _permit: SemaphorePermit<'a>,
    /// How long the claim waited.
    waited: Duration,
}

/// Counts a call in `PoolStats::waiting` while it waits (also when the wait is given up).
struct Waiting<'a>(&'a AtomicU32);

impl<'a> Waiting<'a> {
    fn new(counter: &'a AtomicU32) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        // Runs before the permit is released, so `in_use` never counts more than the permits.
        self.stats.in_use.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Whether this thread is in a multi-thread Tokio runtime, where calls run async and yield.
fn on_multi_thread_runtime() -> bool {
    Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() != RuntimeFlavor::CurrentThread)
}

/// Runs synchronous wasm code (starting an instance) to the end on this thread. On a multi-thread
/// runtime's worker, the worker's other tasks are first handed to another thread
/// (`block_in_place`, several microseconds each time, so only for this rare step), so an
/// `eventplug_init` that runs long holds up no other request. On a current-thread runtime (where `block_in_place` is not
/// allowed) or outside any runtime it simply runs.
fn run_in_place<R>(work: impl FnOnce() -> R) -> R {
    if on_multi_thread_runtime() {
        tokio::task::block_in_place(work)
    } else {
        work()
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
            slots: Semaphore::new(usize::try_from(limits.concurrency.max(1)).unwrap_or(1)),
            limits,
            config,
            deadline_ticks,
            extension,
            _module: module,
            idle: Mutex::new(Vec::new()),
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

    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<PooledInstance>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a free slot, or waits for one at most `maxWait` without holding a thread.
    async fn claim_slot(&self) -> Result<Slot<'_>, CallError> {
        let started = Instant::now();
        let (permit, waited) = match self.slots.try_acquire() {
            Ok(permit) => (permit, Duration::ZERO),
            Err(_) => {
                let _waiting = Waiting::new(&self.stats.waiting);
                match tokio::time::timeout(self.limits.max_wait.get(), self.slots.acquire()).await {
                    Ok(Ok(permit)) => (permit, started.elapsed()),
                    // The semaphore is never closed; were it, there would be no slot either.
                    Ok(Err(_)) | Err(_) => {
                        return Err(CallError::Busy {
                            waited: started.elapsed(),
                            concurrency: self.limits.concurrency,
                        });
                    }
                }
            }
        };
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.stats.wait_nanos.fetch_add(nanos, Ordering::Relaxed);
        let in_use = self.stats.in_use.fetch_add(1, Ordering::Relaxed) + 1;
        self.stats.max_in_use.fetch_max(in_use, Ordering::Relaxed);
        Ok(Slot {
            stats: &self.stats,
            _permit: permit,
            waited,
        })
    }

    /// Runs `eventplug_handle_event` on `request` in a free instance (see
    /// [`InstancePool::handle_event_checked`]).
    pub async fn handle_event(&self, request: &[u8]) -> Result<CallOutput, CallError> {
        self.handle_event_checked(request, |response| Ok(response.to_vec()))
            .await
            .map(|(response, record)| CallOutput { response, record })
    }

    /// Runs `eventplug_handle_event` on `request` and interprets the response with `interpret`
    /// while the instance is still held: an instance whose response is a bad output is thrown away
    /// like one that trapped (an error verdict is the plugin's answer, not a fault).
    ///
    /// Waiting for a free instance is awaited, at most `maxWait`, then [`CallError::Busy`]; it needs
    /// a Tokio runtime with its timer enabled. On a multi-thread runtime the call is async: it runs
    /// on the polling worker and gives the worker back at every epoch tick, so a plugin that runs
    /// to its timeout holds no thread for longer than a tick at a time. On a current-thread runtime
    /// it is synchronous (nothing else waits for that thread). Dropping the future while it waits
    /// gives up the wait; dropping it while the call is suspended at a tick ends the call there and
    /// throws its instance away.
    pub async fn handle_event_checked<T>(
        &self,
        request: &[u8],
        interpret: impl FnOnce(&[u8]) -> Result<T, CallError>,
    ) -> Result<(T, CallRecord), CallError> {
        let slot = self.claim_slot().await?;
        let idle = self.lock_idle().pop();
        let mut instance = match idle {
            Some(instance) => instance,
            // The first calls, and the one after a failure: synchronous, and rare.
            None => run_in_place(|| self.instantiate(Deadlines::Budget))?,
        };
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        let called = if on_multi_thread_runtime() {
            let abandoned = DiscardIfDropped {
                discarded: &self.stats.discarded,
                armed: true,
            };
            let called = self.call_async(&mut instance, request).await;
            abandoned.disarm();
            called
        } else {
            self.call(&mut instance, request)
        };
        let result = called.and_then(|output| {
            let mut record = output.record;
            record.waited = slot.waited;
            interpret(&output.response).map(|value| (value, record))
        });
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
        let mut instance = self.instantiate(Deadlines::Trap)?;
        let test: TypedFunc<(), ()> = instance
            .instance
            .get_typed_func(&mut instance.store, abi::exports::TEST)
            .map_err(|_| {
                CallError::Instantiate(
                    "the module exports no `test: () -> ()`: build the test entry (e.g. assembly/test.ts to build/test.wasm)".into(),
                )
            })?;
        self.start_deadline(&mut instance, false);
        let store = &mut instance.store;
        store.data_mut().memory_cap.reset();
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
        let instance = self.instantiate(Deadlines::Budget)?;
        self.lock_idle().push(instance);
        Ok(())
    }

    /// Creates a fresh instance as a call would (instantiate, ABI version, init) and drops it:
    /// what `eventplug bench` measures.
    pub fn start_and_drop_instance(&self) -> Result<(), CallError> {
        self.instantiate(Deadlines::Budget).map(drop)
    }

    /// Creates an instance: instantiates, checks the ABI version, hands over the configuration.
    /// Synchronous: every call it makes runs to the end on this thread.
    fn instantiate(&self, deadlines: Deadlines) -> Result<PooledInstance, CallError> {
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
        let budget = match deadlines {
            Deadlines::Trap => {
                store.epoch_deadline_trap();
                store.set_epoch_deadline(self.deadline_ticks);
                None
            }
            Deadlines::Budget => {
                let budget = Arc::new(CallBudget::default());
                let counting = budget.clone();
                store.epoch_deadline_callback(move |_| Ok(counting.tick()));
                // Instantiating and the start-up calls share one deadline, as with `Trap`.
                budget.start(self.deadline_ticks, false);
                store.set_epoch_deadline(1);
                Some(budget)
            }
        };
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
            budget,
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

    /// `eventplug_handle_event` on `request`, synchronously.
    fn call(&self, instance: &mut PooledInstance, request: &[u8]) -> Result<CallOutput, CallError> {
        let handle_event = instance.handle_event.clone();
        let response = self.call_with_input(instance, request, |store, ptr, len| {
            handle_event.call(store, (ptr, len))
        })?;
        let record = std::mem::take(&mut instance.store.data_mut().record);
        Ok(CallOutput { response, record })
    }

    /// `eventplug_handle_event` on `request` as async calls that yield at every epoch tick.
    async fn call_async(
        &self,
        instance: &mut PooledInstance,
        request: &[u8],
    ) -> Result<CallOutput, CallError> {
        let len = self.start_call(instance, request, true)?;
        let ptr = instance
            .alloc
            .call_async(&mut instance.store, len)
            .await
            .map_err(|e| self.classify(&instance.store, e, "eventplug_alloc"))?;
        self.write_input(instance, ptr, len, request)?;
        let packed = instance
            .handle_event
            .call_async(&mut instance.store, (ptr, len))
            .await
            .map_err(|e| self.classify(&instance.store, e, "the call"))?;
        let response = self.read_response(instance, packed)?;
        let record = std::mem::take(&mut instance.store.data_mut().record);
        Ok(CallOutput { response, record })
    }

    /// Copies `input` into the instance, runs `entry` on it under the deadline and copies the
    /// returned region out, synchronously.
    fn call_with_input(
        &self,
        instance: &mut PooledInstance,
        input: &[u8],
        entry: impl FnOnce(&mut Store<InstanceState>, i32, i32) -> wasmtime::Result<i64>,
    ) -> Result<Vec<u8>, CallError> {
        let len = self.start_call(instance, input, false)?;
        let ptr = instance
            .alloc
            .call(&mut instance.store, len)
            .map_err(|e| self.classify(&instance.store, e, "eventplug_alloc"))?;
        self.write_input(instance, ptr, len, input)?;
        let packed = entry(&mut instance.store, ptr, len)
            .map_err(|e| self.classify(&instance.store, e, "the call"))?;
        self.read_response(instance, packed)
    }

    /// Sets the deadline of the call about to start on `instance`.
    fn start_deadline(&self, instance: &mut PooledInstance, may_yield: bool) {
        match &instance.budget {
            Some(budget) => {
                budget.start(self.deadline_ticks, may_yield);
                instance.store.set_epoch_deadline(1);
            }
            None => instance.store.set_epoch_deadline(self.deadline_ticks),
        }
    }

    /// Readies `instance` for a call on `input`: fresh memory cap, record and deadline. Returns the
    /// input's length as the ABI passes it.
    fn start_call(
        &self,
        instance: &mut PooledInstance,
        input: &[u8],
        may_yield: bool,
    ) -> Result<i32, CallError> {
        self.start_deadline(instance, may_yield);
        let state = instance.store.data_mut();
        state.memory_cap.reset();
        state.record = CallRecord::default();
        i32::try_from(input.len()).map_err(|_| CallError::BadOutput("input over 2 GiB".to_string()))
    }

    /// Copies `input` to where `eventplug_alloc` said it goes.
    fn write_input(
        &self,
        instance: &mut PooledInstance,
        ptr: i32,
        len: i32,
        input: &[u8],
    ) -> Result<(), CallError> {
        instance
            .memory
            .write(&mut instance.store, ptr as u32 as usize, input)
            .map_err(|_| {
                CallError::BadOutput(format!(
                    "eventplug_alloc({len}) returned {ptr:#x}, which has no room for {len} bytes in the plugin's memory"
                ))
            })
    }

    /// Copies out the region a call returned, within the output limit.
    fn read_response(&self, instance: &PooledInstance, packed: i64) -> Result<Vec<u8>, CallError> {
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
        read_guest_bytes(
            &instance.memory,
            &instance.store,
            out_ptr,
            out_len,
            "response",
        )
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
