//! The background work behind token validation: the lanes that ask upstream about new tokens,
//! and the periodic revalidation of the known ones.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{AuthError, Authenticator, Caches, Pending, Verdict, MAX_VALIDATE_BATCH};
use crate::metrics::Metrics;
use crate::upstream::{Upstream, UpstreamError};

/// The background work that asks upstream about new tokens, in batches: one lane for tokens
/// seen on SDK requests and one for `/edge/validate` callers, each with its own queue and
/// upstream calls, so a flood on one never delays the other.
pub struct Validator {
    pub(super) sdk: Lane,
    pub(super) relay: Lane,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Validator")
    }
}

impl Validator {
    /// Runs both lanes until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        tokio::join!(self.sdk.run(cancel.clone()), self.relay.run(cancel));
    }
}

pub(super) struct Lane {
    pub(super) rx: mpsc::Receiver<Pending>,
    pub(super) caches: Caches,
    pub(super) upstream: Arc<Upstream>,
    pub(super) metrics: Arc<Metrics>,
}

impl Lane {
    /// Runs until `cancel`: takes every validation waiting, asks upstream once for the tokens
    /// not yet known, answers every waiter.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut failing = false;
        loop {
            let first = tokio::select! {
                _ = cancel.cancelled() => return,
                next = self.rx.recv() => match next {
                    Some(p) => p,
                    None => return,
                },
            };
            let mut waiting: HashMap<String, Vec<oneshot::Sender<Verdict>>> = HashMap::new();
            let mut next = Some(first);
            while let Some(p) = next.take() {
                match self.caches.get(&p.token) {
                    // Answered by an earlier batch while this one waited.
                    Some(verdict) => {
                        let _ = p.reply.send(verdict);
                    }
                    None => waiting.entry(p.token).or_default().push(p.reply),
                }
                if waiting.len() < MAX_VALIDATE_BATCH {
                    next = self.rx.try_recv().ok();
                }
            }
            if waiting.is_empty() {
                continue;
            }
            let asked: Vec<String> = waiting.keys().cloned().collect();
            let refs: Vec<&str> = asked.iter().map(String::as_str).collect();
            match self.upstream.validate(&refs, &self.metrics).await {
                Ok(validated) => {
                    if failing {
                        tracing::info!("token validation upstream works again");
                        failing = false;
                    }
                    let verdicts = self.caches.record(&validated, &asked);
                    for (raw, replies) in waiting {
                        let verdict = verdicts.get(&raw).cloned().unwrap_or(Verdict::Unavailable);
                        let result = match &verdict {
                            Verdict::Valid(_) => "valid",
                            Verdict::Refused(AuthError::AdminOrPersonal) => "wrong_type",
                            Verdict::Refused(_) => "invalid",
                            Verdict::Unavailable => "unavailable",
                        };
                        self.metrics
                            .token_validations
                            .with_label_values(&[result])
                            .inc_by(replies.len() as u64);
                        for reply in replies {
                            let _ = reply.send(verdict.clone());
                        }
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot validate new tokens upstream; requests with tokens not seen before get 503 until it answers");
                        failing = true;
                    }
                    for replies in waiting.into_values() {
                        self.metrics
                            .token_validations
                            .with_label_values(&["unavailable"])
                            .inc_by(replies.len() as u64);
                        for reply in replies {
                            let _ = reply.send(Verdict::Unavailable);
                        }
                    }
                }
            }
        }
    }
}

/// Validates every known-valid token again, in batches, every `interval`, until `cancel`. A
/// token upstream no longer knows becomes invalid.
pub async fn revalidate(
    auth: Arc<Authenticator>,
    (upstream, metrics): (Arc<Upstream>, Arc<Metrics>),
    interval: Duration,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let known = auth.known_valid();
        for chunk in known.chunks(MAX_VALIDATE_BATCH) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            match upstream.validate(&refs, &metrics).await {
                Ok(validated) => {
                    let dropped = chunk
                        .iter()
                        .filter(|raw| !validated.iter().any(|v| &v.token == *raw))
                        .count();
                    if dropped > 0 {
                        tracing::info!(tokens = dropped, "tokens no longer valid upstream");
                    }
                    auth.revalidated(chunk, &validated);
                }
                Err(UpstreamError::Unreachable(e)) => {
                    tracing::warn!(error = %e, "token revalidation skipped: upstream unreachable");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "token revalidation skipped");
                    break;
                }
            }
        }
    }
}
