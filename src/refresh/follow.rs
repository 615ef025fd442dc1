//! `edge --streaming`: following the upstream's `/api/client/streaming` instead of polling.
//!
//! The stream's events are applied to the startup token's document, which is merged and
//! published like a poll's answer, with upstream's event ids as revisions. A stream that ends
//! or fails is reopened with backoff, resuming after the last event id (or with a hydration,
//! after an event that could not be applied). Upstream answering 401, 403, 404, 429 or 501,
//! asking for polling, or five failures within a minute, mean polling instead (the poll also
//! handles a refused token); the stream is tried again after [`STREAM_RETRY`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tracing::Instrument as _;

use super::Refresh;
use crate::backoff::backoff;
use crate::token::Token;
use crate::upstream::UpstreamError;

/// How long flagpost polls after falling back before it tries the stream again.
pub(super) const STREAM_RETRY: Duration = Duration::from_secs(300);

/// Failures within [`FAILURE_WINDOW`] after which flagpost polls instead.
const MAX_FAILURES: usize = 5;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);

/// How following a stream ended.
pub(super) enum Followed {
    /// flagpost is stopping.
    Cancelled,
    /// Another startup token's poll covers this one now.
    NotNeeded,
    /// Poll instead, for this reason.
    Fallback(String),
    /// Another instance of the fleet polls now.
    Paused,
}

impl Refresh {
    pub(super) async fn follow(self: &Arc<Self>, index: usize, token: &Token) -> Followed {
        let mut failures: VecDeque<Instant> = VecDeque::new();
        let mut last_id: Option<String> = None;
        let mut failing: Option<String> = None;
        loop {
            if self.app.fleet.as_ref().is_some_and(|f| !f.may_poll()) {
                return Followed::Paused;
            }
            match self.still_polled(index) {
                None => return Followed::NotNeeded,
                Some(true) => return Followed::Fallback("upstream refused the token".into()),
                Some(false) => {}
            }
            let has_document = self.lock().get(index).is_some_and(|s| s.document.is_some());
            let resume = last_id.as_deref().filter(|_| has_document);
            let opened = tokio::select! {
                _ = self.cancel.cancelled() => return Followed::Cancelled,
                opened = self.upstream.stream(token, resume, &self.app.metrics) => opened,
            };
            let problem = match opened {
                Ok(mut stream) => {
                    if let Some(before) = failing.take() {
                        tracing::info!(token = %token, after = %before, "following the upstream stream again");
                    } else {
                        tracing::info!(token = %token, resumed = resume.is_some(), "following the upstream stream");
                    }
                    match self.read(index, token, &mut stream, &mut last_id).await {
                        Ok(problem) => problem,
                        Err(end) => return end,
                    }
                }
                Err(UpstreamError::Status(code @ (401 | 403 | 404 | 429 | 501)))
                | Err(UpstreamError::Refused(code)) => {
                    return Followed::Fallback(format!(
                        "upstream answered {code} for /api/client/streaming"
                    ));
                }
                Err(e) => e.to_string(),
            };
            let now = Instant::now();
            failures.push_back(now);
            while failures.front().is_some_and(|t| now - *t > FAILURE_WINDOW) {
                failures.pop_front();
            }
            if failures.len() >= MAX_FAILURES {
                return Followed::Fallback(format!(
                    "{MAX_FAILURES} stream failures within a minute, the last: {problem}"
                ));
            }
            if failing.is_none() {
                tracing::warn!(token = %token, problem = %problem, "the upstream stream failed; reconnecting");
            }
            failing = Some(problem);
            let delay = backoff(
                Duration::from_secs(1),
                u32::try_from(failures.len()).unwrap_or(1),
            );
            tokio::select! {
                _ = self.cancel.cancelled() => return Followed::Cancelled,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Reads an open stream and applies its events until it ends or fails (`Ok`: why), or
    /// until following must stop (`Err`).
    async fn read(
        &self,
        index: usize,
        token: &Token,
        stream: &mut crate::upstream::EventStream,
        last_id: &mut Option<String>,
    ) -> Result<String, Followed> {
        let mut roles = self.app.fleet.as_ref().map(|f| f.roles());
        loop {
            let demoted = async {
                match roles.as_mut() {
                    Some(r) => {
                        let _ = r.wait_for(|r| *r == crate::fleet::Role::Follower).await;
                    }
                    None => std::future::pending().await,
                }
            };
            let next = tokio::select! {
                _ = self.cancel.cancelled() => return Err(Followed::Cancelled),
                _ = demoted => return Err(Followed::Paused),
                next = stream.next() => next,
            };
            let events = match next {
                Ok(Some(events)) => events,
                Ok(None) => return Ok("upstream ended the stream".to_string()),
                Err(e) => return Ok(e.to_string()),
            };
            self.touch(index);
            let mut bad = false;
            for event in events {
                match event.name.as_str() {
                    "unleash-connected" | "unleash-updated" => {
                        self.app.metrics.upstream_stream_events.inc();
                        let applying = crate::otel::internal_span(
                            "stream event",
                            token.environment().unwrap_or_default(),
                        );
                        let applied = self
                            .apply(index, event.data.as_bytes())
                            .instrument(applying)
                            .await;
                        if let Err(e) = applied {
                            // Start again from a hydration, as the SDKs do.
                            *last_id = None;
                            bad = true;
                            tracing::warn!(token = %token, error = %e, "an upstream stream event cannot be applied; reconnecting for a full copy");
                            break;
                        }
                        *last_id = event.id;
                    }
                    "fetch-mode" if event.data.trim() == "polling" => {
                        return Err(Followed::Fallback(
                            "upstream asked its clients to poll".into(),
                        ));
                    }
                    _ => {}
                }
            }
            if bad {
                return Ok("an event could not be applied".to_string());
            }
        }
    }

    /// Upstream showed it is alive (an event or a heartbeat).
    fn touch(&self, index: usize) {
        if let Some(s) = self.lock().get_mut(index) {
            s.last_success = Some(SystemTime::now());
        }
    }

    /// Applies one event's data to the token's document and publishes the environment. The
    /// lock is held only to take the document and to put the new one back: parsing, applying
    /// and merging a large flag set happen on a blocking thread, never under the lock the
    /// readiness check and the metrics scrape take, nor on an async worker.
    async fn apply(&self, index: usize, data: &[u8]) -> Result<(), crate::document::DocumentError> {
        let (current, env) = {
            let sources = self.lock();
            let Some(source) = sources.get(index) else {
                return Ok(());
            };
            (source.document.clone(), source.scope.environment.clone())
        };
        let data = data.to_vec();
        let applied = tokio::task::spawn_blocking(move || {
            let mut next = current.as_deref().cloned().unwrap_or_default();
            next.apply_events(&data).map(|_| next)
        })
        .await
        .map_err(|e| crate::document::DocumentError::Event(e.to_string()))??;
        let parts = {
            let mut sources = self.lock();
            let Some(source) = sources.get_mut(index) else {
                return Ok(());
            };
            source.document = Some(Arc::new(applied));
            super::sources::parts(&sources, &env)
        };
        let Some(parts) = parts else {
            return Ok(());
        };
        let merged = tokio::task::spawn_blocking(move || super::sources::merge(parts)).await;
        if let Ok(document) = merged {
            self.publish(&env, document).await;
        }
        Ok(())
    }
}
