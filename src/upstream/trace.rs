//! Client spans for upstream calls, when traces are exported: one per call, named by method and
//! path, with the HTTP semantic conventions and `traceparent` written into the request so the
//! trace continues in Unleash. Never a header value (tokens) and never a query string.

use reqwest::header::IF_NONE_MATCH;
use reqwest::{Request, StatusCode};

use super::UpstreamError;

/// The span of one call (`Span::none()` without export), with `traceparent` put in `request`.
pub(super) fn begin(call: &'static str, request: &mut Request) -> tracing::Span {
    if !crate::otel::enabled() {
        return tracing::Span::none();
    }
    let url = request.url();
    let mut shown = url.clone();
    shown.set_query(None);
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    let conditional = request.headers().contains_key(IF_NONE_MATCH);
    let span = tracing::info_span!(
        "upstream",
        otel.name = format!("{} {}", request.method(), url.path()),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        http.request.method = request.method().as_str(),
        http.response.status_code = tracing::field::Empty,
        url.full = shown.as_str(),
        server.address = url.host_str().unwrap_or(""),
        server.port = url.port_or_known_default().map(i64::from),
        flagpost.call = call,
        flagpost.etag = if call == "features" {
            Some(if conditional { "sent" } else { "none" })
        } else {
            None
        },
        error.type = tracing::field::Empty,
    );
    request
        .headers_mut()
        .extend(crate::otel::propagate::outgoing(&span));
    span
}

/// The call's outcome on its span.
pub(super) fn end(span: &tracing::Span, result: Result<StatusCode, &UpstreamError>) {
    if span.is_none() {
        return;
    }
    match result {
        Ok(status) => {
            span.record("http.response.status_code", i64::from(status.as_u16()));
            if status == StatusCode::NOT_MODIFIED {
                span.record("flagpost.etag", "not_modified");
            }
            if status.is_client_error() || status.is_server_error() {
                span.record("otel.status_code", "error");
                span.record("error.type", status.as_str());
            }
        }
        Err(e) => {
            span.record("otel.status_code", "error");
            span.record("error.type", e.outcome());
        }
    }
}
