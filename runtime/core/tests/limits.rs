//! Limits that really hold: timeouts interrupt running wasm, memory caps refuse growth, failed
//! instances are replaced, the pool bounds concurrency and waiting.

mod common;

use common::{
    Gate, Harness, TAKE_TOKEN_IMPORT, gated_when_longer_than, login_event, plugin_wat, request_for,
};
use eventplug_runtime::engine::CallError;
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

#[test]
fn an_infinite_loop_times_out_and_the_pool_keeps_serving() {
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
        .expect("pool keeps serving");
    assert!(output.response.is_empty());
    assert_eq!(plugin.pool.stats().discarded.load(Ordering::Relaxed), 1);
    assert_eq!(plugin.pool.stats().created.load(Ordering::Relaxed), 2);
}

#[test]
fn growing_past_the_memory_limit_is_an_error_and_the_instance_is_replaced() {
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
        .expect("first growth fits");
    plugin
        .pool
        .handle_event(&request)
        .expect("second growth fits");
    let error = plugin
        .pool
        .handle_event(&request)
        .expect_err("third growth passes the limit");
    assert_eq!(error, CallError::MemoryLimit { limit: 10 << 20 });
    // A fresh instance starts small again.
    plugin
        .pool
        .handle_event(&request)
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

#[test]
fn a_trapping_instance_is_discarded_and_replaced_while_others_serve() {
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
        let error = plugin.pool.handle_event(&bad).expect_err("traps");
        assert!(
            matches!(&error, CallError::Trap(message) if message.contains("unreachable")),
            "{error}"
        );
        plugin
            .pool
            .handle_event(&good)
            .expect("serves after a trap");
    }
    assert_eq!(plugin.pool.stats().discarded.load(Ordering::Relaxed), 5);
}

#[test]
fn many_tasks_share_fewer_instances_and_no_instance_runs_two_calls_at_once() {
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
            std::thread::spawn(move || plugin.pool.handle_event(&request).map(|_| ()))
        })
        .collect();
    for task in tasks {
        task.join().expect("task finished").expect("call succeeded");
    }
    let stats = plugin.pool.stats();
    assert_eq!(stats.calls.load(Ordering::Relaxed), 16);
    assert!(stats.max_in_use.load(Ordering::Relaxed) <= 3);
    assert!(
        stats.created.load(Ordering::Relaxed) <= 3,
        "created {} instances",
        stats.created.load(Ordering::Relaxed)
    );
    assert_eq!(stats.discarded.load(Ordering::Relaxed), 0);
}

#[test]
fn waiting_for_an_instance_is_bounded() {
    let harness = Harness::new();
    // The long request waits in the gate, holding the only instance until the test opens it.
    let gate = Arc::new(Gate::default());
    let wat = plugin_wat(TAKE_TOKEN_IMPORT, &gated_when_longer_than(200), "");
    let mut settings = harness.settings("held", &wat);
    settings.limits.concurrency = 1;
    settings.limits.timeout = Duration::from_secs(30).into();
    settings.limits.max_wait = Duration::from_millis(50).into();
    let plugin = harness.load_with_tokens(&settings, gate.clone());
    let blocker = {
        let plugin = plugin.clone();
        std::thread::spawn(move || plugin.pool.handle_event(&request_for(&login_event("slow"))))
    };
    gate.wait_entered(1);
    let error = plugin
        .pool
        .handle_event(&request_for(br#"{"event":"x"}"#))
        .expect_err("busy");
    assert!(
        matches!(error, CallError::Busy { concurrency: 1, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("raise concurrency or maxWait"));
    gate.open();
    blocker
        .join()
        .expect("joined")
        .expect("the held call completes once let through");
    // The instance it held serves again.
    plugin
        .pool
        .handle_event(&request_for(br#"{"event":"x"}"#))
        .expect("a free instance serves");
}

#[test]
fn responses_outside_memory_or_over_the_limit_are_bad_output() {
    let harness = Harness::new();
    let outside = plugin_wat("", "(i64.const 0x00fffff000000100)", "");
    let plugin = harness.load(&harness.settings("outside", &outside));
    let error = plugin
        .pool
        .handle_event(&request_for(br#"{"event":"x"}"#))
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
        .expect_err("too large");
    assert!(
        matches!(&error, CallError::BadOutput(m) if m.contains("over the limit of 1024 bytes")),
        "{error}"
    );
}

#[test]
fn assemblyscript_abort_traps_with_its_message_and_location() {
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
        .expect_err("aborts");
    assert!(
        matches!(&error, CallError::Trap(m) if m.contains("boom (at assembly/index.ts:3:5)")),
        "{error}"
    );
}

#[test]
fn an_instance_whose_response_is_a_bad_output_is_replaced() {
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
            .expect_err("bad output");
        assert!(matches!(error, CallError::BadOutput(_)), "{error}");
    }
    assert_eq!(plugin.pool.stats().discarded.load(Ordering::Relaxed), 3);
    // Every call had a fresh instance: the one made at load, then two replacements.
    assert_eq!(plugin.pool.stats().created.load(Ordering::Relaxed), 3);
}
