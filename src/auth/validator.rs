//! The background work behind token validation: the lanes that ask upstream about new tokens,
//! and the periodic revalidation of the known ones.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{
    AuthError, Authenticator, Caches, Pending, SharedVerdicts, Verdict, MAX_VALIDATE_BATCH,
};
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
    /// Shares verdicts with a fleet: a token the fleet knows is not asked about upstream, and
    /// one new to the fleet is asked about by one instance.
    pub fn share_with(&mut self, fleet: Arc<dyn SharedVerdicts>) {
        self.sdk.fleet = Some(fleet.clone());
        self.relay.fleet = Some(fleet);
    }

    /// Runs both lanes until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        tokio::join!(self.sdk.run(cancel.clone()), self.relay.run(cancel));
    }
}

/// The span of one batch of validations: a child of the first waiting request's span, linked
/// to the others', so each request's trace shows the upstream call it waited for.
fn validation_span(tokens: usize, traces: Vec<opentelemetry::Context>) -> tracing::Span {
    if traces.is_empty() {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "validate",
        otel.name = "validate tokens",
        flagpost.tokens = tokens as i64,
    );
    let mut traces = traces.into_iter();
    crate::otel::propagate::adopt(&span, traces.next(), traces);
    span
}

pub(super) struct Lane {
    pub(super) rx: mpsc::Receiver<Pending>,
    pub(super) caches: Caches,
    pub(super) upstream: Arc<Upstream>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) fleet: Option<Arc<dyn SharedVerdicts>>,
}

/// The longest a lane waits for the announcement of another instance's verdict before looking
/// anyway (an announcement can be missed while the subscription is re-made).
const FLEET_WAIT_FALLBACK: Duration = Duration::from_millis(250);

impl Lane {
    /// Answers the tokens the fleet already has a verdict for, and waits (up to a claim's
    /// lifetime) for those another instance is asking upstream about; leaves the rest.
    async fn ask_fleet(
        &self,
        fleet: &dyn SharedVerdicts,
        waiting: &mut HashMap<String, Vec<oneshot::Sender<Verdict>>>,
    ) {
        // Seen before the first read: an announcement after it wakes the wait below.
        let mut announced = fleet.announced();
        announced.borrow_and_update();
        let raws: Vec<String> = waiting.keys().cloned().collect();
        let found = fleet.verdicts(&raws).await;
        self.answer_shared(found, waiting);
        if waiting.is_empty() {
            return;
        }
        let raws: Vec<String> = waiting.keys().cloned().collect();
        let claims = fleet.claim(&raws).await;
        let mut others: Vec<String> = raws
            .into_iter()
            .zip(claims)
            .filter(|(_, mine)| !mine)
            .map(|(raw, _)| raw)
            .collect();
        let deadline = tokio::time::Instant::now() + fleet.claim_ttl();
        while !others.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = announced.changed() => {}
                _ = tokio::time::sleep(FLEET_WAIT_FALLBACK) => {}
                _ = tokio::time::sleep_until(deadline) => {}
            }
            announced.borrow_and_update();
            let found = fleet.verdicts(&others).await;
            others.retain(|raw| !found.contains_key(raw));
            self.answer_shared(found, waiting);
        }
    }

    fn answer_shared(
        &self,
        found: HashMap<String, super::SharedVerdict>,
        waiting: &mut HashMap<String, Vec<oneshot::Sender<Verdict>>>,
    ) {
        for (raw, shared) in found {
            let verdict = self.caches.put_shared(&raw, &shared);
            let replies = waiting.remove(&raw).unwrap_or_default();
            self.metrics
                .token_validations
                .with_label_values(&["from_fleet"])
                .inc_by(replies.len() as u64);
            for reply in replies {
                let _ = reply.send(verdict.clone());
            }
        }
    }

    /// Answers every waiter with its token's verdict (unavailable when upstream gave none).
    fn reply(
        &self,
        waiting: HashMap<String, Vec<oneshot::Sender<Verdict>>>,
        verdicts: &HashMap<String, Verdict>,
    ) {
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
            let mut traces = Vec::new();
            let mut next = Some(first);
            while let Some(p) = next.take() {
                traces.extend(p.trace);
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
            let span = validation_span(waiting.len(), traces);
            if let Some(fleet) = &self.fleet {
                self.ask_fleet(fleet.as_ref(), &mut waiting)
                    .instrument(span.clone())
                    .await;
                if waiting.is_empty() {
                    continue;
                }
            }
            let asked: Vec<String> = waiting.keys().cloned().collect();
            let refs: Vec<&str> = asked.iter().map(String::as_str).collect();
            let validated = self
                .upstream
                .validate(&refs, &self.metrics)
                .instrument(span)
                .await;
            match validated {
                Ok(validated) => {
                    if failing {
                        tracing::info!("token validation upstream works again");
                        failing = false;
                    }
                    let verdicts = self.caches.record(&validated, &asked);
                    if let Some(fleet) = &self.fleet {
                        let shared: Vec<_> = verdicts
                            .iter()
                            .filter_map(|(raw, v)| Some((raw.clone(), v.shared()?)))
                            .collect();
                        fleet.share(&shared, &[]).await;
                    }
                    self.reply(waiting, &verdicts);
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
    (upstream, metrics, fleet): (Arc<Upstream>, Arc<Metrics>, Option<Arc<dyn SharedVerdicts>>),
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
                    if let Some(fleet) = &fleet {
                        // The fleet learns the verdicts, and every instance drops the revoked.
                        let mut shared = Vec::new();
                        let mut revoked = Vec::new();
                        for raw in chunk {
                            match validated.iter().find(|v| &v.token == raw) {
                                Some(v) => {
                                    if let Some(s) = super::remote::verdict_of(v).shared() {
                                        shared.push((raw.clone(), s));
                                    }
                                }
                                None => {
                                    shared.push((raw.clone(), super::SharedVerdict::Invalid));
                                    revoked.push(raw.clone());
                                }
                            }
                        }
                        fleet.share(&shared, &revoked).await;
                    }
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

#[cfg(test)]
#[path = "validator_tests.rs"]
mod tests;
