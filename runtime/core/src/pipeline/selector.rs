//! Which event types a plugin is called for.

/// A set of event-type patterns: exact (`user.login`), prefix (`session.*`) or everything (`*`).
/// No patterns means every event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Selector {
    exact: Vec<String>,
    prefixes: Vec<String>,
    all: bool,
}

impl Selector {
    /// A selector from patterns as written in the plugin's settings.
    pub fn new(patterns: &[String]) -> Self {
        let mut selector = Self {
            all: patterns.is_empty(),
            ..Self::default()
        };
        for pattern in patterns {
            let pattern = pattern.trim();
            if pattern == "*" {
                selector.all = true;
            } else if let Some(prefix) = pattern.strip_suffix('*') {
                selector.prefixes.push(prefix.to_string());
            } else {
                selector.exact.push(pattern.to_string());
            }
        }
        selector
    }

    /// Whether an event of `event_type` goes to the plugin.
    pub fn matches(&self, event_type: &str) -> bool {
        self.all
            || self.exact.iter().any(|e| e == event_type)
            || self
                .prefixes
                .iter()
                .any(|p| event_type.starts_with(p.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::Selector;

    fn selector(patterns: &[&str]) -> Selector {
        Selector::new(&patterns.iter().map(|p| p.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn patterns_match_exact_prefix_and_all() {
        let s = selector(&["user.login", "session.*"]);
        assert!(s.matches("user.login"));
        assert!(s.matches("session.start"));
        assert!(!s.matches("user.create"));
        assert!(!s.matches("session"));
        assert!(selector(&[]).matches("anything"));
        assert!(selector(&["*"]).matches("anything"));
    }
}
