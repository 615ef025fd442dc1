//! Following an upstream's `/api/client/streaming` (`edge --streaming`): opening the stream and
//! reading its events, each bounded by `upstream_max_body_size`.

use std::time::{Duration, Instant};
use tracing::Instrument as _;

use reqwest::header::HeaderValue;
use reqwest::StatusCode;

use super::{sensitive, unreachable, Upstream, UpstreamError};
use crate::metrics::Metrics;
use crate::token::Token;

/// How long a stream may stay silent (no event, no heartbeat) before it is given up.
pub const STREAM_SILENCE: Duration = Duration::from_secs(90);

/// An open upstream stream.
#[derive(Debug)]
pub struct EventStream {
    response: reqwest::Response,
    parser: crate::sse::Parser,
}

impl EventStream {
    /// The events the next bytes complete (often none: a heartbeat); `None` when upstream
    /// ended the stream.
    pub async fn next(&mut self) -> Result<Option<Vec<crate::sse::Event>>, UpstreamError> {
        match self.response.chunk().await.map_err(|e| unreachable(&e))? {
            None => Ok(None),
            Some(bytes) => self
                .parser
                .feed(&bytes)
                .map(Some)
                .map_err(|e| UpstreamError::BadBody(e.to_string())),
        }
    }

    pub fn last_id(&self) -> Option<&str> {
        self.parser.last_id()
    }
}

impl Upstream {
    /// `GET /api/client/streaming` with the token, resuming after `last_id`. Returns the open
    /// stream, or the status upstream answered instead.
    pub async fn stream(
        &self,
        token: &Token,
        last_id: Option<&str>,
        metrics: &Metrics,
    ) -> Result<EventStream, UpstreamError> {
        let Some(http) = &self.streaming else {
            return Err(UpstreamError::Status(501));
        };
        let mut request = http
            .get(format!("{}/api/client/streaming", self.base))
            .header(self.auth_header.clone(), sensitive(token.expose()))
            .header(reqwest::header::ACCEPT, "text/event-stream");
        if let Some(id) = last_id.and_then(|id| HeaderValue::from_str(id).ok()) {
            request = request.header("last-event-id", id);
        }
        let started = Instant::now();
        let mut request = request.build().map_err(|e| unreachable(&e))?;
        let span = super::trace::begin("streaming", &mut request);
        let response = http
            .execute(request)
            .instrument(span.clone())
            .await
            .map_err(|e| {
                let e = unreachable(&e);
                metrics.upstream_outcome("streaming", e.outcome());
                super::trace::end(&span, Err(&e));
                e
            })?;
        super::trace::end(&span, Ok(response.status()));
        metrics.upstream_latency("streaming", started.elapsed().as_secs_f64());
        let status = response.status();
        let is_events = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if status != StatusCode::OK {
            let error = UpstreamError::Status(status.as_u16());
            metrics.upstream_outcome("streaming", error.outcome());
            return Err(error);
        }
        if !is_events {
            metrics.upstream_outcome("streaming", "bad_body");
            return Err(UpstreamError::BadBody(
                "the streaming answer is not text/event-stream".into(),
            ));
        }
        metrics.upstream_outcome("streaming", "ok");
        let limit = usize::try_from(self.max_body).unwrap_or(usize::MAX);
        Ok(EventStream {
            response,
            parser: crate::sse::Parser::new(limit),
        })
    }
}
