//! Prometheus metrics from a registry the app owns (no global registry), names in base units,
//! labels bounded: route templates, methods, status classes, environments from configuration.
//! Never tokens, never raw paths.

use std::sync::OnceLock;

mod families;

use families::{requests_metrics, snapshots_metrics, upstream_metrics, usage_metrics};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Latency buckets, in seconds: an in-memory proxy answers in microseconds to milliseconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Upstream latency buckets, in seconds: a remote server over a network.
const UPSTREAM_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Methods given their own label value; anything else is "other".
const METHODS: [&str; 5] = ["GET", "HEAD", "POST", "OPTIONS", "other"];
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    /// Pre-resolved children of the vectors above, filled on first use: the hot path does no
    /// label hashing and no locking.
    request_counters: Vec<OnceLock<IntCounter>>,
    duration_histograms: Vec<OnceLock<Histogram>>,
    route_labels: &'static [&'static str],
    pub token_decisions: IntCounterVec,
    pub snapshot_features: IntGaugeVec,
    pub snapshot_last_load: GaugeVec,
    pub snapshot_load_failures: IntCounterVec,
    pub connections_open: IntGauge,
    pub requests_in_flight: IntGauge,
    pub ready: Gauge,
    upstream_requests: IntCounterVec,
    upstream_duration: HistogramVec,
    pub token_cache_entries: IntGaugeVec,
    pub token_validations: IntCounterVec,
    pub refresh_failures: IntCounterVec,
    pub last_sync: GaugeVec,
    pub snapshot_age: GaugeVec,
    pub usage_rows_received: IntCounterVec,
    pub usage_rows_forwarded: IntCounter,
    pub usage_rows_dropped: IntCounterVec,
    pub usage_evaluations: IntCounterVec,
    pub usage_registrations: IntCounterVec,
    pub usage_registrations_dropped: IntCounterVec,
    pub usage_buffer_entries: IntGauge,
    pub usage_buffer_bytes: IntGauge,
    pub flag_evaluations: IntCounterVec,
    pub shed: IntCounterVec,
    pub tls_reloads: IntCounterVec,
    pub snapshot_emptied: IntCounterVec,
    pub startup_tokens_usable: IntGaugeVec,
    pub validate_budget_refused: IntCounterVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels)
        // Static names and labels: this cannot fail (tested by `renders_every_family`).
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    registry
        .register(Box::new(v.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    v
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| unreachable!("metric registration: {e}"));
    c
}

impl Metrics {
    /// `routes` are the route templates used as the `route` label, indexed by route id.
    pub fn new(routes: &'static [&'static str]) -> Metrics {
        let registry = Registry::new();
        let (
            http_requests,
            http_duration,
            token_decisions,
            connections_open,
            requests_in_flight,
            ready,
            shed,
            tls_reloads,
        ) = requests_metrics(&registry);
        let (
            snapshot_features,
            snapshot_last_load,
            snapshot_load_failures,
            snapshot_emptied,
            refresh_failures,
            last_sync,
            snapshot_age,
            startup_tokens_usable,
        ) = snapshots_metrics(&registry);
        let (
            upstream_requests,
            upstream_duration,
            token_cache_entries,
            token_validations,
            validate_budget_refused,
        ) = upstream_metrics(&registry);
        let (
            usage_rows_received,
            usage_rows_forwarded,
            usage_rows_dropped,
            usage_evaluations,
            usage_registrations,
            usage_registrations_dropped,
            usage_buffer_entries,
            usage_buffer_bytes,
            flag_evaluations,
        ) = usage_metrics(&registry);
        let slots = routes.len() * METHODS.len() * STATUS_CLASSES.len();
        Metrics {
            registry,
            http_requests,
            http_duration,
            request_counters: (0..slots).map(|_| OnceLock::new()).collect(),
            duration_histograms: (0..routes.len()).map(|_| OnceLock::new()).collect(),
            route_labels: routes,
            token_decisions,
            snapshot_features,
            snapshot_last_load,
            snapshot_load_failures,
            connections_open,
            requests_in_flight,
            ready,
            upstream_requests,
            upstream_duration,
            token_cache_entries,
            token_validations,
            refresh_failures,
            last_sync,
            snapshot_age,
            usage_rows_received,
            usage_rows_forwarded,
            usage_rows_dropped,
            usage_evaluations,
            usage_registrations,
            usage_registrations_dropped,
            usage_buffer_entries,
            usage_buffer_bytes,
            flag_evaluations,
            shed,
            tls_reloads,
            snapshot_emptied,
            startup_tokens_usable,
            validate_budget_refused,
        }
    }

    /// Counts one answered request and its duration.
    pub fn observe_request(&self, route: usize, method: &http::Method, status: u16, seconds: f64) {
        let m = match *method {
            http::Method::GET => 0,
            http::Method::HEAD => 1,
            http::Method::POST => 2,
            http::Method::OPTIONS => 3,
            _ => 4,
        };
        let class = usize::from((status / 100).clamp(1, 5) - 1);
        let label = self.route_labels.get(route).copied().unwrap_or("unknown");
        let slot = (route * METHODS.len() + m) * STATUS_CLASSES.len() + class;
        if let Some(cell) = self.request_counters.get(slot) {
            cell.get_or_init(|| {
                self.http_requests.with_label_values(&[
                    label,
                    METHODS.get(m).copied().unwrap_or("other"),
                    STATUS_CLASSES.get(class).copied().unwrap_or("5xx"),
                ])
            })
            .inc();
        }
        if let Some(cell) = self.duration_histograms.get(route) {
            cell.get_or_init(|| self.http_duration.with_label_values(&[label]))
                .observe(seconds);
        }
    }

    /// Counts one upstream call's outcome.
    pub fn upstream_outcome(&self, call: &'static str, outcome: &'static str) {
        self.upstream_requests
            .with_label_values(&[call, outcome])
            .inc();
    }

    /// Records how long one upstream call took.
    pub fn upstream_latency(&self, call: &'static str, seconds: f64) {
        self.upstream_duration
            .with_label_values(&[call])
            .observe(seconds);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = Metrics::new(&["/a", "/b"]);
        m.observe_request(1, &http::Method::GET, 200, 0.001);
        m.observe_request(1, &http::Method::GET, 204, 0.001);
        m.observe_request(0, &http::Method::PATCH, 503, 0.001);
        m.token_decisions.with_label_values(&["allowed"]).inc();
        m.snapshot_features
            .with_label_values(&["development"])
            .set(3);
        let text = String::from_utf8(m.render()).unwrap();
        assert!(text.contains(
            "flagpost_http_requests_total{method=\"GET\",route=\"/b\",status=\"2xx\"} 2"
        ));
        assert!(text.contains(
            "flagpost_http_requests_total{method=\"other\",route=\"/a\",status=\"5xx\"} 1"
        ));
        assert!(text.contains("flagpost_http_request_duration_seconds_count{route=\"/b\"} 2"));
        assert!(text.contains("flagpost_token_decisions_total{result=\"allowed\"} 1"));
        assert!(text.contains("flagpost_snapshot_features{environment=\"development\"} 3"));
    }
}
