//! Remembers recent outcomes by event identity, so a redelivered event gets its first outcome
//! again without running plugins or effects twice. Bounded in entries and in age.

use super::chain::Outcome;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Entry {
    body_hash: u64,
    outcome: Arc<Outcome>,
    effects_claimed: Arc<AtomicBool>,
    stored: Instant,
}

#[derive(Default)]
struct Entries {
    by_key: HashMap<String, Entry>,
    order: VecDeque<(String, Instant)>,
}

/// Outcomes by event identity key.
pub struct VerdictCache {
    capacity: usize,
    ttl: Duration,
    entries: Mutex<Entries>,
}

impl VerdictCache {
    /// A cache of at most `capacity` outcomes, each kept at most `ttl`. A capacity of 0 disables it.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity,
            ttl,
            entries: Mutex::new(Entries::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The outcome stored for `key`, if it is fresh and was computed for the same body, with the flag
    /// that says whether its effects were claimed.
    pub fn get(&self, key: &str, body_hash: u64) -> Option<(Arc<Outcome>, Arc<AtomicBool>)> {
        if self.capacity == 0 {
            return None;
        }
        let entries = self.lock();
        let entry = entries.by_key.get(key)?;
        (entry.body_hash == body_hash && entry.stored.elapsed() < self.ttl)
            .then(|| (entry.outcome.clone(), entry.effects_claimed.clone()))
    }

    /// Stores an outcome and its effects flag, evicting the oldest entries beyond capacity or age.
    pub fn put(
        &self,
        key: String,
        body_hash: u64,
        outcome: Arc<Outcome>,
        effects_claimed: Arc<AtomicBool>,
    ) {
        if self.capacity == 0 {
            return;
        }
        let now = Instant::now();
        let mut entries = self.lock();
        entries.order.push_back((key.clone(), now));
        entries.by_key.insert(
            key,
            Entry {
                body_hash,
                outcome,
                effects_claimed,
                stored: now,
            },
        );
        while let Some((oldest, stored)) = entries.order.front().cloned() {
            let over = entries.order.len() > self.capacity;
            let stale = now.duration_since(stored) >= self.ttl;
            if !over && !stale {
                break;
            }
            entries.order.pop_front();
            // Only drop the entry if it is not a newer store under the same key.
            if entries
                .by_key
                .get(&oldest)
                .is_some_and(|e| e.stored == stored)
            {
                entries.by_key.remove(&oldest);
            }
        }
    }

    /// How many outcomes are stored.
    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
