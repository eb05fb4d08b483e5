//! What running the chain on one event produces: the verdict, the effects to carry out and what
//! each plugin did. The chain makes outcomes, the verdict cache keeps them, responses feed them.

use super::envelope::EventIdentity;
use crate::abi::{Effect, PluginLog};
use crate::engine::CallError;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// What happens to the event.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Forward the original bytes untouched.
    Forward,
    /// Forward these bytes: the original with the plugins' edits applied.
    Modified(Vec<u8>),
    /// Drop the event (deliberately skipped by this plugin).
    Skip {
        /// The plugin that skipped it.
        plugin: String,
    },
    /// The event failed in a `FailClosed` plugin: it must not be forwarded or acknowledged.
    Fail {
        /// The plugin that failed.
        plugin: String,
        /// How it failed.
        error: CallError,
    },
}

/// What one plugin did with the event.
#[derive(Debug, Clone, PartialEq)]
pub enum StepResult {
    /// Its selector does not take this event type; it was not called.
    NotSelected,
    /// It forwarded the event unchanged.
    Forwarded,
    /// It edited the event (this many edits).
    Modified(usize),
    /// It skipped the event.
    Skipped,
    /// It failed; the failure policy decided what happened next.
    Failed(CallError),
}

/// One plugin's part in an outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The plugin.
    pub plugin: String,
    /// Whether it ran in shadow mode (its result was recorded, not applied).
    pub shadow: bool,
    /// What it did.
    pub result: StepResult,
    /// Time spent in the call, including waiting for an instance.
    pub elapsed: Duration,
    /// Of that, the time spent waiting for a free instance.
    pub waited: Duration,
    /// Log lines it wrote.
    pub logs: Vec<PluginLog>,
    /// Log lines dropped by its per-call limit.
    pub dropped_logs: u32,
}

/// The result of running the chain on one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// What happens to the event.
    pub verdict: Verdict,
    /// Effects to carry out, in chain order.
    pub effects: Vec<Effect>,
    /// Effects of shadow-mode plugins: recorded only.
    pub shadow_effects: Vec<Effect>,
    /// What each plugin did.
    pub steps: Vec<Step>,
}

/// An outcome and whether it is a replay of an earlier delivery's.
#[derive(Debug, Clone)]
pub struct Processed {
    /// The outcome.
    pub outcome: Arc<Outcome>,
    /// True when this delivery reused the outcome of an earlier one of the same event: no plugin
    /// ran.
    pub replayed: bool,
    /// The event's identity.
    pub identity: EventIdentity,
    /// Shared by every delivery of the outcome: set once its effects were claimed.
    pub(super) effects_claimed: Arc<AtomicBool>,
}

impl Processed {
    /// Claims the outcome's effects for carrying out: true for exactly one caller, however many
    /// deliveries replay the outcome. Claim them once the event's fate is final (delivered or
    /// skipped), so that a failed delivery's retry can still carry them out once.
    pub fn claim_effects(&self) -> bool {
        !self.effects_claimed.swap(true, Ordering::AcqRel)
    }
}
