//! Validation errors that name the key at fault (`plugins[1].limits.timeout`), so a person reading a
//! log line, and an operator writing a status condition, both know what to change.

use std::fmt;

/// Something wrong with a config, at a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// The key at fault, as a path from the document's root (`plugins[1].limits.timeout`); empty
    /// for the document as a whole.
    pub path: String,
    /// What is wrong and what to do. Never echoes the document's values beyond the key's own.
    pub message: String,
    /// Line and column (1-based) in the YAML text, when the error came from parsing it.
    pub position: Option<(usize, usize)>,
}

impl ValidationError {
    /// An error at `path`.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
            position: None,
        }
    }

    /// The same error with `prefix` in front of its path (`plugins[1]` + `limits.timeout`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.path = match (prefix.is_empty(), self.path.is_empty()) {
            (true, _) => self.path,
            (false, true) => prefix.to_string(),
            (false, false) if self.path.starts_with('[') => format!("{prefix}{}", self.path),
            (false, false) => format!("{prefix}.{}", self.path),
        };
        self
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some((line, column)) = self.position {
            write!(f, " (line {line}, column {column})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_nest_and_display_with_the_position() {
        let error =
            ValidationError::at("limits.timeout", "must be above zero").within("plugins[1]");
        assert_eq!(error.path, "plugins[1].limits.timeout");
        assert_eq!(
            error.to_string(),
            "plugins[1].limits.timeout: must be above zero"
        );
        let indexed = ValidationError::at("[2]", "bad").within("plugins");
        assert_eq!(indexed.path, "plugins[2]");
        let mut positioned = ValidationError::at("", "not YAML");
        positioned.position = Some((3, 7));
        assert_eq!(positioned.to_string(), "not YAML (line 3, column 7)");
    }
}
