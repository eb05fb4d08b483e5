//! Carrying out effects, by workers, in two delivery classes.
//!
//! - **must-deliver** (Teleport lock create and delete): one queue, retried until it succeeds,
//!   never dropped. The event's answer waits up to `delivery.effectWait` for them; past that it is
//!   503 and event-handler redelivers it, and the redelivery waits on the same effects again (each
//!   effect carries an idempotency key, so nothing happens twice). A full queue refuses new effects
//!   (the event gets 503: back-pressure) and marks the sidecar degraded.
//! - **best-effort** (alerts): a bounded queue per sink, retried with backoff a few times; a full
//!   queue drops its oldest effect, counted and logged. It never slows an event.
//!
//! Shadow effects are recorded, never carried out. The sinks today log and count; the Teleport
//! client and alert routing plug their own in.

use crate::metrics::{EffectLabels, Metrics};
use backon::{ExponentialBuilder, Retryable};
use eventplug_runtime::abi::{Effect, EffectKind};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, mpsc, watch};

/// How an effect kind is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryClass {
    /// Never dropped; the event waits for it (bounded), else is redelivered.
    MustDeliver,
    /// Queued, retried a few times, dropped oldest-first when the queue is full.
    BestEffort,
}

impl DeliveryClass {
    /// The class of an effect kind.
    pub fn of(kind: &EffectKind) -> Self {
        match kind {
            EffectKind::CreateLock(_) | EffectKind::DeleteLock(_) => Self::MustDeliver,
            EffectKind::Alert(_) => Self::BestEffort,
        }
    }
}

/// The metric label of an effect kind.
pub fn kind_label(kind: &EffectKind) -> &'static str {
    match kind {
        EffectKind::Alert(_) => "alert",
        EffectKind::CreateLock(_) => "create_lock",
        EffectKind::DeleteLock(_) => "delete_lock",
    }
}

/// An effect with its idempotency key: the event's identity, the plugin and the effect's index in
/// that plugin's list. A sink that talks to a real backend uses the key to make a retried call
/// harmless.
#[derive(Debug, Clone)]
pub struct KeyedEffect {
    /// `<event identity>/<plugin>/<index>`.
    pub key: String,
    /// The effect.
    pub effect: Effect,
}

/// Why a sink did not carry out an effect.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// It may work later (the backend is down, slow or overloaded): retried.
    #[error("{0}")]
    Transient(String),
    /// It never will (the backend refuses this effect): not retried; logged, counted and reported
    /// as degraded, so one bad effect cannot hold up every later one.
    #[error("{0}")]
    Permanent(String),
}

/// A future a sink returns.
pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// Where effects of one class go.
pub trait EffectSink: Send + Sync {
    /// A name for logs.
    fn name(&self) -> &str;
    /// Carries out one effect; a transient error is retried.
    fn deliver<'a>(&'a self, effect: &'a KeyedEffect) -> SinkFuture<'a>;
}

/// The sink until the real backends exist: the effect is logged.
pub struct LogSink;

impl EffectSink for LogSink {
    fn name(&self) -> &str {
        "log"
    }

    fn deliver<'a>(&'a self, effect: &'a KeyedEffect) -> SinkFuture<'a> {
        Box::pin(async move {
            tracing::warn!(key = %effect.key, "effect: {}", effect.effect);
            Ok(())
        })
    }
}

/// Why an event's must-deliver effects are not carried out (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EffectsPending {
    /// They are queued or being retried; the event is answered 503 and redelivered.
    #[error("{0} lock effect(s) not carried out within delivery.effectWait; still being retried")]
    TimedOut(usize),
    /// The must-deliver queue is full.
    #[error(
        "the lock effect queue is full (delivery.effectQueue = {0}): the Teleport API is not keeping up"
    )]
    QueueFull(u32),
}

/// Where a must-deliver effect stands.
enum KeyState {
    /// Queued or being retried; resolves to true when carried out.
    Pending(watch::Receiver<bool>),
    /// Carried out.
    Done,
}

/// Remembered keys, bounded: the oldest carried-out keys are forgotten first.
struct Keys {
    states: HashMap<String, KeyState>,
    done_order: VecDeque<String>,
}

/// Carried-out keys remembered at most (a redelivery past that would carry an effect out again,
/// which the idempotency key makes harmless).
const REMEMBERED_KEYS: usize = 100_000;

struct MustDeliver {
    queue: mpsc::Sender<(KeyedEffect, watch::Sender<bool>)>,
    capacity: u32,
    keys: Mutex<Keys>,
    degraded: Mutex<Option<String>>,
}

struct BestEffort {
    sink: Arc<dyn EffectSink>,
    queue: Mutex<VecDeque<KeyedEffect>>,
    capacity: usize,
    ready: Notify,
}

/// The effect delivery workers.
pub struct EffectWorkers {
    must: Arc<MustDeliver>,
    alerts: Arc<BestEffort>,
    metrics: Arc<Metrics>,
}

/// Retries of a best-effort effect after its first attempt.
const BEST_EFFORT_RETRIES: usize = 4;

impl EffectWorkers {
    /// Starts the workers on the current runtime: `locks` carries out must-deliver effects,
    /// `alerts` best-effort ones; each queue holds at most `capacity`.
    pub fn start(
        locks: Arc<dyn EffectSink>,
        alerts: Arc<dyn EffectSink>,
        capacity: u32,
        metrics: Arc<Metrics>,
    ) -> Self {
        let slots = usize::try_from(capacity).unwrap_or(usize::MAX).max(1);
        let (sender, receiver) = mpsc::channel(slots);
        let must = Arc::new(MustDeliver {
            queue: sender,
            capacity,
            keys: Mutex::new(Keys {
                states: HashMap::new(),
                done_order: VecDeque::new(),
            }),
            degraded: Mutex::new(None),
        });
        let best = Arc::new(BestEffort {
            sink: alerts,
            queue: Mutex::new(VecDeque::new()),
            capacity: slots,
            ready: Notify::new(),
        });
        tokio::spawn(must_deliver_worker(
            must.clone(),
            locks,
            receiver,
            metrics.clone(),
        ));
        tokio::spawn(best_effort_worker(best.clone(), metrics.clone()));
        Self {
            must,
            alerts: best,
            metrics,
        }
    }

    /// Why effects are degraded now (the lock queue filled up or a lock effect keeps failing), if
    /// they are.
    pub fn degraded(&self) -> Option<String> {
        lock(&self.must.degraded).clone()
    }

    /// Hands over the effects of a delivered event (`identity`: its identity key) and waits up to
    /// `wait` for the must-deliver ones. `first` is `Some(shadow effects)` for the event's first
    /// final delivery, which alone queues best-effort effects and records shadow ones (counted
    /// and logged, never carried out); every delivery waits on the must-deliver ones, which are
    /// queued once by key.
    pub async fn carry_out(
        &self,
        identity: &str,
        effects: &[Effect],
        first: Option<&[Effect]>,
        wait: Duration,
    ) -> Result<(), EffectsPending> {
        for effect in first.unwrap_or_default() {
            self.count(effect, "shadow");
            tracing::info!(
                mode = "shadow",
                "effect recorded, not carried out: {effect}"
            );
        }
        let mut waiting = Vec::new();
        for keyed in keyed_effects(identity, effects) {
            match DeliveryClass::of(&keyed.effect.kind) {
                DeliveryClass::BestEffort if first.is_some() => self.queue_best_effort(keyed),
                DeliveryClass::BestEffort => {}
                DeliveryClass::MustDeliver => {
                    if let Some(pending) = self.queue_must_deliver(keyed)? {
                        waiting.push(pending);
                    }
                }
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        let all = async {
            for pending in &mut waiting {
                // A closed channel means the worker ended (shutdown): not carried out.
                if pending.wait_for(|done| *done).await.is_err() {
                    return false;
                }
            }
            true
        };
        match tokio::time::timeout(wait, all).await {
            Ok(true) => Ok(()),
            Ok(false) | Err(_) => {
                let left = waiting.iter().filter(|p| !*p.borrow()).count().max(1);
                for _ in 0..left {
                    self.metrics.effect_delivery("must_deliver", "timed_out");
                }
                Err(EffectsPending::TimedOut(left))
            }
        }
    }

    /// Whether the must-deliver effects of this delivered event were handed over before (queued or
    /// carried out): then the upstream accepted the event already, and a redelivery (after its
    /// answer waited too long for them) need not send it again. False for an event without them.
    pub fn already_handed_over(&self, identity: &str, effects: &[Effect]) -> bool {
        let keys = lock(&self.must.keys);
        let mut any = false;
        for keyed in keyed_effects(identity, effects) {
            if DeliveryClass::of(&keyed.effect.kind) == DeliveryClass::MustDeliver {
                if !keys.states.contains_key(&keyed.key) {
                    return false;
                }
                any = true;
            }
        }
        any
    }

    fn count(&self, effect: &Effect, mode: &'static str) {
        self.metrics
            .effects
            .get_or_create(&EffectLabels {
                kind: kind_label(&effect.kind),
                mode,
            })
            .inc();
    }

    /// Queues a must-deliver effect unless its key is known: `None` when it was carried out
    /// already, else what to wait on.
    fn queue_must_deliver(
        &self,
        keyed: KeyedEffect,
    ) -> Result<Option<watch::Receiver<bool>>, EffectsPending> {
        let mut keys = lock(&self.must.keys);
        match keys.states.get(&keyed.key) {
            Some(KeyState::Done) => return Ok(None),
            Some(KeyState::Pending(receiver)) => return Ok(Some(receiver.clone())),
            None => {}
        }
        let (done, receiver) = watch::channel(false);
        let key = keyed.key.clone();
        let effect = keyed.effect.clone();
        match self.must.queue.try_send((keyed, done)) {
            Ok(()) => {
                self.count(&effect, "enforce");
                keys.states.insert(key, KeyState::Pending(receiver.clone()));
                Ok(Some(receiver))
            }
            Err(_) => {
                drop(keys);
                let why = EffectsPending::QueueFull(self.must.capacity);
                self.metrics.effect_delivery("must_deliver", "queue_full");
                tracing::error!(%why, "lock effect refused; the event is answered 503 and redelivered");
                *lock(&self.must.degraded) = Some(why.to_string());
                Err(why)
            }
        }
    }

    fn queue_best_effort(&self, keyed: KeyedEffect) {
        self.count(&keyed.effect, "enforce");
        let mut queue = lock(&self.alerts.queue);
        if queue.len() >= self.alerts.capacity
            && let Some(dropped) = queue.pop_front()
        {
            self.metrics.effect_delivery("best_effort", "dropped");
            tracing::warn!(key = %dropped.key, sink = self.alerts.sink.name(), "the alert queue is full: dropped its oldest alert ({})", dropped.effect);
        }
        queue.push_back(keyed);
        drop(queue);
        self.alerts.ready.notify_one();
    }
}

/// Each effect with its idempotency key: `<identity>/<plugin>/<index in that plugin's list>`.
fn keyed_effects<'a>(
    identity: &'a str,
    effects: &'a [Effect],
) -> impl Iterator<Item = KeyedEffect> + 'a {
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    effects.iter().map(move |effect| {
        let index = index_of.entry(effect.plugin.as_str()).or_default();
        let keyed = KeyedEffect {
            key: format!("{identity}/{}/{index}", effect.plugin),
            effect: effect.clone(),
        };
        *index += 1;
        keyed
    })
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

async fn must_deliver_worker(
    must: Arc<MustDeliver>,
    sink: Arc<dyn EffectSink>,
    mut receiver: mpsc::Receiver<(KeyedEffect, watch::Sender<bool>)>,
    metrics: Arc<Metrics>,
) {
    while let Some((keyed, done)) = receiver.recv().await {
        // Retried until it succeeds: a lock must not be lost to a passing API outage.
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter()
            .without_max_times();
        let attempt = || sink.deliver(&keyed);
        let degraded = &must.degraded;
        let outcome = attempt
            .retry(backoff)
            .when(|error| matches!(error, SinkError::Transient(_)))
            .notify(|error: &SinkError, after: Duration| {
                metrics.effect_delivery("must_deliver", "retried");
                tracing::warn!(key = %keyed.key, sink = sink.name(), %error, ?after, "lock effect failed; retrying");
                *lock(degraded) = Some(format!(
                    "a lock effect keeps failing ({}): {error}",
                    sink.name()
                ));
            })
            .await;
        let delivered = outcome.is_ok();
        match outcome {
            Ok(()) => metrics.effect_delivery("must_deliver", "delivered"),
            Err(error) => {
                // The backend refuses this effect for good: waiting on it would stop the stream.
                metrics.effect_delivery("must_deliver", "rejected");
                tracing::error!(key = %keyed.key, sink = sink.name(), %error, effect = %keyed.effect, "the backend refused a lock effect for good; the event is acknowledged without it");
                *lock(degraded) = Some(format!(
                    "{} refused a lock effect ({}): {error}",
                    sink.name(),
                    keyed.key
                ));
            }
        }
        let mut keys = lock(&must.keys);
        keys.states.insert(keyed.key.clone(), KeyState::Done);
        keys.done_order.push_back(keyed.key);
        while keys.done_order.len() > REMEMBERED_KEYS {
            if let Some(old) = keys.done_order.pop_front() {
                keys.states.remove(&old);
            }
        }
        drop(keys);
        done.send_replace(true);
        // Caught up: clear the degraded mark the backlog or transient failures set (a rejection
        // stays reported until the next effect is carried out).
        if receiver.is_empty() && delivered {
            *lock(&must.degraded) = None;
        }
    }
}

async fn best_effort_worker(best: Arc<BestEffort>, metrics: Arc<Metrics>) {
    loop {
        let next = lock(&best.queue).pop_front();
        let Some(keyed) = next else {
            best.ready.notified().await;
            continue;
        };
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .with_max_times(BEST_EFFORT_RETRIES);
        let attempt = || best.sink.deliver(&keyed);
        let result = attempt
            .retry(backoff)
            .when(|error| matches!(error, SinkError::Transient(_)))
            .notify(|_: &SinkError, _| metrics.effect_delivery("best_effort", "retried"))
            .await;
        match result {
            Ok(()) => metrics.effect_delivery("best_effort", "delivered"),
            Err(error) => {
                metrics.effect_delivery("best_effort", "failed");
                tracing::error!(key = %keyed.key, sink = best.sink.name(), %error, "alert not delivered (after up to {} attempts)", BEST_EFFORT_RETRIES + 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventplug_proto::v1 as pb;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A sink that fails its first `failures` calls, records every key it carried out, and can be
    /// held shut.
    struct Recording {
        failures: AtomicUsize,
        delivered: Mutex<Vec<String>>,
        open: watch::Receiver<bool>,
    }

    impl EffectSink for Recording {
        fn name(&self) -> &str {
            "recording"
        }
        fn deliver<'a>(&'a self, effect: &'a KeyedEffect) -> SinkFuture<'a> {
            Box::pin(async move {
                let mut open = self.open.clone();
                let _ = open.wait_for(|o| *o).await;
                if effect.effect.plugin == "refused" {
                    return Err(SinkError::Permanent("400: no such user".into()));
                }
                if self
                    .failures
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |f| f.checked_sub(1))
                    .is_ok()
                {
                    return Err(SinkError::Transient("the backend is down".into()));
                }
                lock(&self.delivered).push(effect.key.clone());
                Ok(())
            })
        }
    }

    fn recording(failures: usize) -> (Arc<Recording>, watch::Sender<bool>) {
        let (gate, open) = watch::channel(true);
        (
            Arc::new(Recording {
                failures: AtomicUsize::new(failures),
                delivered: Mutex::new(Vec::new()),
                open,
            }),
            gate,
        )
    }

    fn lock_effect(plugin: &str, name: &str) -> Effect {
        Effect {
            plugin: plugin.into(),
            kind: EffectKind::CreateLock(Box::new(pb::CreateLock {
                name: name.into(),
                ..Default::default()
            })),
        }
    }

    fn alert(plugin: &str, message: &str) -> Effect {
        Effect {
            plugin: plugin.into(),
            kind: EffectKind::Alert(Box::new(pb::Alert {
                message: message.into(),
                ..Default::default()
            })),
        }
    }

    fn counter(metrics: &Metrics, class: &'static str, outcome: &'static str) -> u64 {
        metrics
            .effect_deliveries
            .get_or_create(&crate::metrics::EffectDeliveryLabels { class, outcome })
            .get()
    }

    #[tokio::test(start_paused = true)]
    async fn a_lock_is_retried_until_carried_out_and_a_redelivery_does_not_repeat_it() {
        let metrics = Arc::new(Metrics::new());
        let (locks, _gate) = recording(3);
        let (alerts, _alerts_gate) = recording(0);
        let workers = EffectWorkers::start(locks.clone(), alerts, 10, metrics.clone());
        let effects = [lock_effect("brute", "a"), lock_effect("brute", "b")];
        workers
            .carry_out("uid:1", &effects, Some(&[]), Duration::from_secs(60))
            .await
            .expect("carried out after retries");
        assert_eq!(*lock(&locks.delivered), ["uid:1/brute/0", "uid:1/brute/1"]);
        assert_eq!(counter(&metrics, "must_deliver", "retried"), 3);
        workers
            .carry_out("uid:1", &effects, Some(&[]), Duration::from_secs(60))
            .await
            .expect("already carried out");
        assert_eq!(lock(&locks.delivered).len(), 2, "nothing twice");
        assert_eq!(workers.degraded(), None, "caught up");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lock_not_carried_out_in_time_is_pending_and_the_redelivery_waits_on_it() {
        let metrics = Arc::new(Metrics::new());
        let (locks, gate) = recording(0);
        let (alerts, _alerts_gate) = recording(0);
        gate.send_replace(false);
        let workers = EffectWorkers::start(locks.clone(), alerts, 10, metrics.clone());
        let effects = [lock_effect("brute", "a")];
        let first = workers
            .carry_out("uid:2", &effects, None, Duration::from_secs(5))
            .await;
        assert_eq!(first, Err(EffectsPending::TimedOut(1)));
        assert!(
            workers.already_handed_over("uid:2", &effects),
            "pending counts"
        );
        assert!(!workers.already_handed_over("uid:3", &effects));
        assert!(
            !workers.already_handed_over("uid:2", &[]),
            "no lock effects, no claim"
        );
        gate.send_replace(true);
        workers
            .carry_out("uid:2", &effects, None, Duration::from_secs(5))
            .await
            .expect("the redelivery saw it carried out");
        assert_eq!(*lock(&locks.delivered), ["uid:2/brute/0"], "once");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_lock_queue_is_back_pressure_and_degraded_never_a_drop() {
        let metrics = Arc::new(Metrics::new());
        let (locks, gate) = recording(0);
        let (alerts, _alerts_gate) = recording(0);
        gate.send_replace(false);
        let workers = EffectWorkers::start(locks.clone(), alerts, 1, metrics.clone());
        // The worker takes the first and blocks on the shut sink; the second fills the queue.
        let mut results = Vec::new();
        for n in 0..3 {
            results.push(
                workers
                    .carry_out(
                        &format!("uid:{n}"),
                        &[lock_effect("brute", "x")],
                        None,
                        Duration::from_millis(10),
                    )
                    .await,
            );
        }
        assert_eq!(results[2], Err(EffectsPending::QueueFull(1)), "{results:?}");
        assert!(workers.degraded().is_some_and(|d| d.contains("full")));
        gate.send_replace(true);
        for n in 0..3 {
            workers
                .carry_out(
                    &format!("uid:{n}"),
                    &[lock_effect("brute", "x")],
                    None,
                    Duration::from_secs(5),
                )
                .await
                .expect("every refused one is carried out on redelivery");
        }
        let mut delivered = lock(&locks.delivered).clone();
        delivered.sort();
        assert_eq!(
            delivered,
            ["uid:0/brute/0", "uid:1/brute/0", "uid:2/brute/0"]
        );
        assert_eq!(workers.degraded(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_alert_queue_drops_the_oldest_and_never_waits() {
        let metrics = Arc::new(Metrics::new());
        let (locks, _gate) = recording(0);
        let (alerts, alerts_gate) = recording(0);
        alerts_gate.send_replace(false);
        let workers = EffectWorkers::start(locks, alerts.clone(), 2, metrics.clone());
        for n in 0..6 {
            // Returns at once although the sink is shut.
            workers
                .carry_out(
                    &format!("uid:{n}"),
                    &[alert("watch", "m")],
                    Some(&[]),
                    Duration::ZERO,
                )
                .await
                .expect("alerts never hold an event");
            tokio::task::yield_now().await;
        }
        assert!(counter(&metrics, "best_effort", "dropped") >= 3);
        alerts_gate.send_replace(true);
        // Wait for the worker to drain what is left (the newest ones); bounded, so a worker that
        // never gets there fails the test instead of hanging it.
        for _ in 0..10_000 {
            if counter(&metrics, "best_effort", "delivered") >= 3 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(counter(&metrics, "best_effort", "delivered"), 3);
        let delivered = lock(&alerts.delivered).clone();
        assert!(
            delivered.contains(&"uid:5/watch/0".to_string()),
            "{delivered:?}"
        );
        assert!(
            !delivered.contains(&"uid:1/watch/0".to_string()),
            "{delivered:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_lock_the_backend_refuses_for_good_does_not_hold_up_the_next_ones() {
        let metrics = Arc::new(Metrics::new());
        let (locks, _gate) = recording(0);
        let (alerts, _alerts_gate) = recording(0);
        let workers = EffectWorkers::start(locks.clone(), alerts, 4, metrics.clone());
        workers
            .carry_out(
                "uid:r#1",
                &[lock_effect("refused", "x")],
                None,
                Duration::from_secs(5),
            )
            .await
            .expect("a refused effect ends its wait");
        assert_eq!(counter(&metrics, "must_deliver", "rejected"), 1);
        assert_eq!(
            counter(&metrics, "must_deliver", "retried"),
            0,
            "not retried"
        );
        assert!(
            workers
                .degraded()
                .is_some_and(|d| d.contains("no such user"))
        );
        workers
            .carry_out(
                "uid:r#2",
                &[lock_effect("brute", "y")],
                None,
                Duration::from_secs(5),
            )
            .await
            .expect("the next lock goes through");
        assert_eq!(*lock(&locks.delivered), ["uid:r#2/brute/0"]);
        assert_eq!(workers.degraded(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn shadow_effects_are_recorded_only() {
        let metrics = Arc::new(Metrics::new());
        let (locks, _gate) = recording(0);
        let (alerts, _alerts_gate) = recording(0);
        let workers = EffectWorkers::start(locks.clone(), alerts, 4, metrics.clone());
        workers
            .carry_out(
                "uid:9",
                &[],
                Some(&[lock_effect("trial", "x")]),
                Duration::ZERO,
            )
            .await
            .expect("nothing to wait for");
        assert!(lock(&locks.delivered).is_empty());
        let shadow = metrics
            .effects
            .get_or_create(&EffectLabels {
                kind: "create_lock",
                mode: "shadow",
            })
            .get();
        assert_eq!(shadow, 1);
    }
}
