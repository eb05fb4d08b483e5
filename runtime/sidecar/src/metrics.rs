//! The sidecar's metrics: typed families in one `prometheus-client` registry, served on the admin
//! listener's `/metrics` in the OpenMetrics text format (which Prometheus scrapes as is).
//!
//! Label values are `&'static str` or a shared plugin name, so counting an event takes no
//! allocation and no lock other than the one family's read lock.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

/// Upper bounds (seconds) of the stream-lag histogram: from a second to a day behind.
const LAG_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0, 86400.0,
];

/// What one plugin did with an event, as `eventplug_plugin_events_total{result}`.
pub const STEP_RESULTS: [&str; 5] = ["not_selected", "forwarded", "modified", "skipped", "failed"];

/// A plugin's name as a label value, shared so that labelling costs no allocation.
pub type PluginName = Arc<String>;

/// `{result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// The final result of an event (forwarded, modified, skipped, …).
    pub result: &'static str,
}

/// `{path}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabel {
    /// audit or session.
    pub path: &'static str,
}

/// `{plugin}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    /// The plugin's name.
    pub plugin: PluginName,
}

/// `{plugin, mode, result}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginStepLabels {
    /// The plugin's name.
    pub plugin: PluginName,
    /// enforce or shadow.
    pub mode: &'static str,
    /// What the plugin did.
    pub result: &'static str,
}

/// `{plugin, reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginReasonLabels {
    /// The plugin's name.
    pub plugin: PluginName,
    /// Why it failed.
    pub reason: &'static str,
}

/// `{plugin, digest}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginDigestLabels {
    /// The plugin's name.
    pub plugin: String,
    /// The digest that runs (empty when none does).
    pub digest: String,
}

/// `{reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why.
    pub reason: &'static str,
}

/// `{phase}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    /// head, body or idle.
    pub phase: &'static str,
}

/// `{policy}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabel {
    /// quarantine, forward or block.
    pub policy: &'static str,
}

/// `{outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// What came of it.
    pub outcome: &'static str,
}

/// `{source}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// `file` (the mounted config) or `api` (the copy read through the Kubernetes API).
    pub source: &'static str,
}

/// `{kind, mode}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EffectLabels {
    /// alert, create_lock or delete_lock.
    pub kind: &'static str,
    /// enforce or shadow.
    pub mode: &'static str,
}

/// `{class, outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EffectDeliveryLabels {
    /// must_deliver or best_effort.
    pub class: &'static str,
    /// delivered, retried, dropped, timed_out, queue_full.
    pub outcome: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type SecondsCounter = Counter<f64, AtomicU64>;
type SecondsGauge = Gauge<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS.iter().copied())
}

/// Registers metrics and hands them back.
struct Registrar<'a>(&'a mut Registry);

impl Registrar<'_> {
    fn metric<M: prometheus_client::registry::Metric + Clone>(
        &mut self,
        name: &str,
        help: &str,
        metric: M,
    ) -> M {
        self.0.register(name, help, metric.clone());
        metric
    }
}

/// The sidecar's metrics. Every field is a handle into `registry`.
pub struct Metrics {
    registry: Registry,
    /// Events received from event-handler, by path kind.
    pub events_received: Family<PathLabel, Counter>,
    /// Events by final result.
    pub events: Family<ResultLabel, Counter>,
    /// What each plugin did with each event.
    pub plugin_events: Family<PluginStepLabels, Counter>,
    /// Plugin failures by reason.
    pub plugin_failures: Family<PluginReasonLabels, Counter>,
    /// Time of one plugin call, including waiting for an instance.
    pub plugin_duration: HistogramFamily<PluginLabel>,
    /// Time calls waited for a free instance.
    pub instance_wait: Family<PluginLabel, SecondsCounter>,
    /// Time of one forward to the upstream.
    pub upstream_duration: Histogram,
    /// Forwards that did not end in 200, by reason.
    pub upstream_errors: Family<ReasonLabel, Counter>,
    /// Poison events the quarantine did not take.
    pub quarantine_failures: Counter,
    /// Connections over `listen.maxConnections`.
    pub connections_refused: Counter,
    /// Connections closed by a `listen` timeout, by phase.
    pub connections_timed_out: Family<PhaseLabel, Counter>,
    /// Events the poison policy was applied to, by policy.
    pub poison_events: Family<PolicyLabel, Counter>,
    /// Effects declared by delivered events, by kind and mode.
    pub effects: Family<EffectLabels, Counter>,
    /// What became of effects handed to the delivery workers.
    pub effect_deliveries: Family<EffectDeliveryLabels, Counter>,
    /// Config reloads by outcome.
    pub reloads: Family<OutcomeLabel, Counter>,
    /// Configs applied, by the source they were read from.
    pub configs_applied: Family<SourceLabel, Counter>,
    /// 1 when a plugin's configured version runs, 0 when it failed to load.
    pub plugin_loaded: Family<PluginDigestLabels, Gauge>,
    /// Configs applied since start.
    pub config_generation: Gauge,
    /// Age of each forwarded event when the upstream accepted it (now − its `time`).
    pub stream_lag: Histogram,
    /// `time` of the newest event forwarded, as Unix seconds.
    pub newest_forwarded_event: SecondsGauge,
    /// Bytes of compiled modules in the disk cache.
    pub module_cache_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every family, registered.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let mut add = Registrar(&mut registry);
        Self {
            events_received: add.metric(
                "eventplug_events_received",
                "Events received from event-handler, by path kind",
                Family::default(),
            ),
            events: add.metric(
                "eventplug_events",
                "Events by final result: forwarded, modified, skipped, failed, quarantined, replayed, rejected, refused",
                Family::default(),
            ),
            plugin_events: add.metric(
                "eventplug_plugin_events",
                "Events per plugin by its result: forwarded, modified, skipped, failed, not_selected (shadow plugins labelled mode=shadow)",
                Family::default(),
            ),
            plugin_failures: add.metric(
                "eventplug_plugin_failures",
                "Plugin failures by reason",
                Family::default(),
            ),
            plugin_duration: add.metric(
                "eventplug_plugin_duration_seconds",
                "Time of one plugin call, including waiting for an instance",
                Family::new_with_constructor(latency_histogram),
            ),
            instance_wait: add.metric(
                "eventplug_instance_wait_seconds",
                "Time calls of the plugin waited for a free instance",
                Family::default(),
            ),
            upstream_duration: add.metric(
                "eventplug_upstream_duration_seconds",
                "Time of one forward to the upstream",
                latency_histogram(),
            ),
            upstream_errors: add.metric(
                "eventplug_upstream_errors",
                "Forwards that did not end in 200, by reason",
                Family::default(),
            ),
            quarantine_failures: add.metric(
                "eventplug_quarantine_failures",
                "Poison events the quarantine did not take (each stays unacknowledged)",
                Counter::default(),
            ),
            connections_refused: add.metric(
                "eventplug_connections_refused",
                "Connections over listen.maxConnections, answered 503",
                Counter::default(),
            ),
            connections_timed_out: add.metric(
                "eventplug_connections_timed_out",
                "Connections closed by a listen timeout, by phase (head, body, idle)",
                Family::default(),
            ),
            poison_events: add.metric(
                "eventplug_poison_events",
                "Events the poison policy was applied to, by policy",
                Family::default(),
            ),
            effects: add.metric(
                "eventplug_effects",
                "Effects of delivered events, by kind and mode (shadow effects are only recorded)",
                Family::default(),
            ),
            effect_deliveries: add.metric(
                "eventplug_effect_deliveries",
                "Effects handed to the delivery workers, by class and what became of them",
                Family::default(),
            ),
            reloads: add.metric(
                "eventplug_reloads",
                "Config reloads by outcome",
                Family::default(),
            ),
            configs_applied: add.metric(
                "eventplug_configs_applied",
                "Configs applied, by the source they were read from (file: the mounted config; api: the copy read through the Kubernetes API)",
                Family::default(),
            ),
            plugin_loaded: add.metric(
                "eventplug_plugin_loaded",
                "1 when the plugin's configured version runs, 0 when it failed to load (a last good version may run)",
                Family::default(),
            ),
            config_generation: add.metric(
                "eventplug_config_generation",
                "How many configs have been applied since start",
                Gauge::default(),
            ),
            stream_lag: add.metric(
                "eventplug_stream_lag_seconds",
                "Age of each forwarded event when the upstream accepted it: now minus the event's time",
                Histogram::new(LAG_BUCKETS.iter().copied()),
            ),
            newest_forwarded_event: add.metric(
                "eventplug_newest_forwarded_event_time_seconds",
                "The time of the newest event forwarded, in Unix seconds",
                SecondsGauge::default(),
            ),
            module_cache_bytes: add.metric(
                "eventplug_module_cache_bytes",
                "Bytes of compiled modules in the disk cache",
                Gauge::default(),
            ),
            registry,
        }
    }

    /// Counts one event of final result `result`.
    pub fn event(&self, result: &'static str) {
        self.events.get_or_create(&ResultLabel { result }).inc();
    }

    /// Counts one reload of `outcome`.
    pub fn reload(&self, outcome: &'static str) {
        self.reloads.get_or_create(&OutcomeLabel { outcome }).inc();
    }

    /// Counts one effect of `class` that ended in `outcome`.
    pub fn effect_delivery(&self, class: &'static str, outcome: &'static str) {
        self.effect_deliveries
            .get_or_create(&EffectDeliveryLabels { class, outcome })
            .inc();
    }

    /// Records the delivery of an event written at `event_time` (Unix seconds).
    pub fn forwarded_event_time(&self, event_time: f64) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or_default();
        // A clock ahead of the sidecar's is no lag, not a negative one.
        self.stream_lag.observe((now - event_time).max(0.0));
        // Only ever forward: a redelivered old event does not move the gauge back, and a time
        // ahead of the sidecar's clock counts as now, so one event stamped in the future cannot
        // hold the gauge up and hide real lag. The gauge keeps an f64's bits, which order like
        // the numbers for times after 1970.
        let newest = event_time.min(now);
        if newest > 0.0 {
            self.newest_forwarded_event
                .inner()
                .fetch_max(newest.to_bits(), std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Sets which digest of `plugin` runs, removing the series of the digest it replaced.
    pub fn plugin_loaded(&self, plugin: &str, previous: Option<&str>, now: Option<&str>, ok: bool) {
        if let Some(previous) = previous
            && Some(previous) != now
        {
            self.plugin_loaded.remove(&PluginDigestLabels {
                plugin: plugin.to_string(),
                digest: previous.to_string(),
            });
        }
        self.plugin_loaded
            .get_or_create(&PluginDigestLabels {
                plugin: plugin.to_string(),
                digest: now.unwrap_or_default().to_string(),
            })
            .set(i64::from(ok));
    }

    /// Forgets every series of a plugin that left the config.
    pub fn plugin_removed(&self, plugin: &str, digest: Option<&str>) {
        self.plugin_loaded.remove(&PluginDigestLabels {
            plugin: plugin.to_string(),
            digest: digest.unwrap_or_default().to_string(),
        });
        let name: PluginName = Arc::new(plugin.to_string());
        let label = PluginLabel {
            plugin: name.clone(),
        };
        self.plugin_duration.remove(&label);
        self.instance_wait.remove(&label);
        for mode in ["enforce", "shadow"] {
            for result in STEP_RESULTS {
                self.plugin_events.remove(&PluginStepLabels {
                    plugin: name.clone(),
                    mode,
                    result,
                });
            }
        }
        for reason in eventplug_runtime::engine::CallError::REASONS {
            self.plugin_failures.remove(&PluginReasonLabels {
                plugin: name.clone(),
                reason,
            });
        }
    }

    /// Records one call's duration for `plugin`.
    pub fn plugin_call(&self, plugin: &PluginName, elapsed: Duration, waited: Duration) {
        let label = PluginLabel {
            plugin: plugin.clone(),
        };
        self.plugin_duration
            .get_or_create(&label)
            .observe(elapsed.as_secs_f64());
        if !waited.is_zero() {
            self.instance_wait
                .get_or_create(&label)
                .inc_by(waited.as_secs_f64());
        }
    }

    /// Everything, in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "cannot render the metrics");
        }
        text
    }
}

/// The content type of `Metrics::render`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_cumulative_histograms() {
        let metrics = Metrics::new();
        metrics.event("forwarded");
        metrics.event("forwarded");
        metrics.event("forwarded");
        metrics.plugin_loaded("redact", None, Some("sha256:1"), true);
        metrics.upstream_duration.observe(0.000_3);
        metrics.upstream_duration.observe(2.0);
        let text = metrics.render();
        assert!(
            text.contains(
                "# TYPE eventplug_events counter\neventplug_events_total{result=\"forwarded\"} 3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("eventplug_plugin_loaded{plugin=\"redact\",digest=\"sha256:1\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("eventplug_upstream_duration_seconds_bucket{le=\"0.0005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("eventplug_upstream_duration_seconds_bucket{le=\"1.0\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("eventplug_upstream_duration_seconds_bucket{le=\"+Inf\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("eventplug_upstream_duration_seconds_count 2\n"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn an_upgraded_plugin_keeps_only_its_running_digest() {
        let metrics = Metrics::new();
        metrics.plugin_loaded("redact", None, Some("sha256:old"), true);
        metrics.plugin_loaded("redact", Some("sha256:old"), Some("sha256:new"), true);
        let text = metrics.render();
        assert!(!text.contains("sha256:old"), "{text}");
        assert!(text.contains("digest=\"sha256:new\"} 1"), "{text}");
        let name: PluginName = Arc::new("redact".into());
        metrics.plugin_call(&name, Duration::from_millis(1), Duration::from_millis(1));
        metrics
            .plugin_events
            .get_or_create(&PluginStepLabels {
                plugin: name.clone(),
                mode: "shadow",
                result: "skipped",
            })
            .inc();
        metrics
            .plugin_failures
            .get_or_create(&PluginReasonLabels {
                plugin: name,
                reason: "timeout",
            })
            .inc();
        metrics.plugin_removed("redact", Some("sha256:new"));
        let text = metrics.render();
        assert!(
            !text.contains("redact"),
            "series of a removed plugin stay: {text}"
        );
    }

    #[test]
    fn wait_time_is_a_seconds_counter_and_lag_follows_the_newest_event() {
        let metrics = Metrics::new();
        let plugin: PluginName = Arc::new("slow".into());
        metrics.plugin_call(
            &plugin,
            Duration::from_millis(3),
            Duration::from_millis(250),
        );
        metrics.plugin_call(
            &plugin,
            Duration::from_millis(3),
            Duration::from_millis(250),
        );
        let text = metrics.render();
        assert!(
            text.contains("# TYPE eventplug_instance_wait_seconds counter\neventplug_instance_wait_seconds_total{plugin=\"slow\"} 0.5\n"),
            "{text}"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs_f64();
        metrics.forwarded_event_time(now - 120.0);
        metrics.forwarded_event_time(now - 7200.0);
        assert_eq!(metrics.newest_forwarded_event.get(), now - 120.0);
        // A time far in the future counts as now.
        metrics.forwarded_event_time(now + 1e9);
        assert!(metrics.newest_forwarded_event.get() < now + 3600.0);
        // Two minutes behind, two hours behind, and the future one at 0: the 300 s bucket holds
        // the first and the last.
        let text = metrics.render();
        assert!(
            text.contains("eventplug_stream_lag_seconds_bucket{le=\"300.0\"} 2\n"),
            "{text}"
        );
    }
}
