//! Limits that really hold: timeouts interrupt running wasm, memory caps refuse growth, failed
//! instances are replaced, the pool bounds concurrency and waiting (without a thread per waiter).

mod common;

use common::{Gate, Harness, login_event, plugin_wat, request_for};
use eventplug_runtime::engine::CallError;
use eventplug_runtime::pipeline::LoadedPlugin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// handle_event loops forever when the request is longer than `threshold` bytes, else forwards.
fn loop_when_longer_than(threshold: usize) -> String {
    plugin_wat(
        "",
        &format!(
            "(if (i32.gt_u (local.get $len) (i32.const {threshold})) (then (loop $forever (br $forever)))) (i64.const 0)"
        ),
        "",
    )
}

#[tokio::test]
async fn an_infinite_loop_times_out_and_the_pool_keeps_serving() {
    let harness = Harness::new();
    let mut settings = harness.settings("looper", &loop_when_longer_than(200));
    settings.limits.timeout = Duration::from_millis(100).into();
    settings.limits.concurrency = 1;
    let plugin = harness.load(&settings);
    let looping = request_for(&login_event("loop-1"));
    assert!(looping.len() > 200);

    let started = Instant::now();
    let error = plugin
        .pool
        .handle_event(&looping)
        .await
        .expect_err("must time out");
    let took = started.elapsed();
    assert_eq!(error, CallError::Timeout(Duration::from_millis(100)));
    assert!(
        took >= Duration::from_millis(100),
        "returned before the timeout: {took:?}"
    );
    // Interrupted, not left to run: a bound a loaded machine keeps (how close to the timeout the
    // interruption lands is for a benchmark to measure).
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} to interrupt a 100 ms timeout"
    );

    // The timed-out instance is thrown away; the next call gets a fresh one and succeeds.
    let short = request_for(br#"{"event":"x"}"#);
    assert!(short.len() <= 200);
    let output = plugin
        .pool
        .handle_event(&short)
        .await
        .expect("pool keeps serving");
    assert!(output.response.is_empty());
    assert_eq!(plugin.pool.stats().discarded.load(Ordering::Relaxed), 1);
    assert_eq!(plugin.pool.stats().created.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn growing_past_the_memory_limit_is_an_error_and_the_instance_is_replaced() {
    let harness = Harness::new();
    // Grows by 64 pages (4 MiB) per call and traps when growth is refused.
    let wat = plugin_wat(
        "",
        "(if (i32.eq (memory.grow (i32.const 64)) (i32.const -1)) (then unreachable)) (i64.const 0)",
        "",
    );
    let mut settings = harness.settings("grower", &wat);
    settings.limits.memory_limit = eventplug_contract::ByteSize(10 << 20);
    settings.limits.concurrency = 1;
    let plugin = harness.load(&settings);
    let request = request_for(&login_event("m"));
    // 1 page + input page + 4 MiB fits; the third growth passes 10 MiB.
    plugin
        .pool
        .handle_event(&request)
        .await
        .expect("first growth fits");
    plugin
        .pool
        .handle_event(&request)
        .await
        .expect("second growth fits");
    let error = plugin
        .pool
        .handle_event(&request)
        .await
        .expect_err("third growth passes the limit");
    assert_eq!(error, CallError::MemoryLimit { limit: 10 << 20 });
    // A fresh instance starts small again.
    plugin
        .pool
        .handle_event(&request)
        .await
        .expect("replacement instance serves");
    assert_eq!(plugin.pool.stats().discarded.load(Ordering::Relaxed), 1);
}

#[test]
fn a_module_whose_initial_memory_is_over_the_limit_does_not_load() {
    let harness = Harness::new();
    let wat = plugin_wat("", "(i64.const 0)", "").replace(
        r#"(memory (export "memory") 1)"#,
        r#"(memory (export "memory") 400)"#,
    );
    let mut settings = harness.settings("fat", &wat);
    settings.limits.memory_limit = eventplug_contract::ByteSize(16 << 20);
    let err = harness.load_error(&settings);
    assert!(
        err.contains("exceeded its memory limit of 16777216 bytes"),
        "{err}"
    );
}

#[tokio::test]
async fn a_trapping_instance_is_discarded_and_replaced_while_others_serve() {
    let harness = Harness::new();
    // Traps on long requests, forwards short ones; keeps a call counter in a global.
    let wat = plugin_wat(
        "",
        "(global.set $calls (i32.add (global.get $calls) (i32.const 1)))
         (if (i32.gt_u (local.get $len) (i32.const 200)) (then unreachable)) (i64.const 0)",
        "(global $calls (mut i32) (i32.const 0))",
    );
    let settings = harness.settings("trapper", &wat);
    let plugin = harness.load(&settings);
    let bad = request_for(&login_event("t"));
    let good = request_for(br#"{"event":"ok"}"#);
    for _ in 0..5 {
        let error = plugin.pool.handle_event(&bad).await.expect_err("traps");
        assert!(
            matches!(&error, CallError::Trap(message) if message.contains("unreachable")),
            "{error}"
        );
        plugin
            .pool
            .handle_event(&good)
            .await
            .expect("serves after a trap");
    }
    assert_eq!(plugin.pool.stats().discarded.load(Ordering::Relaxed), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tasks_share_fewer_instances_and_no_instance_runs_two_calls_at_once() {
    let harness = Harness::new();
    // A busy flag in the instance's own global: a second call entering while one runs would trap.
    let wat = plugin_wat(
        "",
        "(local $i i32)
         (if (global.get $busy) (then unreachable))
         (global.set $busy (i32.const 1))
         (loop $spin (local.set $i (i32.add (local.get $i) (i32.const 1))) (br_if $spin (i32.lt_u (local.get $i) (i32.const 2000000))))
         (global.set $busy (i32.const 0))
         (i64.const 0)",
        "(global $busy (mut i32) (i32.const 0))",
    );
    let mut settings = harness.settings("spinner", &wat);
    settings.limits.concurrency = 3;
    settings.limits.timeout = Duration::from_secs(5).into();
    settings.limits.max_wait = Duration::from_secs(30).into();
    let plugin = harness.load(&settings);
    let request = Arc::new(request_for(&login_event("c")));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let plugin = plugin.clone();
            let request = request.clone();
            tokio::spawn(async move { plugin.pool.handle_event(&request).await.map(|_| ()) })
        })
        .collect();
    for task in tasks {
        task.await.expect("task finished").expect("call succeeded");
    }
    let stats = plugin.pool.stats();
    assert_eq!(stats.calls.load(Ordering::Relaxed), 16);
    assert!(stats.max_in_use.load(Ordering::Relaxed) <= 3);
    assert_eq!(stats.in_use.load(Ordering::Relaxed), 0);
    assert!(
        stats.created.load(Ordering::Relaxed) <= 3,
        "created {} instances",
        stats.created.load(Ordering::Relaxed)
    );
    assert_eq!(stats.discarded.load(Ordering::Relaxed), 0);
}

/// A plugin of one instance whose first call stops at the gate, holding that instance.
fn held_plugin(harness: &Harness, max_wait: Duration) -> Arc<LoadedPlugin> {
    let wat = plugin_wat(Gate::IMPORT, "(call $hold) (i64.const 0)", "");
    let mut settings = harness.settings("held", &wat);
    settings.limits.concurrency = 1;
    settings.limits.timeout = Duration::from_secs(60).into();
    settings.limits.max_wait = max_wait.into();
    harness.load(&settings)
}

/// Starts a call of `plugin` and returns once the gate holds it (and with it the only instance).
async fn hold_the_only_instance(
    plugin: &Arc<LoadedPlugin>,
    gate: &Gate,
) -> tokio::task::JoinHandle<Result<(), CallError>> {
    let holder = {
        let plugin = plugin.clone();
        tokio::spawn(async move {
            let request = request_for(&login_event("held"));
            plugin.pool.handle_event(&request).await.map(|_| ())
        })
    };
    gate.entered().await;
    holder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_waited_for_an_instance_says_how_long() {
    let (harness, gate) = Harness::with_gate();
    let _open_at_the_end = gate.open_on_drop();
    let plugin = held_plugin(&harness, Duration::from_secs(30));
    let holder = hold_the_only_instance(&plugin, &gate).await;
    let waiter = {
        let plugin = plugin.clone();
        tokio::spawn(async move {
            plugin
                .pool
                .handle_event(&request_for(br#"{"event":"x"}"#))
                .await
        })
    };
    // Opened only once the second call is seen waiting (the pool counts its waiters).
    let deadline = Instant::now() + Duration::from_secs(10);
    while plugin.pool.stats().waiting.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the second call never waited");
        tokio::task::yield_now().await;
    }
    gate.open();
    holder
        .await
        .expect("joined")
        .expect("the held call completes");
    let output = waiter
        .await
        .expect("joined")
        .expect("the waiting call completes");
    assert!(
        output.record.waited > Duration::ZERO,
        "{:?}",
        output.record.waited
    );
    assert_eq!(plugin.pool.stats().waiting.load(Ordering::Relaxed), 0);
    let alone = plugin
        .pool
        .handle_event(&request_for(br#"{"event":"x"}"#))
        .await
        .expect("an uncontended call");
    assert_eq!(alone.record.waited, Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_an_instance_is_bounded() {
    let (harness, gate) = Harness::with_gate();
    let _open_at_the_end = gate.open_on_drop();
    let max_wait = Duration::from_millis(50);
    let plugin = held_plugin(&harness, max_wait);
    let holder = hold_the_only_instance(&plugin, &gate).await;
    let error = plugin
        .pool
        .handle_event(&request_for(br#"{"event":"x"}"#))
        .await
        .expect_err("busy");
    assert!(
        matches!(error, CallError::Busy { waited, concurrency: 1 } if waited >= max_wait),
        "{error}"
    );
    assert!(error.to_string().contains("raise concurrency or maxWait"));
    gate.open();
    holder
        .await
        .expect("joined")
        .expect("the held call completes");
    // With the instance free again, the next call gets it.
    plugin
        .pool
        .handle_event(&request_for(br#"{"event":"x"}"#))
        .await
        .expect("served");
    let stats = plugin.pool.stats();
    assert_eq!(
        stats.calls.load(Ordering::Relaxed),
        2,
        "the busy call never ran"
    );
    assert_eq!(stats.max_in_use.load(Ordering::Relaxed), 1);
}

/// The threads of this process now (`Threads:` in /proc/self/status).
fn threads() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|line| line.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .expect("a Threads line")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_hundred_callers_of_one_busy_instance_are_busy_after_max_wait_without_a_thread_each() {
    let (harness, gate) = Harness::with_gate();
    let _open_at_the_end = gate.open_on_drop();
    let max_wait = Duration::from_millis(500);
    let plugin = held_plugin(&harness, max_wait);
    let holder = hold_the_only_instance(&plugin, &gate).await;
    let threads_before = threads();

    let request = Arc::new(request_for(br#"{"event":"x"}"#));
    let callers: Vec<_> = (0..600)
        .map(|_| {
            let (plugin, request) = (plugin.clone(), request.clone());
            let sent = Instant::now();
            tokio::spawn(async move {
                let result = plugin.pool.handle_event(&request).await.map(|_| ());
                (result, sent.elapsed())
            })
        })
        .collect();
    for caller in callers {
        let (result, took) = caller.await.expect("caller finished");
        match result {
            Err(CallError::Busy {
                waited,
                concurrency: 1,
            }) => assert!(waited >= max_wait, "busy after {waited:?}"),
            other => panic!("expected busy, got {other:?}"),
        }
        assert!(
            took < max_wait + Duration::from_secs(2),
            "a caller got its answer after {took:?}; maxWait is {max_wait:?}"
        );
    }
    // A thread started for a waiter would still be alive now (Tokio keeps an idle blocking-pool
    // thread for 10 s), so this count includes any that came and went.
    let threads_after = threads();
    assert!(
        threads_after < 64,
        "{threads_after} threads after 600 waiters ({threads_before} before them)"
    );

    gate.open();
    holder
        .await
        .expect("joined")
        .expect("the held call completes");
    let stats = plugin.pool.stats();
    assert_eq!(stats.calls.load(Ordering::Relaxed), 1, "no waiter ran");
    assert_eq!(stats.max_in_use.load(Ordering::Relaxed), 1);
    assert_eq!(stats.in_use.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn responses_outside_memory_or_over_the_limit_are_bad_output() {
    let harness = Harness::new();
    let outside = plugin_wat("", "(i64.const 0x00fffff000000100)", "");
    let plugin = harness.load(&harness.settings("outside", &outside));
    let error = plugin
        .pool
        .handle_event(&request_for(br#"{"event":"x"}"#))
        .await
        .expect_err("outside");
    assert!(
        matches!(&error, CallError::BadOutput(m) if m.contains("outside the plugin's memory")),
        "{error}"
    );

    let mut settings = harness.settings(
        "huge",
        &plugin_wat("", "(i64.const 0x0000010000100000)", ""),
    );
    settings.limits.max_output = eventplug_contract::ByteSize(1024);
    let plugin = harness.load(&settings);
    let error = plugin
        .pool
        .handle_event(&request_for(br#"{"event":"x"}"#))
        .await
        .expect_err("too large");
    assert!(
        matches!(&error, CallError::BadOutput(m) if m.contains("over the limit of 1024 bytes")),
        "{error}"
    );
}

#[tokio::test]
async fn assemblyscript_abort_traps_with_its_message_and_location() {
    let harness = Harness::new();
    // AssemblyScript strings: UTF-16LE with the byte length in the u32 before them.
    fn as_string(text: &str) -> String {
        let units: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
        let mut bytes = (units.len() as u32).to_le_bytes().to_vec();
        bytes.extend(units);
        common::wat_bytes(&bytes)
    }
    let wat = plugin_wat(
        r#"(import "env" "abort" (func $abort (param i32 i32 i32 i32)))"#,
        "(call $abort (i32.const 1028) (i32.const 2052) (i32.const 3) (i32.const 5)) (i64.const 0)",
        &format!(
            r#"(data (i32.const 1024) "{}") (data (i32.const 2048) "{}")"#,
            as_string("boom"),
            as_string("assembly/index.ts")
        ),
    );
    let plugin = harness.load(&harness.settings("aborter", &wat));
    let error = plugin
        .pool
        .handle_event(&request_for(br#"{"event":"x"}"#))
        .await
        .expect_err("aborts");
    assert!(
        matches!(&error, CallError::Trap(m) if m.contains("boom (at assembly/index.ts:3:5)")),
        "{error}"
    );
}

#[tokio::test]
async fn an_instance_whose_response_is_a_bad_output_is_replaced() {
    let harness = Harness::new();
    // Answers with bytes that are not a HandleEventResponse.
    let wat = plugin_wat(
        "",
        &common::region(3),
        &format!(r#"(data (i32.const {}) "\ff\ff\ff")"#, common::RESPONSE_AT),
    );
    let plugin = harness.load(&harness.settings("garbage", &wat));
    let request = request_for(&login_event("g"));
    for _ in 0..3 {
        let error = plugin
            .pool
            .handle_event_checked(&request, |response| {
                eventplug_runtime::pipeline::interpret_response(response, b"{}")
            })
            .await
            .expect_err("bad output");
        assert!(matches!(error, CallError::BadOutput(_)), "{error}");
    }
    assert_eq!(plugin.pool.stats().discarded.load(Ordering::Relaxed), 3);
    // Every call had a fresh instance: the one made at load, then two replacements.
    assert_eq!(plugin.pool.stats().created.load(Ordering::Relaxed), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_call_that_runs_to_its_timeout_gives_its_worker_back_at_every_tick() {
    let (harness, gate) = Harness::with_gate();
    let _open_at_the_end = gate.open_on_drop();
    // Stops at the gate first, so the test knows the call has started, then loops forever.
    let wat = plugin_wat(
        Gate::IMPORT,
        "(call $hold) (loop $forever (br $forever)) (i64.const 0)",
        "",
    );
    let mut settings = harness.settings("looper", &wat);
    settings.limits.timeout = Duration::from_secs(2).into();
    let plugin = harness.load(&settings);
    let looping = {
        let plugin = plugin.clone();
        tokio::spawn(async move {
            let request = request_for(&login_event("loop"));
            plugin.pool.handle_event(&request).await.map(|_| ())
        })
    };
    gate.entered().await;
    gate.open();
    // The runtime's only worker is running the loop; another task gets it at the next tick.
    tokio::spawn(async {})
        .await
        .expect("a task ran beside the loop");
    assert!(!looping.is_finished(), "the loop ended before its timeout");
    assert_eq!(
        looping.await.expect("joined"),
        Err(CallError::Timeout(Duration::from_secs(2)))
    );
    assert_eq!(plugin.pool.stats().discarded.load(Ordering::Relaxed), 1);
}
