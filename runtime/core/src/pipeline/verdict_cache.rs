//! Remembers recent outcomes by event identity, so a redelivered event gets its first outcome
//! again without running plugins or effects twice. Bounded in entries and in age. A delivery that
//! arrives while the same event is still being computed awaits that outcome instead of running
//! the chain a second time.

use super::outcome::Outcome;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

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

/// An outcome being computed, that other deliveries of the same event wait for.
pub struct InFlight {
    /// Becomes `true` when the computation ends (its outcome stored, or given up).
    done: watch::Sender<bool>,
}

impl Default for InFlight {
    fn default() -> Self {
        Self {
            done: watch::Sender::new(false),
        }
    }
}

impl InFlight {
    /// Waits, without holding a thread, until the computation ends or `limit` passes. An end that
    /// came before the wait began is seen at once. Needs a Tokio runtime with its timer enabled.
    pub async fn wait(&self, limit: Duration) {
        let mut done = self.done.subscribe();
        // Either way the caller looks again; a closed channel cannot happen while `self` lives.
        let _ = tokio::time::timeout(limit, done.wait_for(|done| *done)).await;
    }
}

/// The right to compute an outcome; others wait until it is dropped.
pub struct Computing<'a> {
    cache: &'a VerdictCache,
    claim: Option<((String, u64), Arc<InFlight>)>,
}

impl Drop for Computing<'_> {
    fn drop(&mut self) {
        if let Some((key, in_flight)) = self.claim.take() {
            self.cache.lock_in_flight().remove(&key);
            in_flight.done.send_replace(true);
        }
    }
}

/// What a lookup found.
pub enum Lookup<'a> {
    /// The outcome of an earlier delivery, and its effects flag.
    Cached(Arc<Outcome>, Arc<AtomicBool>),
    /// Another delivery of the same event is computing it: wait, then look again.
    Running(Arc<InFlight>),
    /// Nobody has it: compute it while holding this.
    Compute(Computing<'a>),
}

/// Outcomes by event identity key.
pub struct VerdictCache {
    capacity: usize,
    ttl: Duration,
    entries: Mutex<Entries>,
    in_flight: Mutex<HashMap<(String, u64), Arc<InFlight>>>,
}

impl VerdictCache {
    /// A cache of at most `capacity` outcomes, each kept at most `ttl`. A capacity of 0 disables it.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        Self {
            capacity,
            ttl,
            entries: Mutex::new(Entries::default()),
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    fn lock_in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u64), Arc<InFlight>>> {
        self.in_flight.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The outcome for `key` and `body_hash`: cached, being computed, or for the caller to compute.
    pub fn lookup(&self, key: &str, body_hash: u64) -> Lookup<'_> {
        if self.capacity == 0 {
            return Lookup::Compute(Computing {
                cache: self,
                claim: None,
            });
        }
        // The entries lock is held while the in-flight table is consulted, and a computation
        // stores its outcome before it leaves the table, so a lookup sees one or the other.
        let entries = self.lock();
        if let Some(entry) = entries.by_key.get(key)
            && entry.body_hash == body_hash
            && entry.stored.elapsed() < self.ttl
        {
            return Lookup::Cached(entry.outcome.clone(), entry.effects_claimed.clone());
        }
        let mut in_flight = self.lock_in_flight();
        let id = (key.to_string(), body_hash);
        if let Some(running) = in_flight.get(&id) {
            return Lookup::Running(running.clone());
        }
        let running = Arc::new(InFlight::default());
        in_flight.insert(id.clone(), running.clone());
        drop(in_flight);
        drop(entries);
        Lookup::Compute(Computing {
            cache: self,
            claim: Some((id, running)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits with an hour's limit, so only the end of the computation can end it in time.
    async fn ends_well_before_its_limit(in_flight: &InFlight) {
        tokio::time::timeout(
            Duration::from_secs(30),
            in_flight.wait(Duration::from_secs(3600)),
        )
        .await
        .expect("the wait ended with the computation");
    }

    #[tokio::test]
    async fn a_wait_ends_with_the_computation_whether_it_began_before_or_after_the_end() {
        let cache = VerdictCache::new(10, Duration::from_secs(60));
        let Lookup::Compute(computing) = cache.lookup("k", 1) else {
            panic!("nothing is cached or running yet");
        };
        let Lookup::Running(early) = cache.lookup("k", 1) else {
            panic!("the first delivery is computing");
        };
        let Lookup::Running(late) = cache.lookup("k", 1) else {
            panic!("the first delivery is computing");
        };
        // `early` starts waiting before the end: polled once, it is pending.
        let mut early_wait = std::pin::pin!(ends_well_before_its_limit(&early));
        let polled =
            std::future::poll_fn(|cx| std::task::Poll::Ready(early_wait.as_mut().poll(cx))).await;
        assert!(polled.is_pending());
        // The computation is given up (its delivery dropped) without storing an outcome.
        drop(computing);
        early_wait.await;
        // `late` starts waiting only after the end, and sees it at once.
        ends_well_before_its_limit(&late).await;
        assert!(
            matches!(cache.lookup("k", 1), Lookup::Compute(_)),
            "nothing was stored, so the next delivery computes"
        );
    }
}
