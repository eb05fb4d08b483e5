//! The plugin chain: one event's JSON in, its verdict out.

use super::envelope::{InputError, encode_event};
use super::outcome::{Outcome, Processed, Step, StepResult, Verdict};
use super::plugin::LoadedPlugin;
use super::response::interpret_response;
use super::selector::Selector;
use super::verdict_cache::{Lookup, VerdictCache};
use crate::abi::{Effect, PluginLog};
use crate::engine::CallError;
use eventplug_contract::{FailurePolicy, Mode};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Settings of the pipeline itself.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// The largest event accepted, in bytes.
    pub max_event_bytes: usize,
    /// Outcomes remembered for redeliveries (0 disables the verdict cache).
    pub verdict_cache_entries: usize,
    /// How long an outcome is remembered.
    pub verdict_cache_ttl: Duration,
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            // The sidecar's default `listen.maxBodyBytes`, so both paths refuse the same events.
            max_event_bytes: 8 << 20,
            verdict_cache_entries: 10_000,
            verdict_cache_ttl: Duration::from_secs(15 * 60),
        }
    }
}

struct ChainPlugin {
    plugin: Arc<LoadedPlugin>,
    selector: Selector,
}

/// Plugins in priority order, applied to events.
pub struct Pipeline {
    plugins: Vec<ChainPlugin>,
    cache: Arc<VerdictCache>,
    settings: PipelineSettings,
    /// The longest one run of the chain can take (each plugin: maxWait + 3 × timeout).
    longest_chain: Duration,
}

fn body_hash(body: &[u8]) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut hasher);
    hasher.finish()
}

impl Pipeline {
    /// A chain of `plugins`, ordered by priority (stable for equal priorities), with a verdict cache
    /// of its own.
    pub fn new(plugins: Vec<Arc<LoadedPlugin>>, settings: PipelineSettings) -> Self {
        let cache = Arc::new(VerdictCache::new(
            settings.verdict_cache_entries,
            settings.verdict_cache_ttl,
        ));
        Self::with_cache(plugins, settings, cache)
    }

    /// A chain sharing `cache` with others, so that a redelivery after the chain was replaced (a
    /// reload) still replays its first outcome. The cache's own bounds apply, not `settings`'.
    pub fn with_cache(
        plugins: Vec<Arc<LoadedPlugin>>,
        settings: PipelineSettings,
        cache: Arc<VerdictCache>,
    ) -> Self {
        let mut plugins: Vec<ChainPlugin> = plugins
            .into_iter()
            .map(|plugin| ChainPlugin {
                selector: Selector::new(&plugin.settings.events),
                plugin,
            })
            .collect();
        plugins.sort_by_key(|p| p.plugin.settings.priority);
        let longest_chain = plugins
            .iter()
            .map(|p| {
                p.plugin.pool.limits().max_wait.get() + p.plugin.pool.limits().timeout.get() * 3
            })
            .sum::<Duration>()
            + Duration::from_secs(1);
        Self {
            cache,
            plugins,
            settings,
            longest_chain,
        }
    }

    /// The plugins in the order they run.
    pub fn plugins(&self) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        self.plugins.iter().map(|p| &p.plugin)
    }

    /// Runs the chain on one event body. Input errors (not JSON, not an object, too large) come back
    /// as `Err`; plugin failures are part of the outcome.
    ///
    /// Waiting (for a plugin's free instance, or for the outcome of a delivery of the same event
    /// that is running now) is awaited without holding a thread; each plugin call runs on the
    /// polling thread (see [`InstancePool::handle_event_checked`]). Needs a Tokio runtime with its
    /// timer enabled; a current-thread one is enough. Dropped before it ends (while waiting, or
    /// while a call is suspended at an epoch tick), the run is given up: nothing is cached, and a
    /// delivery that waited for it runs the chain itself.
    ///
    /// [`InstancePool::handle_event_checked`]: crate::engine::InstancePool::handle_event_checked
    pub async fn process(&self, body: &[u8]) -> Result<Processed, InputError> {
        if body.len() > self.settings.max_event_bytes {
            return Err(InputError::TooLarge {
                size: body.len(),
                limit: self.settings.max_event_bytes,
            });
        }
        let encoded = encode_event(body)?;
        let key = encoded.identity.key();
        let hash = body_hash(body);
        let computing = loop {
            match self.cache.lookup(&key, hash) {
                Lookup::Cached(outcome, effects_claimed) => {
                    return Ok(Processed {
                        outcome,
                        replayed: true,
                        identity: encoded.identity,
                        effects_claimed,
                    });
                }
                // Another delivery of this event is running the chain: take its outcome rather
                // than running the plugins (and their effects) a second time.
                Lookup::Running(in_flight) => in_flight.wait(self.longest_chain).await,
                Lookup::Compute(computing) => break computing,
            }
        };
        let outcome = Arc::new(
            self.run_chain(body, encoded.request, &encoded.identity.event_type)
                .await,
        );
        let effects_claimed = Arc::new(AtomicBool::new(false));
        if !matches!(outcome.verdict, Verdict::Fail { .. }) {
            self.cache
                .put(key, hash, outcome.clone(), effects_claimed.clone());
        }
        drop(computing);
        Ok(Processed {
            outcome,
            replayed: false,
            identity: encoded.identity,
            effects_claimed,
        })
    }

    async fn run_chain(&self, body: &[u8], mut request: Vec<u8>, event_type: &str) -> Outcome {
        let mut current: Option<Vec<u8>> = None;
        // Set after an edit: the next plugin called needs the request encoded from the new bytes.
        let mut request_is_stale = false;
        let mut outcome = Outcome {
            verdict: Verdict::Forward,
            effects: Vec::new(),
            shadow_effects: Vec::new(),
            steps: Vec::with_capacity(self.plugins.len()),
        };
        for entry in &self.plugins {
            let settings = &entry.plugin.settings;
            let shadow = settings.mode == Mode::Shadow;
            let mut step = Step {
                plugin: settings.name.clone(),
                shadow,
                result: StepResult::NotSelected,
                elapsed: Duration::ZERO,
                waited: Duration::ZERO,
                logs: Vec::new(),
                dropped_logs: 0,
            };
            if !entry.selector.matches(event_type) {
                outcome.steps.push(step);
                continue;
            }
            let event_now = current.as_deref().unwrap_or(body);
            if request_is_stale {
                // Edits keep the event an object, so it encodes again.
                match encode_event(event_now) {
                    Ok(encoded) => request = encoded.request,
                    Err(e) => {
                        tracing::error!(plugin = %settings.name, error = %e, "edited event no longer encodes")
                    }
                }
                request_is_stale = false;
            }
            let started = Instant::now();
            let called = call_plugin(&entry.plugin, &request, event_now).await;
            step.elapsed = started.elapsed();
            let (result, effects, edited) = match called {
                Ok(call) => {
                    step.waited = call.waited;
                    step.logs = call.logs;
                    step.dropped_logs = call.dropped_logs;
                    (call.result, call.effects, call.edited)
                }
                Err(error) => {
                    if let CallError::Busy { waited, .. } = &error {
                        step.waited = *waited;
                    }
                    (StepResult::Failed(error), Vec::new(), None)
                }
            };
            step.result = result.clone();
            outcome.steps.push(step);
            if shadow {
                outcome.shadow_effects.extend(effects);
                continue;
            }
            match result {
                StepResult::Failed(error) => {
                    if settings.failure_policy == FailurePolicy::FailClosed {
                        outcome.verdict = Verdict::Fail {
                            plugin: settings.name.clone(),
                            error,
                        };
                        return outcome;
                    }
                }
                StepResult::Skipped => {
                    outcome.effects.extend(effects);
                    outcome.verdict = Verdict::Skip {
                        plugin: settings.name.clone(),
                    };
                    return outcome;
                }
                StepResult::Modified(_) => {
                    outcome.effects.extend(effects);
                    if let Some(edited) = edited {
                        current = Some(edited);
                        request_is_stale = true;
                    }
                }
                StepResult::Forwarded | StepResult::NotSelected => outcome.effects.extend(effects),
            }
        }
        if let Some(edited) = current {
            outcome.verdict = Verdict::Modified(edited);
        }
        outcome
    }
}

struct PluginCall {
    result: StepResult,
    effects: Vec<Effect>,
    edited: Option<Vec<u8>>,
    logs: Vec<PluginLog>,
    dropped_logs: u32,
    waited: Duration,
}

/// Calls one plugin and interprets its response against the event as it entered the plugin.
async fn call_plugin(
    plugin: &LoadedPlugin,
    request: &[u8],
    event: &[u8],
) -> Result<PluginCall, CallError> {
    let (decision, record) = plugin
        .pool
        .handle_event_checked(request, |response| interpret_response(response, event))
        .await?;
    Ok(PluginCall {
        result: decision.result,
        effects: record.effects,
        edited: decision.edited,
        logs: record.logs,
        dropped_logs: record.dropped_logs,
        waited: record.waited,
    })
}
