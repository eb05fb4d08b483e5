//! The test-only imports of module `eventplug_test` (docs/abi.md, "Testing plugins"): the host
//! extension of the engine `eventplug test` runs plugins on. Production engines have none of them.

use super::{FixtureSet, TestRecord, TestState};
use eventplug_runtime::abi::{
    EffectKind, ImportSpec, InstanceState, TEST_MODULE, ValueKind, exports, import,
    read_guest_bytes, unpack_region,
};
use eventplug_runtime::engine::{CallError, HostExtension, InstanceLimits};
use eventplug_runtime::pipeline::{StepResult, encode_event, interpret_response};
use prost::Message;
use std::any::Any;
use std::sync::Arc;
use wasmtime::{AsContextMut, Caller, Extern, Linker, Memory, TypedFunc};

use ValueKind::I32;

/// The functions of `eventplug_test` and their signatures.
const TEST_IMPORTS: &[ImportSpec] = &[
    import(TEST_MODULE, "fixture_size", &[I32], &[I32]),
    import(TEST_MODULE, "fixture_read", &[I32, I32, I32], &[I32]),
    import(TEST_MODULE, "handle_event", &[I32, I32], &[I32]),
    import(TEST_MODULE, "result_size", &[], &[I32]),
    import(TEST_MODULE, "result_read", &[I32, I32], &[I32]),
    import(TEST_MODULE, "alerts_count", &[], &[I32]),
    import(TEST_MODULE, "alert_size", &[I32], &[I32]),
    import(TEST_MODULE, "alert_read", &[I32, I32, I32], &[I32]),
    import(TEST_MODULE, "api_requests_count", &[], &[I32]),
    import(TEST_MODULE, "api_request_kind", &[I32], &[I32]),
    import(TEST_MODULE, "api_request_size", &[I32], &[I32]),
    import(TEST_MODULE, "api_request_read", &[I32, I32, I32], &[I32]),
];

/// The test harness as an engine extension: serves `eventplug_test` over a project's fixtures.
pub struct TestHarness {
    fixtures: Arc<FixtureSet>,
}

impl TestHarness {
    /// A harness serving `fixtures`.
    pub fn new(fixtures: Arc<FixtureSet>) -> Self {
        Self { fixtures }
    }
}

impl HostExtension for TestHarness {
    fn imports(&self) -> &'static [ImportSpec] {
        TEST_IMPORTS
    }

    fn link(&self, linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
        define_test_imports(linker)
    }

    fn instance_state(&self, limits: InstanceLimits) -> Box<dyn Any + Send> {
        Box::new(TestState {
            fixtures: self.fixtures.clone(),
            record: TestRecord::default(),
            call_deadline_ticks: limits.call_deadline_ticks,
            max_output: limits.max_output,
        })
    }
}

fn test_state<'a>(caller: &'a HostCaller<'_>) -> wasmtime::Result<&'a TestState> {
    caller.data().extension::<TestState>().ok_or_else(|| {
        wasmtime::Error::msg("eventplug_test imports are only served by `eventplug test`")
    })
}

type HostCaller<'a> = Caller<'a, InstanceState>;

fn memory(caller: &mut HostCaller<'_>) -> wasmtime::Result<Memory> {
    match caller.get_export(exports::MEMORY) {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(wasmtime::Error::msg("the plugin exports no memory")),
    }
}

/// Copies up to `len` bytes of `bytes` to `ptr`; returns how many.
fn copy_out(
    caller: &mut HostCaller<'_>,
    bytes: &[u8],
    ptr: i32,
    len: i32,
) -> wasmtime::Result<i32> {
    let count = bytes.len().min(len.max(0) as usize);
    let memory = memory(caller)?;
    memory
        .write(&mut *caller, ptr as u32 as usize, &bytes[..count])
        .map_err(|_| {
            wasmtime::Error::msg(format!(
                "eventplug_test: {count} bytes at {ptr:#x} lie outside the plugin's memory"
            ))
        })?;
    Ok(count as i32)
}

fn size_of(bytes: Option<&[u8]>) -> i32 {
    bytes.map_or(-1, |b| i32::try_from(b.len()).unwrap_or(i32::MAX))
}

fn harness<'a>(caller: &'a mut HostCaller<'_>) -> wasmtime::Result<&'a mut TestRecord> {
    caller
        .data_mut()
        .extension_mut::<TestState>()
        .map(|t| &mut t.record)
        .ok_or_else(|| {
            wasmtime::Error::msg("eventplug_test imports are only served by `eventplug test`")
        })
}

fn fixture(caller: &mut HostCaller<'_>, id: i32) -> wasmtime::Result<Vec<u8>> {
    let test = test_state(caller)?;
    match test.fixtures.get(id) {
        Some(fixture) => Ok(fixture.json.clone()),
        None => Err(wasmtime::Error::msg(format!(
            "fixture {id} not found: the fixtures folder has {:?} (files named <id>-<name>.json)",
            test.fixtures.ids()
        ))),
    }
}

/// Runs the production path on `json` with the calling instance, and records the result.
fn handle_event(caller: &mut HostCaller<'_>, json: &[u8]) -> wasmtime::Result<i32> {
    let Ok(encoded) = encode_event(json) else {
        return Ok(-1);
    };
    let export = |caller: &mut HostCaller<'_>, name: &str| match caller.get_export(name) {
        Some(Extern::Func(func)) => Ok(func),
        _ => Err(wasmtime::Error::msg(format!(
            "the plugin does not export `{name}`"
        ))),
    };
    let alloc: TypedFunc<i32, i32> = export(caller, exports::ALLOC)?.typed(&*caller)?;
    let handle: TypedFunc<(i32, i32), i64> =
        export(caller, exports::HANDLE_EVENT)?.typed(&*caller)?;
    let len = i32::try_from(encoded.request.len())
        .map_err(|_| wasmtime::Error::msg("event too large"))?;
    let ptr = alloc.call(&mut *caller, len)?;
    let memory = memory(caller)?;
    memory
        .write(&mut *caller, ptr as u32 as usize, &encoded.request)
        .map_err(|_| {
            wasmtime::Error::msg(format!(
                "eventplug_alloc({len}) returned {ptr:#x}, which has no room"
            ))
        })?;
    let effects_before = caller.data().record().effects.len();
    // Each handled event runs as in production: its own deadline and memory-cap state.
    let (deadline, max_output) = {
        let test = test_state(caller)?;
        (test.call_deadline_ticks, test.max_output)
    };
    caller.data_mut().reset_memory_cap();
    caller.as_context_mut().set_epoch_deadline(deadline);
    let packed = handle.call(&mut *caller, (ptr, len))?;
    let (out_ptr, out_len) = unpack_region(packed);
    let response = if u64::from(out_len) > max_output {
        Err(CallError::BadOutput(format!(
            "the response is {out_len} bytes, over the limit of {max_output} bytes"
        )))
    } else {
        read_guest_bytes(&memory, &*caller, out_ptr, out_len, "response")
            .map_err(CallError::BadOutput)
    };
    let effects: Vec<EffectKind> = caller
        .data_mut()
        .take_effects_from(effects_before)
        .into_iter()
        .map(|e| e.kind)
        .collect();
    let (code, result) = match response.and_then(|response| interpret_response(&response, json)) {
        Ok(decision) => match decision.result {
            StepResult::Modified(_) => (1, decision.edited.unwrap_or_default()),
            StepResult::Skipped => (2, Vec::new()),
            _ => (0, json.to_vec()),
        },
        Err(error) => (3, error.to_string().into_bytes()),
    };
    let record = harness(caller)?;
    record.last_result = result;
    if code != 3 {
        for effect in effects {
            match effect {
                EffectKind::Alert(alert) => record.alerts.push(alert.encode_to_vec()),
                EffectKind::CreateLock(lock) => record.api_requests.push((1, lock.encode_to_vec())),
                EffectKind::DeleteLock(lock) => record.api_requests.push((2, lock.encode_to_vec())),
            }
        }
    }
    Ok(code)
}

/// Defines the test-only imports in `linker`.
fn define_test_imports(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        TEST_MODULE,
        "fixture_size",
        |mut caller: HostCaller<'_>, id: i32| -> wasmtime::Result<i32> {
            Ok(size_of(Some(&fixture(&mut caller, id)?)))
        },
    )?;
    linker.func_wrap(
        TEST_MODULE,
        "fixture_read",
        |mut caller: HostCaller<'_>, id: i32, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let json = fixture(&mut caller, id)?;
            copy_out(&mut caller, &json, ptr, len)
        },
    )?;
    linker.func_wrap(
        TEST_MODULE,
        "handle_event",
        |mut caller: HostCaller<'_>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let memory = memory(&mut caller)?;
            let json = read_guest_bytes(
                &memory,
                &caller,
                ptr as u32,
                len as u32,
                "eventplug_test.handle_event",
            )
            .map_err(wasmtime::Error::msg)?;
            handle_event(&mut caller, &json)
        },
    )?;
    linker.func_wrap(
        TEST_MODULE,
        "result_size",
        |mut caller: HostCaller<'_>| -> wasmtime::Result<i32> {
            Ok(size_of(Some(&harness(&mut caller)?.last_result)))
        },
    )?;
    linker.func_wrap(
        TEST_MODULE,
        "result_read",
        |mut caller: HostCaller<'_>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let result = harness(&mut caller)?.last_result.clone();
            copy_out(&mut caller, &result, ptr, len)
        },
    )?;
    linker.func_wrap(
        TEST_MODULE,
        "alerts_count",
        |mut caller: HostCaller<'_>| -> wasmtime::Result<i32> {
            Ok(harness(&mut caller)?.alerts.len() as i32)
        },
    )?;
    linker.func_wrap(
        TEST_MODULE,
        "alert_size",
        |mut caller: HostCaller<'_>, index: i32| -> wasmtime::Result<i32> {
            let record = harness(&mut caller)?;
            Ok(size_of(
                usize::try_from(index)
                    .ok()
                    .and_then(|i| record.alerts.get(i))
                    .map(Vec::as_slice),
            ))
        },
    )?;
    linker.func_wrap(
        TEST_MODULE,
        "alert_read",
        |mut caller: HostCaller<'_>, index: i32, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let record = harness(&mut caller)?;
            let bytes = usize::try_from(index)
                .ok()
                .and_then(|i| record.alerts.get(i))
                .cloned()
                .unwrap_or_default();
            copy_out(&mut caller, &bytes, ptr, len)
        },
    )?;
    linker.func_wrap(
        TEST_MODULE,
        "api_requests_count",
        |mut caller: HostCaller<'_>| -> wasmtime::Result<i32> {
            Ok(harness(&mut caller)?.api_requests.len() as i32)
        },
    )?;
    linker.func_wrap(
        TEST_MODULE,
        "api_request_kind",
        |mut caller: HostCaller<'_>, index: i32| -> wasmtime::Result<i32> {
            let record = harness(&mut caller)?;
            Ok(usize::try_from(index)
                .ok()
                .and_then(|i| record.api_requests.get(i))
                .map_or(-1, |(kind, _)| *kind))
        },
    )?;
    linker.func_wrap(
        TEST_MODULE,
        "api_request_size",
        |mut caller: HostCaller<'_>, index: i32| -> wasmtime::Result<i32> {
            let record = harness(&mut caller)?;
            Ok(size_of(
                usize::try_from(index)
                    .ok()
                    .and_then(|i| record.api_requests.get(i))
                    .map(|(_, b)| b.as_slice()),
            ))
        },
    )?;
    linker.func_wrap(
        TEST_MODULE,
        "api_request_read",
        |mut caller: HostCaller<'_>, index: i32, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let record = harness(&mut caller)?;
            let bytes = usize::try_from(index)
                .ok()
                .and_then(|i| record.api_requests.get(i))
                .map(|(_, b)| b.clone())
                .unwrap_or_default();
            copy_out(&mut caller, &bytes, ptr, len)
        },
    )?;
    Ok(())
}
