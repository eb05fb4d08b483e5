//! The host side of every import, and the per-instance state those functions work on.

use super::effects::{Effect, EffectKind, LogLevel, PluginLog};
use super::memory::{read_assemblyscript_string, read_guest_bytes};
use super::{HOST_MODULE, MemoryCap, caps};
use crate::store::TokenStore;
use prost::Message;
use std::any::Any;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use wasmtime::{Caller, Extern, Linker, Memory};

/// What every instance of one plugin shares: its name and the services its imports use.
pub struct PluginContext {
    /// The plugin's name (namespaces its tokens, labels its effects and logs).
    pub name: String,
    /// Where `store_take_token` / `store_release_tokens` go.
    pub tokens: Arc<dyn TokenStore>,
    /// Log lines one call may write.
    pub max_log_lines_per_call: u32,
}

/// What one call declared besides its verdict.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CallRecord {
    /// Effects, in the order declared.
    pub effects: Vec<Effect>,
    /// Log lines, in the order written.
    pub logs: Vec<PluginLog>,
    /// Log lines dropped by the per-call limit.
    pub dropped_logs: u32,
    /// Effects refused by the per-call limit or as malformed.
    pub refused_effects: u32,
    /// How long the call waited for a free instance (set by the pool).
    pub waited: std::time::Duration,
}

/// The state of one instance's store.
pub struct InstanceState {
    pub(crate) memory_cap: MemoryCap,
    pub(crate) context: Arc<PluginContext>,
    pub(crate) record: CallRecord,
    /// The state of the engine's host extension for this instance, if the engine has one.
    extension: Option<Box<dyn Any + Send>>,
}

impl InstanceState {
    pub(crate) fn new(
        context: Arc<PluginContext>,
        memory_limit: usize,
        extension: Option<Box<dyn Any + Send>>,
    ) -> Self {
        Self {
            memory_cap: MemoryCap::new(memory_limit),
            context,
            record: CallRecord::default(),
            extension,
        }
    }

    /// The host extension's state, when it is a `T`.
    pub fn extension<T: 'static>(&self) -> Option<&T> {
        self.extension.as_ref()?.downcast_ref()
    }

    /// The host extension's state, when it is a `T`, to change.
    pub fn extension_mut<T: 'static>(&mut self) -> Option<&mut T> {
        self.extension.as_mut()?.downcast_mut()
    }

    /// What the current call has declared so far.
    pub fn record(&self) -> &CallRecord {
        &self.record
    }

    /// Takes the effects declared since the first `from` of the current call.
    pub fn take_effects_from(&mut self, from: usize) -> Vec<Effect> {
        let from = from.min(self.record.effects.len());
        self.record.effects.drain(from..).collect()
    }

    /// Forgets memory-cap refusals, as at the start of a call.
    pub fn reset_memory_cap(&mut self) {
        self.memory_cap.reset();
    }

    fn log(&mut self, level: LogLevel, mut message: String) {
        if self.record.logs.len() >= self.context.max_log_lines_per_call as usize {
            self.record.dropped_logs += 1;
            return;
        }
        if message.len() > caps::MAX_LOG_LINE_BYTES {
            let mut cut = caps::MAX_LOG_LINE_BYTES;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
            message.push('…');
        }
        self.record.logs.push(PluginLog { level, message });
    }

    fn declare(&mut self, kind: EffectKind) -> i32 {
        if self.record.effects.len() >= caps::MAX_EFFECTS_PER_CALL {
            self.record.refused_effects += 1;
            return -2;
        }
        let plugin = self.context.name.clone();
        self.record.effects.push(Effect { plugin, kind });
        0
    }
}

type HostCaller<'a> = Caller<'a, InstanceState>;

fn memory(caller: &mut HostCaller<'_>) -> wasmtime::Result<Memory> {
    match caller.get_export(super::exports::MEMORY) {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(wasmtime::Error::msg("the plugin exports no memory")),
    }
}

fn read(caller: &mut HostCaller<'_>, ptr: i32, len: i32, what: &str) -> wasmtime::Result<Vec<u8>> {
    let memory = memory(caller)?;
    read_guest_bytes(&memory, &*caller, ptr as u32, len as u32, what).map_err(wasmtime::Error::msg)
}

/// Reads an effect message, or returns -1 to the plugin when it is too long or malformed.
fn declare_effect<M: Message + Default>(
    caller: &mut HostCaller<'_>,
    ptr: i32,
    len: i32,
    what: &str,
    wrap: fn(M) -> EffectKind,
) -> wasmtime::Result<i32> {
    if len < 0 || len as usize > caps::MAX_EFFECT_BYTES {
        caller.data_mut().record.refused_effects += 1;
        return Ok(-1);
    }
    let bytes = read(caller, ptr, len, what)?;
    match M::decode(bytes.as_slice()) {
        Ok(message) => Ok(caller.data_mut().declare(wrap(message))),
        Err(_) => {
            caller.data_mut().record.refused_effects += 1;
            Ok(-1)
        }
    }
}

fn scope(
    caller: &mut HostCaller<'_>,
    ptr: i32,
    len: i32,
    what: &str,
) -> wasmtime::Result<Option<String>> {
    if len < 0 || len as usize > caps::MAX_SCOPE_BYTES {
        return Ok(None);
    }
    // Bytes outside memory trap (a broken pointer); bytes that are not UTF-8 are an invalid
    // scope (-1), as the ABI says.
    let bytes = read(caller, ptr, len, what)?;
    Ok(String::from_utf8(bytes).ok())
}

/// Defines every host function of the ABI in `linker`.
pub fn define_imports(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        HOST_MODULE,
        "log",
        |mut caller: HostCaller<'_>, level: i32, ptr: i32, len: i32| -> wasmtime::Result<()> {
            let len = len.clamp(0, caps::MAX_LOG_LINE_BYTES as i32 + 4);
            let bytes = read(&mut caller, ptr, len, "eventplug.log")?;
            let message = String::from_utf8_lossy(&bytes).into_owned();
            caller.data_mut().log(LogLevel::from_abi(level), message);
            Ok(())
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "store_take_token",
        |mut caller: HostCaller<'_>,
         ptr: i32,
         len: i32,
         ttl_seconds: i32|
         -> wasmtime::Result<i32> {
            let Some(scope) = scope(&mut caller, ptr, len, "eventplug.store_take_token")? else {
                return Ok(-1);
            };
            if ttl_seconds <= 0 {
                return Ok(-1);
            }
            let context = caller.data().context.clone();
            match context.tokens.take_token(
                &context.name,
                &scope,
                (ttl_seconds as u32).min(crate::store::MAX_TTL_SECONDS),
            ) {
                Ok(count) => Ok(i32::try_from(count).unwrap_or(i32::MAX)),
                Err(e) => {
                    caller.data_mut().log(
                        LogLevel::Error,
                        format!("store_take_token({scope:?}) failed: {e}"),
                    );
                    Ok(-3)
                }
            }
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "store_release_tokens",
        |mut caller: HostCaller<'_>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let Some(scope) = scope(&mut caller, ptr, len, "eventplug.store_release_tokens")?
            else {
                return Ok(-1);
            };
            let context = caller.data().context.clone();
            match context.tokens.release_tokens(&context.name, &scope) {
                Ok(count) => Ok(i32::try_from(count).unwrap_or(i32::MAX)),
                Err(e) => {
                    caller.data_mut().log(
                        LogLevel::Error,
                        format!("store_release_tokens({scope:?}) failed: {e}"),
                    );
                    Ok(-3)
                }
            }
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "alert",
        |mut caller: HostCaller<'_>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            declare_effect(&mut caller, ptr, len, "eventplug.alert", |m| {
                EffectKind::Alert(Box::new(m))
            })
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "lock_create",
        |mut caller: HostCaller<'_>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            declare_effect(&mut caller, ptr, len, "eventplug.lock_create", |m| {
                EffectKind::CreateLock(Box::new(m))
            })
        },
    )?;
    linker.func_wrap(
        HOST_MODULE,
        "lock_delete",
        |mut caller: HostCaller<'_>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            declare_effect(
                &mut caller,
                ptr,
                len,
                "eventplug.lock_delete",
                EffectKind::DeleteLock,
            )
        },
    )?;
    define_assemblyscript_env(linker)
}

/// AssemblyScript's `env` imports, served as AssemblyScript defines them.
fn define_assemblyscript_env(linker: &mut Linker<InstanceState>) -> wasmtime::Result<()> {
    linker.func_wrap(
        "env",
        "abort",
        |mut caller: HostCaller<'_>,
         message: i32,
         file: i32,
         line: i32,
         column: i32|
         -> wasmtime::Result<()> {
            let memory = memory(&mut caller)?;
            // Capped like a log line: the message becomes an error body and a log line.
            let text = |ptr: i32, max: usize| {
                read_assemblyscript_string(&memory, &caller, ptr as u32, max as u32)
                    .unwrap_or_else(|_| "?".to_string())
            };
            let message = if message == 0 {
                "abort".to_string()
            } else {
                text(message, caps::MAX_LOG_LINE_BYTES)
            };
            let file = if file == 0 {
                "?".to_string()
            } else {
                text(file, caps::MAX_FILE_NAME_BYTES)
            };
            Err(wasmtime::Error::msg(format!(
                "{message} (at {file}:{line}:{column})"
            )))
        },
    )?;
    linker.func_wrap(
        "env",
        "trace",
        |mut caller: HostCaller<'_>,
         message: i32,
         count: i32,
         a0: f64,
         a1: f64,
         a2: f64,
         a3: f64,
         a4: f64|
         -> wasmtime::Result<()> {
            let memory = memory(&mut caller)?;
            let mut line = read_assemblyscript_string(
                &memory,
                &caller,
                message as u32,
                caps::MAX_LOG_LINE_BYTES as u32,
            )
            .map_err(wasmtime::Error::msg)?;
            for value in [a0, a1, a2, a3, a4].iter().take(count.clamp(0, 5) as usize) {
                line.push_str(&format!(" {value}"));
            }
            caller.data_mut().log(LogLevel::Info, line);
            Ok(())
        },
    )?;
    linker.func_wrap("env", "seed", || -> f64 {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        (random >> 11) as f64
    })?;
    linker.func_wrap("env", "Date.now", || -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as f64)
            .unwrap_or(0.0)
    })?;
    Ok(())
}
