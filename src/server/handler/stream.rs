//! `/api/client/streaming` (Server-Sent Events) and `/api/client/delta`: the same token check,
//! scope rule and filters as `/api/client/features`, then a hydration or the changes the client
//! missed (PROTOCOL.md §6).

use std::sync::Arc;

use super::api::client_filter;
use super::*;
use crate::delta;
use crate::stream::Stream;

const LAST_EVENT_ID: http::HeaderName = http::HeaderName::from_static("last-event-id");

/// Opens a stream: `unleash-connected` with a hydration, or with the changes missed since a
/// `Last-Event-ID` this instance still holds; then `unleash-updated` for every change the
/// stream's filter sees, and heartbeats.
pub(super) async fn client_streaming(
    app: &App,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    // Token and scope only: the snapshot is read under the publisher's lock below, with the
    // revision and history it goes with.
    let (access, loaded) = admit(app, req.headers(), TokenKind::Client).await?;
    let filter = client_filter(&access, req.uri().query())?;
    if req.method() == Method::HEAD {
        return match loaded {
            Some(_) => Ok(event_stream(Reply::empty())),
            None => Err(ApiError::Gate(GateError::NotReady {
                environment: access.scope.environment.clone(),
            })),
        };
    }
    let last = req
        .headers()
        .get(LAST_EVENT_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(delta::parse_id);
    let slot = app.streams.try_open().ok_or(ApiError::TooManyStreams {
        limit: app.streams.settings().max_streams,
    })?;
    let environment = access.scope.environment.clone();
    let (since, changes) = app
        .publisher
        .open(&environment, last)
        .ok_or(ApiError::Gate(GateError::NotReady { environment }))?;
    let revision = since.snapshot.revision();
    let first = match &since.missed {
        Some(missed) => {
            let rendered: Vec<_> = missed.iter().map(|c| delta::render(c, &filter)).collect();
            let lists: Vec<&[u8]> = rendered.iter().map(|r| &r.events[..]).collect();
            vec![Bytes::from(delta::frame(
                "unleash-connected",
                revision,
                &lists,
            ))]
        }
        // The hydration's bytes are shared by every stream of this filter.
        None => vec![
            Bytes::from(delta::frame_head("unleash-connected", revision)),
            since.snapshot.hydration(&filter).bytes.clone(),
            Bytes::from_static(b"\n\n"),
        ],
    };
    tracing::debug!(
        token = %access.token,
        revision,
        resumed = since.missed.is_some(),
        "stream opened"
    );
    let stream = Stream {
        slot,
        access,
        filter,
        sent: revision,
        changes,
    };
    let rx = app
        .streams
        .start(stream, first, Arc::clone(&app.auth), Arc::clone(&app.store));
    Ok(event_stream(Reply::stream(rx)))
}

fn event_stream(body: Reply) -> HttpResponse {
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies such as nginx must pass each event on at once.
    h.insert(
        http::HeaderName::from_static("x-accel-buffering"),
        HeaderValue::from_static("no"),
    );
    r
}

/// The changes since the revision in `If-None-Match`: 304 when it is current, the missed
/// events when it is held, a hydration otherwise; `ETag: "<revision>"`.
pub(super) async fn client_delta(
    app: &App,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    // Token and scope only: the snapshot is read with its revision and history below.
    let (access, _) = admit(app, req.headers(), TokenKind::Client).await?;
    let filter = client_filter(&access, req.uri().query())?;
    let last = req
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .and_then(delta::parse_id);
    let environment = access.scope.environment.clone();
    let since = app
        .publisher
        .since(&environment, last)
        .ok_or(ApiError::Gate(GateError::NotReady { environment }))?;
    let etag = format!("\"{}\"", since.snapshot.revision());
    let body = match since.missed {
        Some(missed) if missed.is_empty() => return Ok(not_modified(&etag, false)),
        Some(missed) => {
            let rendered: Vec<_> = missed.iter().map(|c| delta::render(c, &filter)).collect();
            let lists: Vec<&[u8]> = rendered.iter().map(|r| &r.events[..]).collect();
            Bytes::from(delta::events_body(&lists))
        }
        None => since.snapshot.hydration(&filter).bytes.clone(),
    };
    let mut r = Response::new(Reply::full(body));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, JSON);
    insert_etag(h, &etag);
    Ok(r)
}
