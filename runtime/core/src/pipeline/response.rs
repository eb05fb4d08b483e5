//! What a plugin's response bytes mean for the event.

use super::json_edit::apply_edits;
use super::outcome::StepResult;
use crate::engine::CallError;
use eventplug_proto::v1 as pb;
use prost::Message;

/// A plugin's decision on one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Forwarded, modified or skipped.
    pub result: StepResult,
    /// With `Modified`: the event's JSON with the edits applied.
    pub edited: Option<Vec<u8>>,
}

/// Decodes `response` (a `HandleEventResponse`; empty means forward unchanged) and applies its edits
/// to `event`. Bytes that are not a response, unknown verdicts and edits that cannot apply are
/// `BadOutput`; an error verdict is `Plugin`.
pub fn interpret_response(response: &[u8], event: &[u8]) -> Result<Decision, CallError> {
    let response = pb::HandleEventResponse::decode(response).map_err(|e| {
        CallError::BadOutput(format!(
            "{} bytes that are not a HandleEventResponse: {e}",
            response.len()
        ))
    })?;
    match pb::Verdict::try_from(response.verdict) {
        Ok(pb::Verdict::Forward) if response.edits.is_empty() => Ok(Decision {
            result: StepResult::Forwarded,
            edited: None,
        }),
        Ok(pb::Verdict::Forward) => {
            let edited = apply_edits(event, &response.edits).map_err(CallError::BadOutput)?;
            Ok(Decision {
                result: StepResult::Modified(response.edits.len()),
                edited: Some(edited),
            })
        }
        Ok(pb::Verdict::Skip) => Ok(Decision {
            result: StepResult::Skipped,
            edited: None,
        }),
        Ok(pb::Verdict::Error) if response.error.is_empty() => {
            Err(CallError::Plugin("(no message)".into()))
        }
        Ok(pb::Verdict::Error) => Err(CallError::Plugin(response.error)),
        Err(_) => Err(CallError::BadOutput(format!(
            "unknown verdict {}",
            response.verdict
        ))),
    }
}
