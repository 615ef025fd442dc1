//! A collector that hangs, is down, or never answers at shutdown: flagpost drops and counts
//! spans, keeps answering, keeps its memory, and exits within its grace.

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::otlp::{Collector, Mode};
use crate::traces::{flagpost, frontend, many, ready, traceparent, PARENT};
use crate::upstream::{secret, FakeUpstream};

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `flagpost_otel_spans_total{outcome}` at `addr`.
async fn spans_counted(addr: &str, outcome: &str) -> f64 {
    let series = format!("flagpost_otel_spans_total{{outcome=\"{outcome}\"}}");
    metric_at(addr, &series).await.unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_hangs_or_is_down_costs_dropped_spans_only() {
    let up = FakeUpstream::start().await;
    let collector = Collector::start().await;
    collector.set_mode(Mode::Hang);
    let dir = tempfile::tempdir().unwrap();
    let (mut bin, addr) = flagpost(
        &up,
        &dir,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000".into()),
        ],
    );
    ready(&addr).await;
    let token = secret("frontend-all-dev");
    many(&addr, &token, 200).await;
    let before = rss_kib(bin.pid());
    // Slow: one export hangs; the queue fills and the rest is dropped, never held.
    let started = Instant::now();
    many(&addr, &token, 3000).await;
    let slow = started.elapsed();
    let after = rss_kib(bin.pid());
    let full = spans_counted(&addr, "dropped_queue_full").await;
    assert!(
        full >= 500.0,
        "3,200 spans, room for 2,048 queued and 512 in flight: {full}"
    );
    assert!(
        after < before + 16 * 1024,
        "memory flat while spans cannot leave: {before} KiB, then {after} KiB"
    );
    bin.wait_for("cannot export spans to the OpenTelemetry collector");
    bin.wait_for("the span queue is full");
    // Down: every connection closed while 2,000 requests pass.
    collector.set_mode(Mode::Drop);
    let started = Instant::now();
    many(&addr, &token, 2000).await;
    let down = started.elapsed();
    eventually("spans counted as failed", || {
        let addr = addr.clone();
        async move { spans_counted(&addr, "dropped_export_failed").await >= 1000.0 }
    })
    .await;
    assert_eq!(spans_counted(&addr, "exported").await, 0.0);
    // Back: the spans of new requests arrive, and the log says so once.
    collector.set_mode(Mode::Accept);
    let trace = "33333333333333333333333333333333";
    eventually("spans exported again", || {
        let (addr, token, collector) = (addr.clone(), token.clone(), collector.clone());
        async move {
            frontend(&addr, &token, "", Some(&traceparent(trace, PARENT, true))).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            collector.spans().iter().any(|s| s.trace_id == trace)
        }
    })
    .await;
    bin.wait_for("the OpenTelemetry collector takes spans again");
    let log = bin.lines_so_far().join("\n");
    for line in [
        "cannot export spans to the OpenTelemetry",
        "the span queue is full",
    ] {
        assert_eq!(
            log.matches(line).count(),
            1,
            "{line:?} once per change of state"
        );
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "3,000 requests, collector hanging: {slow:?}; 2,000, collector down: {down:?}; \
             RSS {before} -> {after} KiB; {full} spans dropped at the full queue"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_collector_does_not_hold_the_exit_past_the_grace() {
    let up = FakeUpstream::start().await;
    let collector = Collector::start().await;
    collector.set_mode(Mode::Hang);
    let dir = tempfile::tempdir().unwrap();
    let (mut bin, addr) = flagpost(
        &up,
        &dir,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url())],
    );
    ready(&addr).await;
    many(&addr, &secret("frontend-all-dev"), 50).await;
    let signalled = Instant::now();
    bin.terminate();
    assert!(bin.exit_within(Duration::from_secs(15)).success());
    // Grace 3 s for the drain, 3 s more at most for the final flush.
    assert!(
        signalled.elapsed() < Duration::from_secs(8),
        "{:?}",
        signalled.elapsed()
    );
}
