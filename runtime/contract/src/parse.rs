//! Reading a contract type from YAML text, with errors that carry the path of the bad key and its
//! position but never a snippet of the document (a plugin's `config` may hold secrets).

use crate::ValidationError;
use serde::de::DeserializeOwned;

/// Parses `text` as `T`. Duplicate keys are refused; the error names the key path, the line and
/// column, and what was wrong.
pub fn from_yaml<T: DeserializeOwned>(text: &str) -> Result<T, ValidationError> {
    let mut track = serde_path_to_error::Track::new();
    let options = serde_saphyr::options! {
        with_snippet: false,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    };
    let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        T::deserialize(serde_path_to_error::Deserializer::new(de, &mut track))
    });
    parsed.map_err(|error| {
        let path = track.path().to_string();
        let error = error.without_snippet();
        let position = error
            .location()
            .map(|l| (l.line() as usize, l.column() as usize));
        let mut message = error.to_string();
        // The location is reported separately; drop the parser's own "at line …" suffix.
        if let Some(cut) = message.find(" at line ") {
            message.truncate(cut);
        }
        ValidationError {
            path: if path == "." { String::new() } else { path },
            message,
            position,
        }
    })
}
