//! The span queue between the request path and the collector: `on_end` puts a finished, sampled
//! span in a bounded queue without waiting; one task takes batches from it and exports them,
//! each export bounded by the export timeout. A full queue or a failed export drops spans and
//! counts them ([`STATS`]); the log says so once when dropping starts and once when it ends.
//! The SDK's own batch processor logs its first drop through OpenTelemetry's internal log and
//! keeps its count private until shutdown, so `/metrics` could not show it: hence this one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanExporter, SpanProcessor};
use tokio::sync::{mpsc, oneshot};

/// Spans waiting for export, at most. A span is about a kilobyte: the queue holds 2 MiB or so.
pub const QUEUE_CAPACITY: usize = 2048;
/// Spans in one export, at most (the specification's default).
pub const MAX_BATCH: usize = 512;
/// Longest a span waits for its batch to fill.
pub const BATCH_DELAY: Duration = Duration::from_secs(1);

/// What became of the spans, for `/metrics`. Process-wide, as the tracing subscriber is.
#[derive(Debug, Default)]
pub struct SpanStats {
    pub exported: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    pub dropped_export_failed: AtomicU64,
}

pub static STATS: SpanStats = SpanStats {
    exported: AtomicU64::new(0),
    dropped_queue_full: AtomicU64::new(0),
    dropped_export_failed: AtomicU64::new(0),
};

/// The processor the tracer provider calls as spans end.
#[derive(Debug)]
pub(super) struct Queue {
    tx: mpsc::Sender<SpanData>,
}

impl SpanProcessor for Queue {
    fn on_start(&self, _span: &mut Span, _cx: &Context) {}

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.tx.try_send(span).is_err() {
            STATS.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        // The export task is finished by `Exporting::finish`, in the runtime, within the grace.
        Ok(())
    }
}

/// The export task's handle: ask it to send what is queued and stop.
#[derive(Debug)]
pub struct Exporting {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Exporting {
    /// Exports what is queued, for `grace` at most, then stops.
    pub async fn finish(self, grace: Duration) {
        let _ = self.stop.send(());
        let mut task = self.task;
        if tokio::time::timeout(grace, &mut task).await.is_err() {
            task.abort();
            tracing::warn!(
                "spans still queued for the OpenTelemetry collector at the shutdown deadline: \
                 dropped"
            );
        }
    }
}

/// The queue and its export task (spawned on the current runtime).
pub(super) fn start<E: SpanExporter + 'static>(
    exporter: E,
    timeout: Duration,
) -> (Queue, Exporting) {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    let (stop_tx, stop_rx) = oneshot::channel();
    let task = tokio::spawn(run(rx, stop_rx, exporter, timeout));
    (
        Queue { tx },
        Exporting {
            stop: stop_tx,
            task,
        },
    )
}

async fn run<E: SpanExporter>(
    mut rx: mpsc::Receiver<SpanData>,
    mut stop: oneshot::Receiver<()>,
    exporter: E,
    timeout: Duration,
) {
    let mut health = Health::default();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut stopping = false;
    while !stopping {
        tokio::select! {
            n = rx.recv_many(&mut batch, MAX_BATCH) => if n == 0 { break },
            _ = &mut stop => stopping = true,
        }
        let deadline = tokio::time::Instant::now() + BATCH_DELAY;
        while !stopping && batch.len() < MAX_BATCH {
            let room = MAX_BATCH - batch.len();
            tokio::select! {
                n = rx.recv_many(&mut batch, room) => if n == 0 { break },
                _ = tokio::time::sleep_until(deadline) => break,
                _ = &mut stop => stopping = true,
            }
        }
        if stopping {
            // What is queued now is all there will be: the rest of it, in batches.
            rx.close();
        }
        loop {
            if !batch.is_empty() {
                let spans = std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH));
                export(&exporter, spans, timeout, &mut health).await;
            }
            if !stopping || rx.recv_many(&mut batch, MAX_BATCH).await == 0 {
                break;
            }
        }
    }
    let _ = exporter.shutdown_with_timeout(timeout);
}

async fn export<E: SpanExporter>(
    exporter: &E,
    spans: Vec<SpanData>,
    timeout: Duration,
    health: &mut Health,
) {
    let n = spans.len() as u64;
    let result = match tokio::time::timeout(timeout, exporter.export(spans)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer in {} ms", timeout.as_millis())),
    };
    match result {
        Ok(()) => {
            STATS.exported.fetch_add(n, Ordering::Relaxed);
        }
        Err(_) => {
            STATS.dropped_export_failed.fetch_add(n, Ordering::Relaxed);
        }
    }
    health.after_export(result);
}

/// What the log last said, so it speaks once per change.
#[derive(Default)]
struct Health {
    failing: bool,
    failed_at_start: u64,
    queue_full: bool,
    full_seen: u64,
}

impl Health {
    fn after_export(&mut self, result: Result<(), String>) {
        let failed = STATS.dropped_export_failed.load(Ordering::Relaxed);
        match (result, self.failing) {
            (Err(error), false) => {
                self.failing = true;
                self.failed_at_start = failed;
                tracing::warn!(
                    %error,
                    "cannot export spans to the OpenTelemetry collector: dropping them until it \
                     answers (flagpost_otel_spans_total{{outcome=\"dropped_export_failed\"}})"
                );
            }
            (Ok(()), true) => {
                self.failing = false;
                tracing::info!(
                    dropped = failed - self.failed_at_start,
                    "the OpenTelemetry collector takes spans again"
                );
            }
            _ => {}
        }
        let full = STATS.dropped_queue_full.load(Ordering::Relaxed);
        let growing = full > self.full_seen;
        if growing && !self.queue_full {
            tracing::warn!(
                capacity = QUEUE_CAPACITY,
                "the span queue is full: spans are dropped \
                 (flagpost_otel_spans_total{{outcome=\"dropped_queue_full\"}}); \
                 sample fewer (OTEL_TRACES_SAMPLER_ARG) or give the collector more room"
            );
        } else if !growing && self.queue_full {
            tracing::info!(dropped = full, "the span queue has room again");
        }
        self.queue_full = growing;
        self.full_seen = full;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use std::sync::{Arc, Mutex};
    use std::time::SystemTime;

    use opentelemetry::trace::{
        SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry::InstrumentationScope;
    use opentelemetry_sdk::error::OTelSdkError;

    use super::*;

    /// An exporter that keeps the sizes of the batches it got, fails, or never answers.
    #[derive(Debug, Clone, Default)]
    struct Fake {
        batches: Arc<Mutex<Vec<usize>>>,
        fail: Arc<std::sync::atomic::AtomicBool>,
        hang: bool,
    }

    impl SpanExporter for Fake {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            if self.hang {
                std::future::pending::<()>().await;
            }
            if self.fail.load(Ordering::Relaxed) {
                return Err(OTelSdkError::InternalFailure("refused".into()));
            }
            self.batches.lock().unwrap().push(batch.len());
            Ok(())
        }
    }

    fn span(sampled: bool) -> SpanData {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanData {
            span_context: SpanContext::new(
                TraceId::from(7u128),
                SpanId::from(9u64),
                flags,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: "test".into(),
            start_time: SystemTime::now(),
            end_time: SystemTime::now(),
            attributes: Vec::new(),
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: InstrumentationScope::builder("test").build(),
        }
    }

    /// The only test that may drop at a full queue (the counts are process-wide).
    #[tokio::test(start_paused = true)]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let fake = Fake {
            hang: true,
            ..Fake::default()
        };
        let (queue, exporting) = start(fake, Duration::from_secs(3600));
        let before = STATS.dropped_queue_full.load(Ordering::Relaxed);
        // The export task has not run yet: the queue takes its capacity, the rest is dropped.
        for _ in 0..QUEUE_CAPACITY + 5 {
            queue.on_end(span(true));
        }
        let dropped = STATS.dropped_queue_full.load(Ordering::Relaxed) - before;
        assert_eq!(dropped, 5);
        // A stuck export does not hold the stop past its grace.
        let stopped = tokio::time::Instant::now();
        exporting.finish(Duration::from_secs(2)).await;
        assert_eq!(stopped.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn sampled_spans_go_in_batches_failures_are_counted_and_the_rest_is_flushed() {
        let fake = Fake::default();
        let (queue, exporting) = start(fake.clone(), Duration::from_secs(5));
        let exported = STATS.exported.load(Ordering::Relaxed);
        let failed = STATS.dropped_export_failed.load(Ordering::Relaxed);
        for i in 0..1300 {
            queue.on_end(span(true));
            // Not sampled: not queued, not counted.
            if i % 2 == 0 {
                queue.on_end(span(false));
            }
        }
        tokio::time::sleep(BATCH_DELAY * 2).await;
        assert_eq!(*fake.batches.lock().unwrap(), vec![512, 512, 276]);
        assert_eq!(STATS.exported.load(Ordering::Relaxed) - exported, 1300);
        // Refused: the batch is dropped and counted.
        fake.fail.store(true, Ordering::Relaxed);
        for _ in 0..10 {
            queue.on_end(span(true));
        }
        tokio::time::sleep(BATCH_DELAY * 2).await;
        assert_eq!(
            STATS.dropped_export_failed.load(Ordering::Relaxed) - failed,
            10
        );
        // Stopping sends what is queued at once, without waiting for the batch delay.
        fake.fail.store(false, Ordering::Relaxed);
        for _ in 0..3 {
            queue.on_end(span(true));
        }
        let stopped = tokio::time::Instant::now();
        exporting.finish(Duration::from_secs(10)).await;
        assert!(stopped.elapsed() < BATCH_DELAY);
        assert_eq!(fake.batches.lock().unwrap().last(), Some(&3));
    }
}
