//! Building and registering metric families; names and labels are static, so failures are
//! unreachable (tested by `renders_every_family`).

use prometheus::{
    GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

pub(super) fn counter_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntCounterVec {
    let v = IntCounterVec::new(Opts::new(name, help), labels)
        // Static names and labels: this cannot fail (tested by `renders_every_family`).
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    registry
        .register(Box::new(v.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    v
}

pub(super) fn histogram_vec(
    registry: &Registry,
    (name, help): (&str, &str),
    buckets: &[f64],
    labels: &[&str],
) -> HistogramVec {
    register(
        registry,
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets.to_vec()),
            labels,
        )
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}")),
    )
}

pub(super) fn int_gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(
        registry,
        IntGauge::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}")),
    )
}

pub(super) fn int_counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(
        registry,
        IntCounter::new(name, help).unwrap_or_else(|e| unreachable!("metric {name}: {e}")),
    )
}

pub(super) fn int_gauge_vec(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels)
            .unwrap_or_else(|e| unreachable!("metric {name}: {e}")),
    )
}

pub(super) fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    register(
        registry,
        GaugeVec::new(Opts::new(name, help), labels)
            .unwrap_or_else(|e| unreachable!("metric {name}: {e}")),
    )
}

pub(super) fn register<C: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    c: C,
) -> C {
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| unreachable!("metric registration: {e}"));
    c
}
