//! Runs of a keyed job, one at a time per key, where a request is answered by a run that began
//! after it was made.
//!
//! The operator reconciles a whole target Deployment for each EventPlugin's reconcile. When the
//! ten plugins of a target change at once, their reconciles queue for the target. A run that began
//! after a request was made read everything the change behind that request wrote (the stores are
//! updated before a reconcile is asked for, and the rest is read fresh), so its result answers the
//! request. Of the requests queued behind a run, the first to get the target runs, and its result
//! answers the others: a burst of changes to the ten plugins of a target reconciles it about
//! twice, not ten times.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The last finished run of a key that others waited for: when it began and what it gave.
type Last<T> = tokio::sync::Mutex<Option<(u64, T)>>;

/// How a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// By a run of its own.
    Ran,
    /// By a run that began after it was made.
    Shared,
}

/// Keyed runs, one at a time per key, sharing a result with the requests made before it began.
pub struct Coalescer<K, T> {
    /// Stamps requests and the starts of runs, in one order.
    clock: AtomicU64,
    slots: Mutex<HashMap<K, Arc<Last<T>>>>,
}

impl<K, T> Default for Coalescer<K, T> {
    fn default() -> Self {
        Self {
            clock: AtomicU64::new(0),
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq + Clone, T: Clone> Coalescer<K, T> {
    /// Runs `job` for `key` once the key's previous run has finished, or answers with the result
    /// of a run of `key` that began after this call. An error is never shared: the requests
    /// waiting behind a failed run run again.
    pub async fn run<E, F, Fut>(&self, key: K, job: F) -> Result<(T, Answer), E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let asked = self.clock.fetch_add(1, Ordering::SeqCst);
        let slot = self.slot(key.clone());
        let mut last = slot.lock().await;
        let answer = match last.as_ref() {
            Some((began, result)) if *began > asked => Ok((result.clone(), Answer::Shared)),
            _ => {
                let began = self.clock.fetch_add(1, Ordering::SeqCst);
                *last = None;
                match job().await {
                    Ok(result) => {
                        // Kept only for requests already waiting (they hold the slot): a request
                        // made later asks after this run began, and runs.
                        if Arc::strong_count(&slot) > 2 {
                            *last = Some((began, result.clone()));
                        }
                        Ok((result, Answer::Ran))
                    }
                    Err(e) => Err(e),
                }
            }
        };
        drop(last);
        self.release(key, slot);
        answer
    }

    fn slot(&self, key: K) -> Arc<Last<T>> {
        // A panic while the map was held leaves it whole (one insert or lookup).
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.entry(key).or_default().clone()
    }

    /// Lets go of `key`'s slot; the last request holding it takes it (and a kept result) out of
    /// the map. Slots are handed out under the map's lock, so none is handed out meanwhile.
    fn release(&self, key: K, slot: Arc<Last<T>>) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if Arc::strong_count(&slot) == 2 {
            slots.remove(&key);
        }
    }

    /// How many requests hold `key`'s slot (running or waiting).
    #[cfg(test)]
    fn holders(&self, key: &K) -> usize {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.get(key).map_or(0, |slot| Arc::strong_count(slot) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use tokio::sync::Notify;

    /// A job that counts its runs and gives its run number, or fails when `fail` is set; with
    /// `hold`, it waits for a notification first.
    fn job(
        runs: &Arc<AtomicUsize>,
        hold: Option<Arc<Notify>>,
        fail: bool,
    ) -> impl FnOnce() -> std::pin::Pin<Box<dyn Future<Output = Result<usize, String>> + Send>> + use<>
    {
        let runs = runs.clone();
        move || {
            Box::pin(async move {
                let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
                if let Some(hold) = hold {
                    hold.notified().await;
                }
                if fail {
                    Err(format!("run {run} failed"))
                } else {
                    Ok(run)
                }
            })
        }
    }

    /// Waits until `ready` holds, letting the other tasks run; fails loudly after a minute (a
    /// broken coalescer answers without running or queueing).
    async fn until(what: &str, ready: impl Fn() -> bool) {
        let waited = tokio::time::timeout(std::time::Duration::from_secs(60), async {
            while !ready() {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(waited.is_ok(), "{what} never happened");
    }

    /// Starts a held run of "eh", then five requests that queue behind it; returns when all six
    /// hold the slot, with the held run's handle and the five.
    async fn five_behind_a_held_run(
        coalescer: &Arc<Coalescer<&'static str, usize>>,
        runs: &Arc<AtomicUsize>,
        release: &Arc<Notify>,
        first_fails: bool,
    ) -> (
        tokio::task::JoinHandle<Result<(usize, Answer), String>>,
        Vec<tokio::task::JoinHandle<Result<(usize, Answer), String>>>,
    ) {
        let before = runs.load(Ordering::SeqCst);
        let first = tokio::spawn({
            let (c, j) = (
                coalescer.clone(),
                job(runs, Some(release.clone()), first_fails),
            );
            async move { c.run("eh", j).await }
        });
        until("the held run's start", || {
            runs.load(Ordering::SeqCst) > before
        })
        .await;
        let queued = (0..5)
            .map(|_| {
                let (c, j) = (coalescer.clone(), job(runs, None, false));
                tokio::spawn(async move { c.run("eh", j).await })
            })
            .collect();
        until("five requests queued behind the held run", || {
            coalescer.holders(&"eh") == 6
        })
        .await;
        (first, queued)
    }

    async fn answers(
        queued: Vec<tokio::task::JoinHandle<Result<(usize, Answer), String>>>,
    ) -> Vec<Result<(usize, Answer), String>> {
        let mut answers = Vec::new();
        for q in queued {
            answers.push(q.await.unwrap_or_else(|e| Err(format!("task: {e}"))));
        }
        answers
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_queued_behind_a_run_are_answered_by_the_next_run() {
        let coalescer = Arc::new(Coalescer::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let (first, queued) = five_behind_a_held_run(&coalescer, &runs, &release, false).await;
        // Another key is not held back by this one.
        let other = coalescer.run("other", job(&runs, None, false)).await;
        assert_eq!(other, Ok((2, Answer::Ran)));
        release.notify_one();
        assert_eq!(first.await.ok(), Some(Ok((1, Answer::Ran))));
        let answers = answers(queued).await;
        // The first run began before the five asked, so it answers none of them. One of the
        // five runs after it (and so after they asked); it answers the other four.
        assert_eq!(runs.load(Ordering::SeqCst), 3, "{answers:?}");
        let count = |answer: Answer| answers.iter().filter(|a| **a == Ok((3, answer))).count();
        assert_eq!(
            (count(Answer::Ran), count(Answer::Shared)),
            (1, 4),
            "{answers:?}"
        );
        // Nothing is kept once nobody waits, and a request after every run finished runs again.
        assert_eq!(coalescer.holders(&"eh"), 0);
        let later = coalescer.run("eh", job(&runs, None, false)).await;
        assert_eq!(later, Ok((4, Answer::Ran)));
        assert_eq!(coalescer.holders(&"eh") + coalescer.holders(&"other"), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn requests_queued_behind_a_failed_run_run_again() {
        let coalescer = Arc::new(Coalescer::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        // A first success, kept for nobody, then a failing run with five behind it.
        assert_eq!(
            coalescer.run("eh", job(&runs, None, false)).await,
            Ok((1, Answer::Ran))
        );
        let (failing, queued) = five_behind_a_held_run(&coalescer, &runs, &release, true).await;
        release.notify_one();
        assert_eq!(failing.await.ok(), Some(Err("run 2 failed".to_string())));
        let answers = answers(queued).await;
        // None of them got the failure or the older success: one ran, and answered the rest.
        assert_eq!(runs.load(Ordering::SeqCst), 3, "{answers:?}");
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, Ok((3, Answer::Ran | Answer::Shared)))),
            "{answers:?}"
        );
    }
}
