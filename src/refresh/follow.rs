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
#[derive(Debug)]
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

/// What following one token's stream remembers across connections: where to resume, and the
/// recent failures that decide the wait before reconnecting or the fallback to polling.
#[derive(Debug, Default)]
struct Resume {
    /// The id of the last event applied; `None` after one that could not be, so the next
    /// connection starts from a full copy.
    last_id: Option<String>,
    /// When connections failed, within the last [`FAILURE_WINDOW`].
    failures: VecDeque<Instant>,
    /// The last failure, while reconnecting after it.
    failing: Option<String>,
}

impl Resume {
    /// The event id to resume after: the last applied one, if the token has a document to
    /// apply what follows to.
    fn after(&self, has_document: bool) -> Option<&str> {
        self.last_id.as_deref().filter(|_| has_document)
    }

    fn applied(&mut self, id: Option<String>) {
        self.last_id = id;
    }

    /// An event could not be applied: start again from a full copy, as the SDKs do.
    fn unapplied(&mut self) {
        self.last_id = None;
    }

    /// A connection opened: the failure it recovers from, if any.
    fn opened(&mut self) -> Option<String> {
        self.failing.take()
    }

    /// A connection failed or ended at `now`: how long to wait before the next, or the
    /// reason to poll instead after [`MAX_FAILURES`] within [`FAILURE_WINDOW`]. The first
    /// failure of a run is returned to be logged.
    fn failed(&mut self, now: Instant, problem: String) -> Result<Failed, Followed> {
        self.failures.push_back(now);
        while self
            .failures
            .front()
            .is_some_and(|t| now - *t > FAILURE_WINDOW)
        {
            self.failures.pop_front();
        }
        if self.failures.len() >= MAX_FAILURES {
            return Err(Followed::Fallback(format!(
                "{MAX_FAILURES} stream failures within a minute, the last: {problem}"
            )));
        }
        let delay = backoff(
            Duration::from_secs(1),
            u32::try_from(self.failures.len()).unwrap_or(1),
        );
        let first = self.failing.is_none();
        self.failing = Some(problem);
        Ok(Failed { delay, first })
    }
}

/// What to do after a failed connection.
#[derive(Debug)]
struct Failed {
    delay: Duration,
    /// The first failure since the stream last worked (logged; the others are not).
    first: bool,
}

impl Refresh {
    pub(super) async fn follow(self: &Arc<Self>, index: usize, token: &Token) -> Followed {
        let mut resume = Resume::default();
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
            let after = resume.after(has_document).map(str::to_string);
            let opened = tokio::select! {
                _ = self.cancel.cancelled() => return Followed::Cancelled,
                opened = self.upstream.stream(token, after.as_deref(), &self.app.metrics) => opened,
            };
            let problem = match opened {
                Ok(mut stream) => {
                    if let Some(before) = resume.opened() {
                        tracing::info!(token = %token, after = %before, "following the upstream stream again");
                    } else {
                        tracing::info!(token = %token, resumed = after.is_some(), "following the upstream stream");
                    }
                    match self.read(index, token, &mut stream, &mut resume).await {
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
            let shown = problem.clone();
            let failed = match resume.failed(Instant::now(), problem) {
                Ok(failed) => failed,
                Err(fallback) => return fallback,
            };
            if failed.first {
                tracing::warn!(token = %token, problem = %shown, "the upstream stream failed; reconnecting");
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return Followed::Cancelled,
                _ = tokio::time::sleep(failed.delay) => {}
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
        resume: &mut Resume,
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
                            resume.unapplied();
                            bad = true;
                            tracing::warn!(token = %token, error = %e, "an upstream stream event cannot be applied; reconnecting for a full copy");
                            break;
                        }
                        resume.applied(event.id);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each connection resumes after the last event applied, once there is a document to
    /// apply to; after an event that could not be applied, the next starts from a full copy.
    #[test]
    fn a_follow_resumes_after_the_last_applied_event() {
        let mut resume = Resume::default();
        assert_eq!(resume.after(false), None, "the first connection hydrates");
        resume.applied(Some("41".into()));
        resume.applied(Some("42".into()));
        assert_eq!(resume.after(true), Some("42"));
        assert_eq!(resume.after(false), None, "nothing to apply a delta to");
        resume.applied(None);
        assert_eq!(resume.after(true), None, "an event without an id");
        resume.applied(Some("43".into()));
        resume.unapplied();
        assert_eq!(resume.after(true), None, "a bad event means a full copy");
    }

    /// Failures back off, the first of a run is the one logged, a working connection ends
    /// the run, and five within a minute mean polling; older ones are forgotten.
    #[test]
    fn failures_back_off_and_five_within_a_minute_mean_polling() {
        let mut resume = Resume::default();
        let start = Instant::now();
        let first = resume.failed(start, "reset".into()).unwrap();
        assert!(first.first);
        let second = resume.failed(start, "reset".into()).unwrap();
        assert!(!second.first);
        assert!(first.delay <= Duration::from_secs(1) && second.delay >= Duration::from_secs(1));
        assert_eq!(resume.opened().as_deref(), Some("reset"));
        assert_eq!(resume.opened(), None);
        assert!(resume.failed(start, "eof".into()).unwrap().first);
        // Two more make five within the minute.
        resume
            .failed(start + Duration::from_secs(10), "eof".into())
            .unwrap();
        match resume.failed(start + Duration::from_secs(20), "eof".into()) {
            Err(Followed::Fallback(why)) => assert!(why.contains("5 stream failures"), "{why}"),
            other => panic!("expected a fallback, got {other:?}"),
        }
        // The same five spread over more than a minute do not.
        let mut resume = Resume::default();
        for i in 0..8u64 {
            let at = start + Duration::from_secs(20 * i);
            assert!(resume.failed(at, "eof".into()).is_ok(), "failure {i}");
        }
    }
}
