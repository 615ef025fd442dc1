//! The request's identity and its span: the id for logs and `X-Request-Id`, and, when traces
//! are exported, the OpenTelemetry server span with the HTTP semantic conventions, the caller's
//! `traceparent` as its parent, and what flagpost decided (token kind and environment, refusal
//! code, how the answer was made), recorded with [`note`] as it is known.

use std::net::SocketAddr;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::server::App;

pub(super) const X_REQUEST_ID: http::HeaderName = http::HeaderName::from_static("x-request-id");

/// The request's id for logs and the `X-Request-Id` response header: the client's (or load
/// balancer's) `X-Request-Id` when it is a sane token (1 to 128 of `A-Z a-z 0-9 - _ . :`),
/// otherwise a new random one; never hostile bytes in a header or a log line.
pub(super) struct RequestId(pub(super) String);

impl RequestId {
    pub(super) fn of(headers: &http::HeaderMap) -> RequestId {
        let given = headers
            .get(X_REQUEST_ID)
            .map(http::HeaderValue::as_bytes)
            .filter(|v| {
                (1..=128).contains(&v.len())
                    && v.iter()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(b))
            });
        match given {
            Some(v) => RequestId(String::from_utf8_lossy(v).into_owned()),
            None => RequestId(format!("{:016x}", rand::random::<u64>())),
        }
    }
}

/// The `request` span. Without export, the few fields the log shows; with it, the server span.
pub(super) fn request_span(
    app: &App,
    req: &Request<Incoming>,
    route: Option<&'static str>,
    request_id: &str,
    peer: SocketAddr,
) -> tracing::Span {
    // Not traced (export off, or not sampled): the plain span the log has always had.
    let Some(head) = crate::otel::sample::head(req.headers()) else {
        return tracing::info_span!(
            "request",
            method = %req.method(),
            route,
            request_id,
        );
    };
    let method = req.method().as_str();
    let name = match route {
        Some(r) => format!("{method} {r}"),
        None => method.to_string(),
    };
    let client =
        super::client_ip::client_ip(peer.ip(), req.headers(), &app.config.server.trusted_proxies);
    let version = match req.version() {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        _ => "1.1",
    };
    let app_name = req
        .headers()
        .get("unleash-appname")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.chars().take(128).collect::<String>());
    let span = tracing::info_span!(
        "request",
        otel.name = name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        request_id,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        url.path = req.uri().path(),
        url.query = tracing::field::Empty,
        client.address = %client,
        network.protocol.version = version,
        unleash.app_name = app_name,
        unleash.token.kind = tracing::field::Empty,
        unleash.token.environment = tracing::field::Empty,
        unleash.context = tracing::field::Empty,
        flagpost.refusal = tracing::field::Empty,
        flagpost.answer = tracing::field::Empty,
        flagpost.sampled = head.drawn.then_some(true),
    );
    if app.config.otel.as_ref().is_some_and(|o| o.record_query) {
        if let Some(q) = req.uri().query() {
            span.record("url.query", q);
        }
    }
    // Before the span is first entered; from an empty context, so a request without
    // `traceparent` starts its own trace.
    let _ = span.set_parent(head.parent);
    span
}

/// The status on the server span: a 5xx is an error; a 4xx is the client's and leaves it unset.
pub(super) fn finish(span: &tracing::Span, status: StatusCode) {
    if !crate::otel::enabled() {
        return;
    }
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
}

/// Records one of the request span's decision fields, when traces are exported.
pub(crate) fn note(field: &'static str, value: &str) {
    if crate::otel::enabled() {
        tracing::Span::current().record(field, value);
    }
}

/// The Frontend context on the request span, only when `--otel-record-context` allows it.
pub(super) fn note_context(app: &App, context: &impl serde::Serialize) {
    if crate::otel::enabled() && app.config.otel.as_ref().is_some_and(|o| o.record_context) {
        let text = serde_json::to_string(context).unwrap_or_default();
        let text: String = text.chars().take(2048).collect();
        tracing::Span::current().record("unleash.context", text.as_str());
    }
}
