//! Forwarding buffered usage upstream: per environment, to `POST /api/client/metrics/bulk` with a
//! startup client token of that environment, in bodies under [`MAX_BODY`]. Network errors, 429
//! and 5xx are retried with jittered backoff and, if still failing, kept for the next round;
//! 400 and 413 are dropped and counted.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{Counts, EnvUsage, RowKey};
use crate::backoff::backoff;
use crate::metrics::Metrics;
use crate::refresh::Refresh;
use crate::upstream::{Upstream, UpstreamError, SDK_NAME};
use crate::usage::Usage;

/// Largest bulk body sent (the server's limit is 100 KiB).
pub const MAX_BODY: usize = 95 * 1024;
/// Attempts per body within one round.
const ATTEMPTS: u32 = 3;
const BODY_OPEN: &str = "{\"applications\":[";
const BODY_MIDDLE: &str = "],\"metrics\":[";
const BODY_CLOSE: &str = "]}";

/// One bulk body and which items it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    pub body: Vec<u8>,
    pub apps: Vec<usize>,
    pub rows: Vec<usize>,
}

/// Packs serialised applications and rows into bodies of at most `limit` bytes. Items too large
/// to fit any body are returned apart (as indexes) to be dropped.
pub fn chunks(
    apps: &[String],
    rows: &[String],
    limit: usize,
) -> (Vec<Chunk>, Vec<usize>, Vec<usize>) {
    let frame = BODY_OPEN.len() + BODY_MIDDLE.len() + BODY_CLOSE.len();
    let mut out = Vec::new();
    let (mut big_apps, mut big_rows) = (Vec::new(), Vec::new());
    let mut current = (Vec::new(), Vec::new());
    let mut size = frame;
    let mut place = |is_app: bool,
                     i: usize,
                     len: usize,
                     current: &mut (Vec<usize>, Vec<usize>),
                     size: &mut usize,
                     out: &mut Vec<(Vec<usize>, Vec<usize>)>| {
        if frame + len > limit {
            if is_app {
                big_apps.push(i)
            } else {
                big_rows.push(i)
            }
            return;
        }
        let list_len = if is_app {
            current.0.len()
        } else {
            current.1.len()
        };
        let extra = len + usize::from(list_len > 0);
        if *size + extra > limit {
            out.push(std::mem::take(current));
            *size = frame;
        }
        let list = if is_app {
            &mut current.0
        } else {
            &mut current.1
        };
        *size += len + usize::from(!list.is_empty());
        list.push(i);
    };
    let mut groups = Vec::new();
    for (i, a) in apps.iter().enumerate() {
        place(true, i, a.len(), &mut current, &mut size, &mut groups);
    }
    for (i, r) in rows.iter().enumerate() {
        place(false, i, r.len(), &mut current, &mut size, &mut groups);
    }
    if !current.0.is_empty() || !current.1.is_empty() {
        groups.push(current);
    }
    for (a, r) in groups {
        let mut body = String::with_capacity(limit.min(128 * 1024));
        body.push_str(BODY_OPEN);
        for (n, i) in a.iter().enumerate() {
            if n > 0 {
                body.push(',');
            }
            body.push_str(apps.get(*i).map_or("", String::as_str));
        }
        body.push_str(BODY_MIDDLE);
        for (n, i) in r.iter().enumerate() {
            if n > 0 {
                body.push(',');
            }
            body.push_str(rows.get(*i).map_or("", String::as_str));
        }
        body.push_str(BODY_CLOSE);
        out.push(Chunk {
            body: body.into_bytes(),
            apps: a,
            rows: r,
        });
    }
    (out, big_apps, big_rows)
}

fn timestamp(hour: i64) -> String {
    DateTime::<Utc>::from_timestamp(hour, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn row_json(environment: &str, key: &RowKey, counts: &Counts) -> String {
    json!({
        "featureName": key.flag,
        "appName": key.app,
        "environment": environment,
        "timestamp": timestamp(key.hour),
        "yes": counts.yes,
        "no": counts.no,
        "variants": counts.variants,
    })
    .to_string()
}

/// How the periodic forwarder is stopped at shutdown: `stop` ends it between sends (what is
/// not sent yet goes back into the buffer for the final flush); `abandon`, at the shutdown
/// deadline, also gives up a body on its way (counted as dropped, never sent twice).
#[derive(Debug, Clone, Default)]
pub struct Stop {
    pub stop: CancellationToken,
    pub abandon: CancellationToken,
}

/// When a forwarding round must stop sending.
#[derive(Debug, Clone, Copy)]
pub enum Round<'a> {
    /// A periodic round, stopped by [`Stop`].
    Periodic(&'a Stop),
    /// The final flush at shutdown: what is not delivered by the deadline is dropped and
    /// counted with reason `shutdown`.
    Final(tokio::time::Instant),
}

/// What became of one body.
enum Sent {
    Delivered,
    Rejected(u16),
    /// Not delivered now (upstream failing, the round stopped, or the deadline passed).
    NotNow(Option<UpstreamError>),
    /// The round stopped while the body was on its way: upstream may have it.
    InFlight,
}

/// What the usage forwarder works with: the buffer, the metrics, the upstream, and the
/// startup tokens (one per environment forwards its usage).
#[derive(Debug)]
pub struct Forwarder {
    pub usage: Arc<Usage>,
    pub metrics: Arc<Metrics>,
    pub upstream: Arc<Upstream>,
    pub refresh: Arc<Refresh>,
}

/// One environment's usage taken from the buffer, as rows and registrations by index.
struct Batch {
    environment: String,
    rows: Vec<(RowKey, Counts)>,
    apps: Vec<((String, String), Value)>,
}

impl Batch {
    fn new(environment: String, usage: EnvUsage) -> Batch {
        Batch {
            environment,
            rows: usage.rows.into_iter().collect(),
            apps: usage.apps.into_iter().collect(),
        }
    }

    /// The bodies to send, and the registrations and rows too large for any body.
    fn bodies(&self) -> (Vec<Chunk>, Vec<usize>, Vec<usize>) {
        let row_texts: Vec<String> = self
            .rows
            .iter()
            .map(|(k, c)| row_json(&self.environment, k, c))
            .collect();
        let app_texts: Vec<String> = self.apps.iter().map(|(_, v)| v.to_string()).collect();
        chunks(&app_texts, &row_texts, MAX_BODY)
    }

    /// The evaluations (yes + no) of these rows.
    fn evaluations(&self, rows: &[usize]) -> u64 {
        rows.iter()
            .filter_map(|i| self.rows.get(*i))
            .map(|(_, c)| c.total())
            .sum()
    }

    /// What these chunks hold, to put back into the buffer.
    fn kept(&self, chunks: &[Chunk]) -> EnvUsage {
        let mut keep = EnvUsage::default();
        for chunk in chunks {
            let rows = chunk.rows.iter().filter_map(|i| self.rows.get(*i));
            keep.rows.extend(rows.cloned());
            let apps = chunk.apps.iter().filter_map(|i| self.apps.get(*i));
            keep.apps.extend(apps.cloned());
        }
        keep
    }
}

impl Forwarder {
    /// Forwards everything buffered now. Returns when every environment was handled.
    pub async fn forward(&self, round: Round<'_>) {
        for (environment, env_usage) in self.usage.take() {
            if env_usage.rows.is_empty() && env_usage.apps.is_empty() {
                continue;
            }
            let Some(token) = self.refresh.token_for(&environment) else {
                let evaluations = env_usage.rows.values().map(Counts::total).sum();
                tracing::warn!(environment = %environment, rows = env_usage.rows.len(), "usage dropped: no startup client token for this environment to forward it with");
                self.usage
                    .dropped("no_token", env_usage.rows.len() as u64, evaluations);
                continue;
            };
            let batch = Batch::new(environment, env_usage);
            self.forward_batch(&batch, &token, round).await;
        }
    }

    /// Sends one environment's bodies in order until one cannot be sent now; what is left is
    /// kept for the next round or, at shutdown, counted as dropped.
    async fn forward_batch(&self, batch: &Batch, token: &crate::token::Token, round: Round<'_>) {
        let environment = batch.environment.as_str();
        let (bodies, big_apps, big_rows) = batch.bodies();
        if !big_rows.is_empty() || !big_apps.is_empty() {
            tracing::warn!(
                rows = big_rows.len(),
                applications = big_apps.len(),
                "usage entries too large for one bulk body were dropped"
            );
            self.dropped(batch, "too_large", &big_rows);
        }
        let mut unsent: Option<usize> = None;
        for (n, chunk) in bodies.iter().enumerate() {
            match self.send_chunk(token, chunk, round).await {
                Sent::Delivered => {
                    let metrics = &self.metrics;
                    metrics.usage_rows_forwarded.inc_by(chunk.rows.len() as u64);
                    metrics
                        .usage_evaluations
                        .with_label_values(&["forwarded"])
                        .inc_by(batch.evaluations(&chunk.rows));
                }
                Sent::Rejected(code) => {
                    tracing::warn!(environment, status = code, rows = chunk.rows.len(), "upstream rejected a usage body; it is dropped (400: the server found it invalid, 413: too large)");
                    self.dropped(batch, "rejected", &chunk.rows);
                }
                Sent::NotNow(error) => {
                    if let Some(e) = error {
                        tracing::warn!(environment, error = %e, "cannot forward usage now");
                    }
                    unsent = Some(n);
                    break;
                }
                Sent::InFlight => {
                    // Sending it again could count it twice upstream: counted as dropped.
                    tracing::warn!(environment, rows = chunk.rows.len(), "usage on its way upstream when flagpost stopped; dropped (counted with reason shutdown) rather than risk sending it twice");
                    self.dropped_at_shutdown(batch, std::slice::from_ref(chunk));
                    unsent = Some(n + 1);
                    break;
                }
            }
        }
        let rest = unsent
            .and_then(|first| bodies.get(first..))
            .unwrap_or_default();
        if rest.is_empty() {
            return;
        }
        match round {
            Round::Periodic(_) => {
                let keep = batch.kept(rest);
                tracing::debug!(
                    environment,
                    rows = keep.rows.len(),
                    "usage kept for the next round"
                );
                self.usage.restore(environment, keep);
            }
            Round::Final(_) => {
                let rows: usize = rest.iter().map(|c| c.rows.len()).sum();
                let registrations: usize = rest.iter().map(|c| c.apps.len()).sum();
                tracing::warn!(environment, rows, registrations, "usage not forwarded before the shutdown deadline; dropped (counted with reason shutdown)");
                self.dropped_at_shutdown(batch, rest);
            }
        }
    }

    /// Sends one body: in a periodic round until stopped, in the final one until its deadline.
    async fn send_chunk(
        &self,
        token: &crate::token::Token,
        chunk: &Chunk,
        round: Round<'_>,
    ) -> Sent {
        let (metrics, upstream) = (&self.metrics, &self.upstream);
        match round {
            Round::Periodic(stop) => send(metrics, upstream, token, &chunk.body, stop).await,
            Round::Final(deadline) => {
                let never = Stop::default();
                let sent = send(metrics, upstream, token, &chunk.body, &never);
                tokio::time::timeout_at(deadline, sent)
                    .await
                    .unwrap_or(Sent::NotNow(None))
            }
        }
    }

    /// Counts these rows (and their evaluations) as dropped for `reason`.
    fn dropped(&self, batch: &Batch, reason: &'static str, rows: &[usize]) {
        let evaluations = batch.evaluations(rows);
        self.usage.dropped(reason, rows.len() as u64, evaluations);
    }

    /// Counts the rows and registrations of these chunks as dropped at shutdown.
    fn dropped_at_shutdown(&self, batch: &Batch, chunks: &[Chunk]) {
        let rows: Vec<usize> = chunks.iter().flat_map(|c| c.rows.iter().copied()).collect();
        self.dropped(batch, "shutdown", &rows);
        let registrations: usize = chunks.iter().map(|c| c.apps.len()).sum();
        self.metrics
            .usage_registrations_dropped
            .with_label_values(&["shutdown"])
            .inc_by(registrations as u64);
    }
}

/// Sends one body, retrying network errors, 401/403 (the token may have just been replaced),
/// 429 and 5xx with jittered backoff. Stopped between attempts: "not now" (nothing was
/// sent); abandoned during one: "in flight" (upstream may have it).
async fn send(
    metrics: &Metrics,
    upstream: &Upstream,
    token: &crate::token::Token,
    body: &[u8],
    stop: &Stop,
) -> Sent {
    let mut attempt = 0;
    loop {
        attempt += 1;
        if stop.stop.is_cancelled() {
            return Sent::NotNow(None);
        }
        let post = upstream.post_json(
            "metrics",
            "/api/client/metrics/bulk",
            token,
            body.to_vec(),
            metrics,
        );
        let result = tokio::select! {
            biased;
            _ = stop.abandon.cancelled() => return Sent::InFlight,
            r = post => r,
        };
        let error = match result {
            Ok(()) => return Sent::Delivered,
            Err(UpstreamError::Status(code @ (400 | 413))) => return Sent::Rejected(code),
            Err(e) => e,
        };
        let retry = match &error {
            UpstreamError::Status(code) => *code == 429 || *code >= 500,
            UpstreamError::Unreachable(_) | UpstreamError::Refused(_) => true,
            UpstreamError::BadBody(_)
            | UpstreamError::TooLarge { .. }
            | UpstreamError::Redirect { .. } => false,
        };
        if !retry || attempt >= ATTEMPTS {
            return Sent::NotNow(Some(error));
        }
        tokio::select! {
            _ = stop.stop.cancelled() => return Sent::NotNow(None),
            _ = tokio::time::sleep(backoff(Duration::from_millis(200), attempt)) => {}
        }
    }
}

impl Forwarder {
    /// Forwards usage every `interval` until stopped (see [`Stop`]).
    pub async fn run(self: Arc<Self>, interval: Duration, stop: Stop) {
        loop {
            tokio::select! {
                _ = stop.stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            self.forward(Round::Periodic(&stop)).await;
        }
    }
}

/// How flagpost registers itself upstream (once per startup scope it polls).
#[derive(Debug, Clone)]
pub struct Registration {
    pub app_name: String,
    pub instance_id: String,
    /// How often flagpost forwards usage (reported as the SDK's metrics interval).
    pub interval: Duration,
}

impl Registration {
    /// Registers flagpost with `token`; a failure is logged, not retried.
    pub async fn send(&self, upstream: &Upstream, token: &crate::token::Token, metrics: &Metrics) {
        let body = json!({
            "appName": self.app_name,
            "instanceId": self.instance_id,
            "sdkVersion": SDK_NAME,
            "strategies": unleash_yggdrasil::KNOWN_STRATEGIES,
            "started": Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
            "interval": u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX),
            "platformName": "flagpost",
            "platformVersion": env!("CARGO_PKG_VERSION"),
            "specVersion": unleash_yggdrasil::SUPPORTED_SPEC_VERSION,
        });
        let body = body.to_string().into_bytes();
        let sent = upstream.post_json("register", "/api/client/register", token, body, metrics);
        if let Err(e) = sent.await {
            tracing::warn!(token = %token, error = %e, "cannot register flagpost upstream");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bodies_are_valid_json_with_every_item() {
        let apps = vec![r#"{"appName":"a"}"#.to_string()];
        let rows: Vec<String> = (0..5)
            .map(|i| format!(r#"{{"featureName":"f{i}"}}"#))
            .collect();
        let (bodies, big_a, big_r) = chunks(&apps, &rows, 64);
        assert!(big_a.is_empty() && big_r.is_empty());
        assert!(bodies.len() > 1);
        let mut names = Vec::new();
        for b in &bodies {
            assert!(b.body.len() <= 64, "{}", String::from_utf8_lossy(&b.body));
            let v: Value = serde_json::from_slice(&b.body).unwrap();
            for m in v["metrics"].as_array().unwrap() {
                names.push(m["featureName"].as_str().unwrap().to_string());
            }
        }
        assert_eq!(names, ["f0", "f1", "f2", "f3", "f4"]);
        let (_, _, big) = chunks(&[], &["x".repeat(100)], 64);
        assert_eq!(big, [0]);
    }

    #[test]
    fn hour_timestamps() {
        assert_eq!(timestamp(1_795_838_400), "2026-11-28T04:00:00.000Z");
    }

    proptest! {
        #[test]
        fn every_chunk_under_the_limit_and_no_row_lost_or_duplicated(
            apps in proptest::collection::vec("[a-z]{1,200}", 0..20),
            rows in proptest::collection::vec("[a-z]{1,300}", 0..200),
            limit in 64usize..4096,
        ) {
            let (bodies, big_apps, big_rows) = chunks(&apps, &rows, limit);
            let mut seen_rows = vec![0u32; rows.len()];
            let mut seen_apps = vec![0u32; apps.len()];
            for b in &bodies {
                prop_assert!(b.body.len() <= limit);
                prop_assert!(!b.rows.is_empty() || !b.apps.is_empty());
                for i in &b.rows { seen_rows[*i] += 1; }
                for i in &b.apps { seen_apps[*i] += 1; }
                let expected: usize = BODY_OPEN.len() + BODY_MIDDLE.len() + BODY_CLOSE.len()
                    + b.rows.iter().map(|i| rows[*i].len()).sum::<usize>() + b.rows.len().saturating_sub(1)
                    + b.apps.iter().map(|i| apps[*i].len()).sum::<usize>() + b.apps.len().saturating_sub(1);
                prop_assert_eq!(b.body.len(), expected);
            }
            for i in &big_rows { seen_rows[*i] += 1; prop_assert!(rows[*i].len() + 32 > limit); }
            for i in &big_apps { seen_apps[*i] += 1; }
            prop_assert!(seen_rows.iter().all(|n| *n == 1));
            prop_assert!(seen_apps.iter().all(|n| *n == 1));
        }
    }
}
