//! From one audit event's JSON bytes to a verdict: the envelope a plugin sees, the plugin chain,
//! edits applied to the original bytes, and the verdict cache for redeliveries.

mod chain;
mod envelope;
mod json_edit;
mod outcome;
mod plugin;
mod protobuf_writer;
mod response;
mod selector;
mod timestamp;
mod verdict_cache;

pub use chain::{Pipeline, PipelineSettings};
pub use envelope::{EncodedEvent, EventIdentity, InputError, encode_event};
pub use json_edit::apply_edits;
pub use outcome::{Outcome, Processed, Step, StepResult, Verdict};
pub use plugin::LoadedPlugin;
pub use response::{Decision, interpret_response};
pub use selector::Selector;
pub use timestamp::{format_rfc3339, parse_rfc3339};
pub use verdict_cache::VerdictCache;
