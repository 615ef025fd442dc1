//! Prometheus metrics from a registry the app owns (no global registry), names in base units,
//! labels bounded: route templates, methods, status classes, environments from configuration.
//! Never tokens, never raw paths.

use std::sync::OnceLock;

mod more;
mod register;
pub use more::{More, WARNING_REASONS};

use register::{
    counter_vec, gauge_vec, histogram_vec, int_counter, int_gauge, int_gauge_vec, register,
};

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Registry, TextEncoder,
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
    pub streams_open: IntGauge,
    pub stream_events: IntCounter,
    pub stream_bytes: IntCounter,
    pub streams_closed: IntCounterVec,
    pub upstream_stream_events: IntCounter,
    pub fleet_role: IntGaugeVec,
    pub fleet_lease_changes: IntCounterVec,
    pub store_operations: IntCounterVec,
    pub frontend_conditional: IntCounterVec,
    pub log_lines_folded: IntCounter,
    pub remote_writes: IntCounterVec,
    pub more: More,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// `routes` are the route templates used as the `route` label, indexed by route id.
    pub fn new(routes: &'static [&'static str]) -> Metrics {
        let registry = Registry::new();
        let http_requests = counter_vec(
            &registry,
            "flagpost_http_requests_total",
            "HTTP requests answered, by route template, method and status class",
            &["route", "method", "status"],
        );
        let http_duration = histogram_vec(
            &registry,
            (
                "flagpost_http_request_duration_seconds",
                "Time from request head to response, by route template",
            ),
            LATENCY_BUCKETS,
            &["route"],
        );
        let token_decisions = counter_vec(
            &registry,
            "flagpost_token_decisions_total",
            "Token checks on SDK endpoints, by result",
            &["result"],
        );
        let snapshot_features = int_gauge_vec(
            &registry,
            "flagpost_snapshot_features",
            "Features in the snapshot served for each environment",
            &["environment"],
        );
        let snapshot_last_load = gauge_vec(
            &registry,
            "flagpost_snapshot_last_load_timestamp_seconds",
            "Unix time of the last successful load of each environment's features",
            &["environment"],
        );
        let snapshot_load_failures = counter_vec(
            &registry,
            "flagpost_snapshot_load_failures_total",
            "Failed attempts to load features, by source",
            &["source"],
        );
        let connections_open = int_gauge(
            &registry,
            "flagpost_connections_open",
            "Client connections open now",
        );
        let requests_in_flight = int_gauge(
            &registry,
            "flagpost_http_requests_in_flight",
            "Requests being answered now",
        );
        let ready = register(
            &registry,
            Gauge::new(
                "flagpost_ready",
                "1 when every environment has features and flagpost is not draining",
            )
            .unwrap_or_else(|e| unreachable!("gauge: {e}")),
        );
        let upstream_requests = counter_vec(
            &registry,
            "flagpost_upstream_requests_total",
            "Calls to the upstream server, by call and outcome",
            &["call", "outcome"],
        );
        let upstream_duration = histogram_vec(
            &registry,
            (
                "flagpost_upstream_request_duration_seconds",
                "Time upstream calls took, by call",
            ),
            UPSTREAM_BUCKETS,
            &["call"],
        );
        let token_cache_entries = int_gauge_vec(
            &registry,
            "flagpost_token_cache_entries",
            "Request tokens remembered, by state (valid, invalid)",
            &["state"],
        );
        let token_validations = counter_vec(
            &registry,
            "flagpost_token_validations_total",
            "Verdicts on request tokens asked of upstream, by result",
            &["result"],
        );
        let refresh_failures = counter_vec(
            &registry,
            "flagpost_refresh_failures_total",
            "Failed feature fetches, by environment and reason",
            &["environment", "reason"],
        );
        let last_sync = gauge_vec(
            &registry,
            "flagpost_last_sync_timestamp_seconds",
            "Unix time upstream last confirmed each environment's features (200 or 304)",
            &["environment"],
        );
        let snapshot_age = gauge_vec(
            &registry,
            "flagpost_snapshot_age_seconds",
            "Seconds since upstream last confirmed each environment's features",
            &["environment"],
        );
        let usage_rows_received = counter_vec(
            &registry,
            "flagpost_usage_rows_received_total",
            "Usage rows (one flag of one app) received from SDKs, by source",
            &["source"],
        );
        let usage_rows_forwarded = int_counter(
            &registry,
            "flagpost_usage_rows_forwarded_total",
            "Aggregated usage rows delivered upstream",
        );
        let usage_rows_dropped = counter_vec(
            &registry,
            "flagpost_usage_rows_dropped_total",
            "Usage rows not delivered, by reason",
            &["reason"],
        );
        let usage_evaluations = counter_vec(
            &registry,
            "flagpost_usage_evaluations_total",
            "Flag evaluations (yes + no) in usage rows, by stage: received, forwarded, dropped",
            &["stage"],
        );
        let usage_registrations = counter_vec(
            &registry,
            "flagpost_usage_registrations_received_total",
            "SDK registrations received, by source",
            &["source"],
        );
        let usage_registrations_dropped = counter_vec(
            &registry,
            "flagpost_usage_registrations_dropped_total",
            "SDK registrations not kept, by reason",
            &["reason"],
        );
        let usage_buffer_entries = int_gauge(
            &registry,
            "flagpost_usage_buffer_entries",
            "Usage rows and registrations waiting to be forwarded",
        );
        let usage_buffer_bytes = int_gauge(
            &registry,
            "flagpost_usage_buffer_bytes",
            "Estimated bytes of usage waiting to be forwarded",
        );
        let flag_evaluations = counter_vec(
            &registry,
            "flagpost_flag_evaluations_total",
            "Evaluations SDKs reported per known flag (only with usage.per_flag_metrics)",
            &["environment", "flag", "result"],
        );
        let shed = counter_vec(
            &registry,
            "flagpost_shed_total",
            "Requests and connections refused with 503 overloaded, by limit (connections, in_flight)",
            &["limit"],
        );
        let tls_reloads = counter_vec(
            &registry,
            "flagpost_tls_reloads_total",
            "Reloads of the TLS certificate after its files changed, by result (ok, failed)",
            &["result"],
        );
        let snapshot_emptied = counter_vec(
            &registry,
            "flagpost_snapshot_emptied_total",
            "Times an environment's feature list went from some features to none",
            &["environment"],
        );
        let startup_tokens_usable = int_gauge_vec(
            &registry,
            "flagpost_startup_tokens_usable",
            "Startup client tokens upstream accepts now, by environment (0: not served)",
            &["environment"],
        );
        let validate_budget_refused = counter_vec(
            &registry,
            "flagpost_validate_budget_refused_total",
            "/edge/validate requests answered 429 because their unknown tokens were over budget, by budget (caller, total)",
            &["budget"],
        );
        let streams_open = int_gauge(
            &registry,
            "flagpost_streams_open",
            "Server-Sent Events streams open to SDKs now",
        );
        let stream_events = int_counter(
            &registry,
            "flagpost_stream_events_sent_total",
            "unleash-connected and unleash-updated events written to SDK streams",
        );
        let stream_bytes = int_counter(
            &registry,
            "flagpost_stream_bytes_sent_total",
            "Bytes written to SDK streams (events and heartbeats)",
        );
        let streams_closed = counter_vec(
            &registry,
            "flagpost_streams_closed_total",
            "SDK streams ended, by reason (client, slow, revoked, scope, drain, shutdown)",
            &["reason"],
        );
        let upstream_stream_events = int_counter(
            &registry,
            "flagpost_upstream_stream_events_total",
            "Events received on the upstream stream (edge --streaming)",
        );
        let fleet_role = int_gauge_vec(
            &registry,
            "flagpost_fleet_role",
            "1 for this instance's role in the fleet (poller, follower, solo)",
            &["role"],
        );
        let fleet_lease_changes = counter_vec(
            &registry,
            "flagpost_fleet_lease_changes_total",
            "Changes of the fleet's polling lease seen by this instance (acquired, lost, released)",
            &["change"],
        );
        let store_operations = counter_vec(
            &registry,
            "flagpost_store_operations_total",
            "Calls to the shared store (Redis), by operation (lease, read, write, verdict, publish, subscribe) and outcome (ok, error, timeout, bad_data)",
            &["operation", "outcome"],
        );
        let frontend_conditional = counter_vec(
            &registry,
            "flagpost_frontend_answers_total",
            "Frontend API list answers by how they were made: remembered (304, nothing evaluated), spliced (304, only the flags chance decides evaluated), evaluated",
            &["how"],
        );
        let remote_writes = counter_vec(
            &registry,
            "flagpost_remote_write_total",
            "Pushes of these metrics to the Prometheus remote-write URL, by outcome",
            &["outcome"],
        );
        let log_lines_folded = int_counter(
            &registry,
            "flagpost_log_lines_folded_total",
            "Log lines client requests would have caused beyond log.request_lines_per_minute, folded into the minute's summary",
        );
        let slots = routes.len() * METHODS.len() * STATUS_CLASSES.len();
        let more = More::new(&registry);
        let metrics = Metrics {
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
            streams_open,
            stream_events,
            stream_bytes,
            streams_closed,
            upstream_stream_events,
            fleet_role,
            fleet_lease_changes,
            store_operations,
            frontend_conditional,
            log_lines_folded,
            remote_writes,
            more,
        };
        metrics.zero_known_series();
        metrics
    }

    /// Every series whose label values are known in advance starts at 0, so that rates and
    /// dashboards work from the first scrape (a series that appears only on its first event
    /// hides that event from `rate()`).
    fn zero_known_series(&self) {
        for result in [
            "allowed",
            "missing",
            "invalid",
            "wrong_type",
            "scope_not_covered",
            "upstream_unavailable",
        ] {
            self.token_decisions.with_label_values(&[result]);
        }
        for limit in ["connections", "in_flight"] {
            self.shed.with_label_values(&[limit]);
        }
        for reason in [
            "buffer_full",
            "rejected",
            "no_token",
            "environment_mismatch",
            "too_large",
            "offline",
            "shutdown",
        ] {
            self.usage_rows_dropped.with_label_values(&[reason]);
        }
        for reason in ["client", "slow", "revoked", "scope", "drain", "shutdown"] {
            self.streams_closed.with_label_values(&[reason]);
        }
        for how in ["remembered", "spliced", "evaluated"] {
            self.frontend_conditional.with_label_values(&[how]);
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

    /// Every metric family, as gathered for exposition (remote write encodes them itself).
    pub fn families(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.registry.gather()
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
mod tests;
