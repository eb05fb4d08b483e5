//! How one plugin call can run inside the sidecar's Tokio runtime, measured side by side on
//! `examples/wat/forward.wat` with the first bundled sample event (docs/performance.md, "Waiting and
//! running calls"). Every mode makes the same call the instance pool makes (deadline, `eventplug_alloc`,
//! copy the request in, `eventplug_handle_event`) on the production engine configuration (pooling
//! allocator, epoch interruption, a 10 ms epoch ticker):
//!
//! - `sync`: the call on the current thread, no runtime;
//! - `block_in_place`: the same from a multi-thread runtime's worker, the worker's other tasks handed
//!   to another thread first (how the sidecar ran every event before);
//! - `spawn_blocking`: the same handed to Tokio's blocking pool and awaited (a dedicated pool);
//! - `call_async`: wasmtime's async calls (a fiber per call; each epoch tick yields to the executor,
//!   and the call traps at the deadline), on a current-thread runtime and on a multi-thread worker;
//! - `pool`: `InstancePool::handle_event` itself (slot semaphore, idle list, the call, stats), as
//!   eventplug runs it: synchronous on a current-thread runtime (`eventplug run` and `bench`), async on
//!   a multi-thread worker (the sidecar).
//!
//! In a runtime every call follows a `yield_now`, as a sidecar request follows network reads: without
//! it, a task that never yields keeps running on the thread `block_in_place` left without a worker
//! core, and later calls skip the hand-off. `yield_now alone` is that baseline, to subtract.
//!
//! Run: `cargo bench -p eventplug-runtime --bench call_modes`.

use eventplug_contract::PluginSettings;
use eventplug_runtime::engine::{EngineSettings, PluginEngine};
use eventplug_runtime::pipeline::{LoadedPlugin, encode_event};
use eventplug_runtime::store::LocalTokenStore;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, Memory, Module, PoolingAllocationConfig,
    Store, TypedFunc, UpdateDeadline,
};

const FORWARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/wat/forward.wat"
);
const SAMPLE: &str = include_str!("../../../examples/events/sample.jsonl");
/// Calls per mode and round.
const CALLS: u32 = 200_000;
const ROUNDS: usize = 5;
/// The production deadline for the default 100 ms timeout at a 10 ms tick: 11 ticks.
const DEADLINE_TICKS: u64 = 11;

/// What an async store counts: the ticks the running call may still yield before it traps.
struct Ticks {
    left: u64,
}

/// One instance of forward.wat and typed handles to its exports.
struct Raw {
    store: Store<Ticks>,
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    handle: TypedFunc<(i32, i32), i64>,
}

fn engine() -> Engine {
    let mut pooling = PoolingAllocationConfig::default();
    pooling
        .total_core_instances(16)
        .total_memories(16)
        .total_tables(16)
        .total_stacks(16)
        .linear_memory_keep_resident(128 << 10)
        .table_keep_resident(128 << 10);
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    Engine::new(&config).expect("engine")
}

/// Advances `engine`'s epoch every 10 ms, as eventplug's ticker does, until `stop`.
fn tick(engine: &Engine, stop: Arc<AtomicBool>) {
    let engine = engine.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(10));
            engine.increment_epoch();
        }
    });
}

fn exports(mut store: Store<Ticks>, instance: wasmtime::Instance) -> Raw {
    Raw {
        memory: instance.get_memory(&mut store, "memory").expect("memory"),
        alloc: instance
            .get_typed_func(&mut store, "eventplug_alloc")
            .expect("alloc"),
        handle: instance
            .get_typed_func(&mut store, "eventplug_handle_event")
            .expect("handle_event"),
        store,
    }
}

fn sync_instance(engine: &Engine, module: &Module) -> Raw {
    let mut store = Store::new(engine, Ticks { left: 0 });
    store.epoch_deadline_trap();
    let instance = Linker::new(engine)
        .instantiate(&mut store, module)
        .expect("instantiates");
    exports(store, instance)
}

async fn async_instance(engine: &Engine, module: &Module) -> Raw {
    let mut store = Store::new(engine, Ticks { left: 0 });
    // Every tick yields to the executor; after the call's ticks are used up it traps.
    store.epoch_deadline_callback(|mut context| {
        let ticks = context.data_mut();
        if ticks.left == 0 {
            Ok(UpdateDeadline::Interrupt)
        } else {
            ticks.left -= 1;
            Ok(UpdateDeadline::Yield(1))
        }
    });
    store.data_mut().left = DEADLINE_TICKS;
    store.set_epoch_deadline(1);
    let instance = Linker::new(engine)
        .instantiate_async(&mut store, module)
        .await
        .expect("instantiates");
    exports(store, instance)
}

fn call_sync(raw: &mut Raw, request: &[u8]) -> i64 {
    let len = request.len() as i32;
    raw.store.set_epoch_deadline(DEADLINE_TICKS);
    let ptr = raw.alloc.call(&mut raw.store, len).expect("alloc");
    raw.memory
        .write(&mut raw.store, ptr as u32 as usize, request)
        .expect("fits");
    raw.handle
        .call(&mut raw.store, (ptr, len))
        .expect("handle_event")
}

async fn call_async(raw: &mut Raw, request: &[u8]) -> i64 {
    let len = request.len() as i32;
    raw.store.data_mut().left = DEADLINE_TICKS;
    raw.store.set_epoch_deadline(1);
    let ptr = raw
        .alloc
        .call_async(&mut raw.store, len)
        .await
        .expect("alloc");
    raw.memory
        .write(&mut raw.store, ptr as u32 as usize, request)
        .expect("fits");
    raw.handle
        .call_async(&mut raw.store, (ptr, len))
        .await
        .expect("handle_event")
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

/// Two workers, as `eventplug serve` has on this machine.
fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .expect("runtime")
}

/// Nanoseconds per call of `CALLS` calls.
fn per_call(elapsed: Duration) -> f64 {
    elapsed.as_nanos() as f64 / f64::from(CALLS)
}

type Mode = (&'static str, Box<dyn FnMut() -> f64>);

fn main() {
    // `cargo test --all-targets` runs bench targets too; only `cargo bench` (which passes
    // `--bench`) measures.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `cargo bench -p eventplug-runtime --bench call_modes`");
        return;
    }
    let event = SAMPLE.lines().next().expect("a sample event");
    let request = Arc::new(encode_event(event.as_bytes()).expect("encodes").request);
    let engine = engine();
    let stop = Arc::new(AtomicBool::new(false));
    tick(&engine, stop.clone());
    let module = Module::from_file(&engine, FORWARD).expect("forward.wat compiles");
    let single = current_thread();
    let multi = multi_thread();

    let plugin_engine = PluginEngine::new(EngineSettings::default()).expect("engine");
    let mut settings = PluginSettings::for_module("forward", FORWARD);
    settings.limits.concurrency = 1;
    let plugin = Arc::new(
        LoadedPlugin::load(&plugin_engine, &settings, Arc::new(LocalTokenStore::new()))
            .expect("forward.wat loads"),
    );

    let mut modes: Vec<Mode> = Vec::new();
    {
        let mut raw = sync_instance(&engine, &module);
        let request = request.clone();
        modes.push((
            "sync call, no runtime",
            Box::new(move || {
                let started = Instant::now();
                for _ in 0..CALLS {
                    std::hint::black_box(call_sync(&mut raw, &request));
                }
                per_call(started.elapsed())
            }),
        ));
    }
    {
        let handle = single.handle().clone();
        modes.push((
            "yield_now alone, current-thread runtime",
            Box::new(move || {
                handle.block_on(async {
                    let started = Instant::now();
                    for _ in 0..CALLS {
                        tokio::task::yield_now().await;
                    }
                    per_call(started.elapsed())
                })
            }),
        ));
    }
    {
        let handle = multi.handle().clone();
        modes.push((
            "yield_now alone, multi-thread worker",
            Box::new(move || {
                handle
                    .block_on(handle.spawn(async move {
                        let started = Instant::now();
                        for _ in 0..CALLS {
                            tokio::task::yield_now().await;
                        }
                        per_call(started.elapsed())
                    }))
                    .expect("task")
            }),
        ));
    }
    {
        let mut raw = Some(sync_instance(&engine, &module));
        let request = request.clone();
        let handle = multi.handle().clone();
        modes.push((
            "sync call in block_in_place, multi-thread worker",
            Box::new(move || {
                let mut moved = raw.take().expect("instance");
                let request = request.clone();
                let (back, ns) = handle
                    .block_on(handle.spawn(async move {
                        let started = Instant::now();
                        for _ in 0..CALLS {
                            tokio::task::yield_now().await;
                            std::hint::black_box(tokio::task::block_in_place(|| {
                                call_sync(&mut moved, &request)
                            }));
                        }
                        (moved, per_call(started.elapsed()))
                    }))
                    .expect("task");
                raw = Some(back);
                ns
            }),
        ));
    }
    {
        let mut raw = Some(sync_instance(&engine, &module));
        let request = request.clone();
        let handle = multi.handle().clone();
        modes.push((
            "sync call in spawn_blocking, awaited on a worker",
            Box::new(move || {
                let mut moved = raw.take().expect("instance");
                let request = request.clone();
                let (back, ns) = handle
                    .block_on(handle.spawn(async move {
                        let started = Instant::now();
                        for _ in 0..CALLS {
                            tokio::task::yield_now().await;
                            let request = request.clone();
                            moved = tokio::task::spawn_blocking(move || {
                                std::hint::black_box(call_sync(&mut moved, &request));
                                moved
                            })
                            .await
                            .expect("call");
                        }
                        (moved, per_call(started.elapsed()))
                    }))
                    .expect("task");
                raw = Some(back);
                ns
            }),
        ));
    }
    {
        let mut raw = single.block_on(async_instance(&engine, &module));
        let request = request.clone();
        let handle = single.handle().clone();
        modes.push((
            "call_async, current-thread runtime",
            Box::new(move || {
                handle.block_on(async {
                    let started = Instant::now();
                    for _ in 0..CALLS {
                        tokio::task::yield_now().await;
                        std::hint::black_box(call_async(&mut raw, &request).await);
                    }
                    per_call(started.elapsed())
                })
            }),
        ));
    }
    {
        let mut raw = Some(multi.block_on(async_instance(&engine, &module)));
        let request = request.clone();
        let handle = multi.handle().clone();
        modes.push((
            "call_async, multi-thread worker",
            Box::new(move || {
                let mut moved = raw.take().expect("instance");
                let request = request.clone();
                let (back, ns) = handle
                    .block_on(handle.spawn(async move {
                        let started = Instant::now();
                        for _ in 0..CALLS {
                            tokio::task::yield_now().await;
                            std::hint::black_box(call_async(&mut moved, &request).await);
                        }
                        (moved, per_call(started.elapsed()))
                    }))
                    .expect("task");
                raw = Some(back);
                ns
            }),
        ));
    }
    {
        let plugin = plugin.clone();
        let request = request.clone();
        let handle = single.handle().clone();
        modes.push((
            "pool.handle_event, current-thread runtime",
            Box::new(move || {
                handle.block_on(async {
                    let started = Instant::now();
                    for _ in 0..CALLS {
                        tokio::task::yield_now().await;
                        std::hint::black_box(plugin.pool.handle_event(&request).await)
                            .expect("call");
                    }
                    per_call(started.elapsed())
                })
            }),
        ));
    }
    {
        let plugin = plugin.clone();
        let request = request.clone();
        let handle = multi.handle().clone();
        modes.push((
            "pool.handle_event, multi-thread worker",
            Box::new(move || {
                let plugin = plugin.clone();
                let request = request.clone();
                handle
                    .block_on(handle.spawn(async move {
                        let started = Instant::now();
                        for _ in 0..CALLS {
                            tokio::task::yield_now().await;
                            std::hint::black_box(plugin.pool.handle_event(&request).await)
                                .expect("call");
                        }
                        per_call(started.elapsed())
                    }))
                    .expect("task")
            }),
        ));
    }

    println!(
        "forward.wat, {}-byte request, {CALLS} calls per mode and round, {ROUNDS} rounds (modes alternate)",
        request.len()
    );
    // Warm-up: one short pass of every mode.
    let mut results: Vec<Vec<f64>> = modes.iter().map(|_| Vec::new()).collect();
    for round in 0..=ROUNDS {
        for (index, (_, run)) in modes.iter_mut().enumerate() {
            let ns = run();
            if round > 0 {
                results[index].push(ns);
            }
        }
    }
    for ((name, _), mut figures) in modes.iter().zip(results) {
        figures.sort_by(f64::total_cmp);
        let shown: Vec<String> = figures.iter().map(|ns| format!("{ns:.0}")).collect();
        println!(
            "{name:<50} median {:>6.0} ns/call  (rounds, sorted: {})",
            figures[figures.len() / 2],
            shown.join(" / ")
        );
    }
    stop.store(true, Ordering::Relaxed);
}
