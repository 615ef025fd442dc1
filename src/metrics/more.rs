//! Families added beside the main list: what compiling a snapshot dropped or degraded, the
//! revision each environment serves, and what became of exported spans.

use std::sync::atomic::Ordering;

use prometheus::{IntCounterVec, IntGaugeVec, Registry};

use super::register::{counter_vec, int_gauge_vec};

pub struct More {
    /// Flags the engine could not compile, by environment and reason.
    pub feature_state_warnings: IntCounterVec,
    /// The revision each environment serves (the event id streams and deltas use).
    pub last_applied_revision: IntGaugeVec,
    otel_spans: IntCounterVec,
}

/// The reasons of `flagpost_feature_state_warnings_total`.
pub const WARNING_REASONS: [&str; 4] = ["unreadable", "always_off", "default_variant", "other"];

impl More {
    pub(super) fn new(registry: &Registry) -> More {
        let more = More {
            feature_state_warnings: counter_vec(
                registry,
                "flagpost_feature_state_warnings_total",
                "Flags dropped or degraded while compiling a snapshot (served off, or with the \
                 default variant), by environment and reason",
                &["environment", "reason"],
            ),
            last_applied_revision: int_gauge_vec(
                registry,
                "flagpost_last_applied_revision_id",
                "The revision of the features each environment serves (the event id of streams \
                 and deltas)",
                &["environment"],
            ),
            otel_spans: counter_vec(
                registry,
                "flagpost_otel_spans_total",
                "Spans sampled for OpenTelemetry export, by outcome (exported, dropped_queue_full, \
                 dropped_export_failed)",
                &["outcome"],
            ),
        };
        for outcome in ["exported", "dropped_queue_full", "dropped_export_failed"] {
            more.otel_spans.with_label_values(&[outcome]);
        }
        more
    }

    /// Counts a publish's engine warnings; every reason's series exists from the
    /// environment's first publish, at 0.
    pub fn count_warnings(&self, environment: &str, warnings: &[String]) {
        for reason in WARNING_REASONS {
            self.feature_state_warnings
                .with_label_values(&[environment, reason]);
        }
        for w in warnings {
            self.feature_state_warnings
                .with_label_values(&[environment, More::warning_reason(w)])
                .inc();
        }
    }

    /// The reason label of an engine warning (`name: message`).
    pub fn warning_reason(warning: &str) -> &'static str {
        if warning.contains("cannot be read") {
            "unreadable"
        } else if warning.contains("always be off") {
            "always_off"
        } else if warning.contains("default variant") {
            "default_variant"
        } else {
            "other"
        }
    }

    /// Brings the span counts up to date from the export pipeline's (before a scrape).
    pub fn observe_spans(&self) {
        let stats = &crate::otel::STATS;
        for (outcome, total) in [
            ("exported", &stats.exported),
            ("dropped_queue_full", &stats.dropped_queue_full),
            ("dropped_export_failed", &stats.dropped_export_failed),
        ] {
            let counter = self.otel_spans.with_label_values(&[outcome]);
            let total = total.load(Ordering::Relaxed);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }
}
