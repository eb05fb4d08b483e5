//! Counters and histograms of the sidecar, written in Prometheus' text format on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    total: u64,
}

#[derive(Default)]
struct Families {
    counters: BTreeMap<(&'static str, Labels), u64>,
    gauges: BTreeMap<(&'static str, Labels), f64>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
}

/// The sidecar's metrics.
#[derive(Default)]
pub struct Metrics {
    families: Mutex<Families>,
}

/// What each metric means, for `# HELP`.
const HELP: &[(&str, &str)] = &[
    (
        "eventplug_events_received_total",
        "Events received from event-handler, by path kind.",
    ),
    (
        "eventplug_events_total",
        "Events by final result: forwarded, modified, skipped, failed, quarantined, replayed, rejected.",
    ),
    (
        "eventplug_plugin_events_total",
        "Events per plugin by its result: forwarded, modified, skipped, failed, not_selected (shadow plugins labelled mode=shadow).",
    ),
    (
        "eventplug_plugin_failures_total",
        "Plugin failures by reason.",
    ),
    (
        "eventplug_plugin_duration_seconds",
        "Time of one plugin call, including waiting for an instance.",
    ),
    (
        "eventplug_instance_wait_seconds",
        "Total time calls of the plugin have waited for a free instance since it loaded.",
    ),
    (
        "eventplug_upstream_duration_seconds",
        "Time of one forward to the upstream.",
    ),
    (
        "eventplug_upstream_errors_total",
        "Forwards that did not end in 200, by reason.",
    ),
    (
        "eventplug_poison_events_total",
        "Events the poison policy was applied to, by policy.",
    ),
    (
        "eventplug_effects_total",
        "Effects declared, by kind and whether carried out or recorded (shadow).",
    ),
    ("eventplug_reloads_total", "Config reloads by outcome."),
    (
        "eventplug_plugin_loaded",
        "1 when the plugin's configured version runs, 0 when it failed to load (a last good version may run).",
    ),
    (
        "eventplug_config_generation",
        "How many configs have been applied since start.",
    ),
];

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_string())).collect()
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn write_labels(out: &mut String, labels: &Labels, extra: Option<(&str, String)>) {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if !parts.is_empty() {
        let _ = write!(out, "{{{}}}", parts.join(","));
    }
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Families> {
        self.families.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `by` to a counter.
    pub fn add(&self, name: &'static str, pairs: &[(&'static str, &str)], by: u64) {
        *self
            .lock()
            .counters
            .entry((name, labels(pairs)))
            .or_default() += by;
    }

    /// Adds one to a counter.
    pub fn inc(&self, name: &'static str, pairs: &[(&'static str, &str)]) {
        self.add(name, pairs, 1);
    }

    /// Sets a gauge.
    pub fn set(&self, name: &'static str, pairs: &[(&'static str, &str)], value: f64) {
        self.lock().gauges.insert((name, labels(pairs)), value);
    }

    /// Records one observation in a histogram.
    pub fn observe(&self, name: &'static str, pairs: &[(&'static str, &str)], value: Duration) {
        let seconds = value.as_secs_f64();
        let mut families = self.lock();
        let histogram = families
            .histograms
            .entry((name, labels(pairs)))
            .or_default();
        if histogram.counts.is_empty() {
            histogram.counts = vec![0; BUCKETS.len()];
        }
        for (count, bound) in histogram.counts.iter_mut().zip(BUCKETS) {
            if seconds <= *bound {
                *count += 1;
            }
        }
        histogram.sum += seconds;
        histogram.total += 1;
    }

    /// The value of a counter (for tests and status).
    pub fn counter(&self, name: &'static str, pairs: &[(&'static str, &str)]) -> u64 {
        self.lock()
            .counters
            .get(&(name, labels(pairs)))
            .copied()
            .unwrap_or(0)
    }

    /// Everything in Prometheus' text exposition format.
    pub fn render(&self) -> String {
        let families = self.lock();
        let mut out = String::new();
        let mut announced = std::collections::HashSet::new();
        let mut announce = |out: &mut String, name: &'static str, kind: &str| {
            if announced.insert(name) {
                let help = HELP.iter().find(|(n, _)| *n == name).map_or("", |(_, h)| h);
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            }
        };
        for ((name, labels), value) in &families.counters {
            announce(&mut out, name, "counter");
            out.push_str(name);
            write_labels(&mut out, labels, None);
            let _ = writeln!(out, " {value}");
        }
        for ((name, labels), value) in &families.gauges {
            announce(&mut out, name, "gauge");
            out.push_str(name);
            write_labels(&mut out, labels, None);
            let _ = writeln!(out, " {value}");
        }
        for ((name, labels), histogram) in &families.histograms {
            announce(&mut out, name, "histogram");
            for (count, bound) in histogram.counts.iter().zip(BUCKETS) {
                let _ = write!(out, "{name}_bucket");
                write_labels(&mut out, labels, Some(("le", bound.to_string())));
                let _ = writeln!(out, " {count}");
            }
            let _ = write!(out, "{name}_bucket");
            write_labels(&mut out, labels, Some(("le", "+Inf".into())));
            let _ = writeln!(out, " {}", histogram.total);
            let _ = write!(out, "{name}_sum");
            write_labels(&mut out, labels, None);
            let _ = writeln!(out, " {}", histogram.sum);
            let _ = write!(out, "{name}_count");
            write_labels(&mut out, labels, None);
            let _ = writeln!(out, " {}", histogram.total);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_cumulative_histograms() {
        let metrics = Metrics::default();
        metrics.inc("eventplug_events_total", &[("result", "forwarded")]);
        metrics.add("eventplug_events_total", &[("result", "forwarded")], 2);
        metrics.set("eventplug_plugin_loaded", &[("plugin", "a\"b")], 1.0);
        metrics.observe(
            "eventplug_upstream_duration_seconds",
            &[],
            Duration::from_micros(300),
        );
        metrics.observe(
            "eventplug_upstream_duration_seconds",
            &[],
            Duration::from_secs(2),
        );
        let text = metrics.render();
        assert!(text.contains("# TYPE eventplug_events_total counter\neventplug_events_total{result=\"forwarded\"} 3\n"), "{text}");
        assert!(
            text.contains("eventplug_plugin_loaded{plugin=\"a\\\"b\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("eventplug_upstream_duration_seconds_bucket{le=\"0.0005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("eventplug_upstream_duration_seconds_bucket{le=\"1\"} 1\n"),
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
        assert_eq!(
            metrics.counter("eventplug_events_total", &[("result", "forwarded")]),
            3
        );
    }
}
