//! One startup token's poll loop: whose turn it is on a fleet, following the upstream stream
//! when it can, fetching (conditional on the ETag), publishing what came, counting failures,
//! and the delay to the next fetch.

use std::sync::Arc;
use std::time::Duration;

use tracing::Instrument as _;

use super::{follow, sources, Refresh};
use crate::backoff::backoff;
use crate::fleet::Role;
use crate::token::Token;
use crate::upstream::{Fetch, UpstreamError};

impl Refresh {
    /// Whether this instance polls now: on a fleet, it waits while another instance does.
    async fn fleet_turn(&self) -> Turn {
        let Some(fleet) = self.app.fleet.as_ref().filter(|f| !f.may_poll()) else {
            return Turn::Mine;
        };
        let mut roles = fleet.roles();
        tokio::select! {
            _ = self.cancel.cancelled() => Turn::Cancelled,
            _ = roles.wait_for(|r| *r != Role::Follower) => Turn::Waited,
        }
    }

    /// What a fetch brought: merged with the other sources of its environment (on a blocking
    /// thread, not under the lock) and published within `cycle`; a 304 on a fleet is told to
    /// the fleet, so followers know upstream still says the same.
    async fn take_fetch(&self, index: usize, env: &str, fetch: Fetch, cycle: tracing::Span) {
        let unchanged = matches!(fetch, Fetch::NotModified);
        if let Some((env, parts)) = self.fetched(index, fetch) {
            let merged = tokio::task::spawn_blocking(move || sources::merge(parts));
            if let Ok(document) = merged.await {
                self.publish(&env, document).instrument(cycle).await;
            }
        } else if let Some(fleet) = unchanged.then_some(self.app.fleet.as_ref()).flatten() {
            fleet.polled(env).await;
        }
    }

    /// A failed fetch (not a refusal): counted, and logged once per reason while it lasts.
    fn fetch_failed(
        &self,
        index: usize,
        token: &Token,
        e: &UpstreamError,
        failures: u32,
        failing: &mut Option<&'static str>,
    ) {
        let env = {
            let mut sources = self.lock();
            let Some(s) = sources.get_mut(index) else {
                return;
            };
            s.failures = failures;
            s.scope.environment.clone()
        };
        let reason = e.outcome();
        self.app
            .metrics
            .refresh_failures
            .with_label_values(&[&env, reason])
            .inc();
        if *failing != Some(reason) {
            tracing::warn!(environment = %env, token = %token, error = %e, "features fetch failed; serving the last good features");
            *failing = Some(reason);
        }
    }

    /// Waits `delay`; false when flagpost stops meanwhile.
    async fn wait(&self, delay: Duration) -> bool {
        tokio::select! {
            _ = self.cancel.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// How long until the next poll of source `index`.
    fn next_delay(&self, index: usize, failures: u32) -> Duration {
        if self.is_revoked(index) {
            // Asked again now and then: a gateway that refused it may have been fixed.
            self.recheck
        } else if failures == 0 {
            self.interval
        } else {
            backoff(self.interval.min(Duration::from_secs(5)), failures)
        }
    }

    pub(super) async fn poll(self: Arc<Self>, index: usize) {
        let source = self
            .lock()
            .get(index)
            .map(|s| (s.token.clone(), s.scope.environment.clone()));
        let Some((token, env)) = source else {
            return;
        };
        let mut etag: Option<String> = None;
        let mut failures = 0u32;
        let mut failing: Option<&'static str> = None;
        // When to try following the upstream stream (again).
        let mut stream_at = self.streaming.then(tokio::time::Instant::now);
        let mut fell_back: Option<String> = None;
        loop {
            match self.fleet_turn().await {
                Turn::Mine => {}
                Turn::Cancelled => return,
                // Start from a full answer: the fleet's snapshots may have moved on.
                Turn::Waited => {
                    etag = None;
                    continue;
                }
            }
            if let Some(at) = stream_at.filter(|at| *at <= tokio::time::Instant::now()) {
                match self.follow(index, &token).await {
                    follow::Followed::Cancelled | follow::Followed::NotNeeded => return,
                    follow::Followed::Paused => continue,
                    follow::Followed::Fallback(reason) => {
                        fall_back(&env, &token, reason, &mut fell_back);
                        stream_at =
                            Some(at.max(tokio::time::Instant::now()) + follow::STREAM_RETRY);
                        // The poll starts from a full answer.
                        etag = None;
                    }
                }
            }
            let Some(revoked) = self.still_polled(index) else {
                return;
            };
            // One trace per poll: the fetch, and the publish of what it brought.
            let cycle = crate::otel::internal_span("poll features", &env);
            let result = self
                .upstream
                .features(&token, etag.as_deref(), &self.app.metrics)
                .instrument(cycle.clone())
                .await;
            match result {
                Ok(fetch) => {
                    self.note_fetch(index, etag.as_deref(), &fetch);
                    if let Some(reason) = failing.take() {
                        tracing::info!(environment = %env, token = %token, after = reason, "features fetch works again");
                    }
                    failures = 0;
                    if let Fetch::Updated { etag: new, .. } = &fetch {
                        etag.clone_from(new);
                    }
                    if revoked {
                        self.reinstate(index);
                    }
                    self.take_fetch(index, &env, fetch, cycle).await;
                }
                Err(UpstreamError::Refused(status)) => {
                    failing = Some("refused");
                    etag = None;
                    if !revoked {
                        self.revoke(index, status).await;
                    }
                }
                Err(e) => {
                    failures += 1;
                    self.fetch_failed(index, &token, &e, failures, &mut failing);
                }
            }
            if !self.wait(self.next_delay(index, failures)).await {
                return;
            }
        }
    }
}

/// Polling instead of following the upstream stream: logged once per reason.
fn fall_back(env: &str, token: &Token, reason: String, last: &mut Option<String>) {
    if last.as_ref() != Some(&reason) {
        tracing::warn!(environment = %env, token = %token, reason = %reason, retry_seconds = follow::STREAM_RETRY.as_secs(), "polling instead of following the upstream stream");
    }
    *last = Some(reason);
}

/// Whether a poll loop may poll now (see `Refresh::fleet_turn`).
enum Turn {
    Mine,
    Waited,
    Cancelled,
}
