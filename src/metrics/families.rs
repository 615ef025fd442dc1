//! Every metric family flagpost exports, registered by theme. Names in base units; labels
//! bounded.

use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry,
};

use super::{counter_vec, register, LATENCY_BUCKETS, UPSTREAM_BUCKETS};

/// Requests, connections, readiness, shedding and TLS reloads.
type RequestMetrics = (
    IntCounterVec,
    HistogramVec,
    IntCounterVec,
    IntGauge,
    IntGauge,
    Gauge,
    IntCounterVec,
    IntCounterVec,
);

/// Snapshots and the refresh that keeps them current.
type SnapshotMetrics = (
    IntGaugeVec,
    GaugeVec,
    IntCounterVec,
    IntCounterVec,
    IntCounterVec,
    GaugeVec,
    GaugeVec,
    IntGaugeVec,
);

/// Calls to the upstream and token validation.
type UpstreamMetrics = (
    IntCounterVec,
    HistogramVec,
    IntGaugeVec,
    IntCounterVec,
    IntCounterVec,
);

/// SDK usage received, forwarded and dropped.
type UsageMetrics = (
    IntCounterVec,
    IntCounter,
    IntCounterVec,
    IntCounterVec,
    IntCounterVec,
    IntCounterVec,
    IntGauge,
    IntGauge,
    IntCounterVec,
);

/// Requests, connections, readiness, shedding and TLS reloads.
pub(super) fn requests_metrics(registry: &Registry) -> RequestMetrics {
    let http_requests = counter_vec(
        registry,
        "flagpost_http_requests_total",
        "HTTP requests answered, by route template, method and status class",
        &["route", "method", "status"],
    );
    let http_duration = register(
        registry,
        HistogramVec::new(
            HistogramOpts::new(
                "flagpost_http_request_duration_seconds",
                "Time from request head to response, by route template",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .unwrap_or_else(|e| unreachable!("histogram: {e}")),
    );
    let token_decisions = counter_vec(
        registry,
        "flagpost_token_decisions_total",
        "Token checks on SDK endpoints, by result",
        &["result"],
    );
    let connections_open = register(
        registry,
        IntGauge::new("flagpost_connections_open", "Client connections open now")
            .unwrap_or_else(|e| unreachable!("gauge: {e}")),
    );
    let requests_in_flight = register(
        registry,
        IntGauge::new(
            "flagpost_http_requests_in_flight",
            "Requests being answered now",
        )
        .unwrap_or_else(|e| unreachable!("gauge: {e}")),
    );
    let ready = register(
        registry,
        Gauge::new(
            "flagpost_ready",
            "1 when every environment has features and flagpost is not draining",
        )
        .unwrap_or_else(|e| unreachable!("gauge: {e}")),
    );
    let shed = counter_vec(
        registry,
        "flagpost_shed_total",
        "Requests and connections refused with 503 overloaded, by limit (connections, in_flight)",
        &["limit"],
    );
    let tls_reloads = counter_vec(
        registry,
        "flagpost_tls_reloads_total",
        "Reloads of the TLS certificate after its files changed, by result (ok, failed)",
        &["result"],
    );
    (
        http_requests,
        http_duration,
        token_decisions,
        connections_open,
        requests_in_flight,
        ready,
        shed,
        tls_reloads,
    )
}

/// Snapshots and the refresh that keeps them current.
pub(super) fn snapshots_metrics(registry: &Registry) -> SnapshotMetrics {
    let snapshot_features = register(
        registry,
        IntGaugeVec::new(
            Opts::new(
                "flagpost_snapshot_features",
                "Features in the snapshot served for each environment",
            ),
            &["environment"],
        )
        .unwrap_or_else(|e| unreachable!("gauge: {e}")),
    );
    let snapshot_last_load = register(
        registry,
        GaugeVec::new(
            Opts::new(
                "flagpost_snapshot_last_load_timestamp_seconds",
                "Unix time of the last successful load of each environment's features",
            ),
            &["environment"],
        )
        .unwrap_or_else(|e| unreachable!("gauge: {e}")),
    );
    let snapshot_load_failures = counter_vec(
        registry,
        "flagpost_snapshot_load_failures_total",
        "Failed attempts to load features, by source",
        &["source"],
    );
    let snapshot_emptied = counter_vec(
        registry,
        "flagpost_snapshot_emptied_total",
        "Times an environment's feature list went from some features to none",
        &["environment"],
    );
    let refresh_failures = counter_vec(
        registry,
        "flagpost_refresh_failures_total",
        "Failed feature fetches, by environment and reason",
        &["environment", "reason"],
    );
    let last_sync = register(
        registry,
        GaugeVec::new(
            Opts::new(
                "flagpost_last_sync_timestamp_seconds",
                "Unix time upstream last confirmed each environment's features (200 or 304)",
            ),
            &["environment"],
        )
        .unwrap_or_else(|e| unreachable!("gauge: {e}")),
    );
    let snapshot_age = register(
        registry,
        GaugeVec::new(
            Opts::new(
                "flagpost_snapshot_age_seconds",
                "Seconds since upstream last confirmed each environment's features",
            ),
            &["environment"],
        )
        .unwrap_or_else(|e| unreachable!("gauge: {e}")),
    );
    let startup_tokens_usable = register(
        registry,
        IntGaugeVec::new(
            Opts::new(
                "flagpost_startup_tokens_usable",
                "Startup client tokens upstream accepts now, by environment (0: not served)",
            ),
            &["environment"],
        )
        .unwrap_or_else(|e| unreachable!("gauge: {e}")),
    );
    (
        snapshot_features,
        snapshot_last_load,
        snapshot_load_failures,
        snapshot_emptied,
        refresh_failures,
        last_sync,
        snapshot_age,
        startup_tokens_usable,
    )
}

/// Calls to the upstream and token validation.
pub(super) fn upstream_metrics(registry: &Registry) -> UpstreamMetrics {
    let upstream_requests = counter_vec(
        registry,
        "flagpost_upstream_requests_total",
        "Calls to the upstream server, by call and outcome",
        &["call", "outcome"],
    );
    let upstream_duration = register(
        registry,
        HistogramVec::new(
            HistogramOpts::new(
                "flagpost_upstream_request_duration_seconds",
                "Time upstream calls took, by call",
            )
            .buckets(UPSTREAM_BUCKETS.to_vec()),
            &["call"],
        )
        .unwrap_or_else(|e| unreachable!("histogram: {e}")),
    );
    let token_cache_entries = register(
        registry,
        IntGaugeVec::new(
            Opts::new(
                "flagpost_token_cache_entries",
                "Request tokens remembered, by state (valid, invalid)",
            ),
            &["state"],
        )
        .unwrap_or_else(|e| unreachable!("gauge: {e}")),
    );
    let token_validations = counter_vec(
        registry,
        "flagpost_token_validations_total",
        "Verdicts on request tokens asked of upstream, by result",
        &["result"],
    );
    let validate_budget_refused = counter_vec(
        registry,
        "flagpost_validate_budget_refused_total",
        "/edge/validate requests answered 429 because their unknown tokens were over budget, by budget (caller, total)",
        &["budget"],
    );
    (
        upstream_requests,
        upstream_duration,
        token_cache_entries,
        token_validations,
        validate_budget_refused,
    )
}

/// SDK usage received, forwarded and dropped.
pub(super) fn usage_metrics(registry: &Registry) -> UsageMetrics {
    let usage_rows_received = counter_vec(
        registry,
        "flagpost_usage_rows_received_total",
        "Usage rows (one flag of one app) received from SDKs, by source",
        &["source"],
    );
    let usage_rows_forwarded = register(
        registry,
        IntCounter::new(
            "flagpost_usage_rows_forwarded_total",
            "Aggregated usage rows delivered upstream",
        )
        .unwrap_or_else(|e| unreachable!("counter: {e}")),
    );
    let usage_rows_dropped = counter_vec(
        registry,
        "flagpost_usage_rows_dropped_total",
        "Usage rows not delivered, by reason",
        &["reason"],
    );
    let usage_evaluations = counter_vec(
        registry,
        "flagpost_usage_evaluations_total",
        "Flag evaluations (yes + no) in usage rows, by stage: received, forwarded, dropped",
        &["stage"],
    );
    let usage_registrations = counter_vec(
        registry,
        "flagpost_usage_registrations_received_total",
        "SDK registrations received, by source",
        &["source"],
    );
    let usage_registrations_dropped = counter_vec(
        registry,
        "flagpost_usage_registrations_dropped_total",
        "SDK registrations not kept, by reason",
        &["reason"],
    );
    let usage_buffer_entries = register(
        registry,
        IntGauge::new(
            "flagpost_usage_buffer_entries",
            "Usage rows and registrations waiting to be forwarded",
        )
        .unwrap_or_else(|e| unreachable!("gauge: {e}")),
    );
    let usage_buffer_bytes = register(
        registry,
        IntGauge::new(
            "flagpost_usage_buffer_bytes",
            "Estimated bytes of usage waiting to be forwarded",
        )
        .unwrap_or_else(|e| unreachable!("gauge: {e}")),
    );
    let flag_evaluations = counter_vec(
        registry,
        "flagpost_flag_evaluations_total",
        "Evaluations SDKs reported per known flag (only with usage.per_flag_metrics)",
        &["environment", "flag", "result"],
    );
    (
        usage_rows_received,
        usage_rows_forwarded,
        usage_rows_dropped,
        usage_evaluations,
        usage_registrations,
        usage_registrations_dropped,
        usage_buffer_entries,
        usage_buffer_bytes,
        flag_evaluations,
    )
}
