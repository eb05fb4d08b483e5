//! Counts failed delivery attempts per event identity, so one event a plugin keeps failing on can be
//! set aside instead of stalling the stream.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed attempts by event identity key; entries expire after an hour without a new failure and the
/// table is bounded.
pub struct PoisonTracker {
    attempts: Mutex<HashMap<String, (u32, Instant)>>,
}

const MAX_ENTRIES: usize = 100_000;
const FORGET_AFTER: Duration = Duration::from_secs(3600);

impl Default for PoisonTracker {
    fn default() -> Self {
        Self {
            attempts: Mutex::new(HashMap::new()),
        }
    }
}

impl PoisonTracker {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u32, Instant)>> {
        self.attempts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one more failed attempt of `key` and returns how many there have been.
    pub fn failed(&self, key: &str) -> u32 {
        let now = Instant::now();
        let mut attempts = self.lock();
        if attempts.len() >= MAX_ENTRIES {
            attempts.retain(|_, (_, last)| now.duration_since(*last) < FORGET_AFTER);
            if attempts.len() >= MAX_ENTRIES {
                attempts.clear();
            }
        }
        let entry = attempts.entry(key.to_string()).or_insert((0, now));
        entry.0 += 1;
        entry.1 = now;
        entry.0
    }

    /// Forgets `key` once its event was delivered or set aside.
    pub fn settled(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::PoisonTracker;

    #[test]
    fn attempts_count_per_key_until_settled() {
        let tracker = PoisonTracker::default();
        assert_eq!(tracker.failed("a"), 1);
        assert_eq!(tracker.failed("a"), 2);
        assert_eq!(tracker.failed("b"), 1);
        tracker.settled("a");
        assert_eq!(tracker.failed("a"), 1);
    }
}
