//! W3C trace context: `traceparent`/`tracestate` read from SDK requests, written into every
//! upstream request, so one trace runs from the app through flagpost into Unleash.

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::Context;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

struct Read<'a>(&'a http::HeaderMap);

impl Extractor for Read<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct Write<'a>(&'a mut http::HeaderMap);

impl Injector for Write<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// The caller's trace context, from an empty context: a request without `traceparent` starts
/// a trace of its own instead of joining whatever the connection's task was in.
pub fn incoming(headers: &http::HeaderMap) -> Context {
    opentelemetry::global::get_text_map_propagator(|p| {
        p.extract_with_context(&Context::new(), &Read(headers))
    })
}

/// `traceparent` (and `tracestate`) naming `span`, for an outgoing request.
pub fn outgoing(span: &tracing::Span) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut Write(&mut headers))
    });
    headers
}

/// The current span's trace context when spans are exported, to carry work handed to a
/// background task (a token validation) into the trace of the request that waits for it.
pub fn current() -> Option<Context> {
    use opentelemetry::trace::TraceContextExt as _;
    if !super::enabled() {
        return None;
    }
    let cx = tracing::Span::current().context();
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` a child of `parent` (and linked to the other waiters' spans), if traced.
pub fn adopt(
    span: &tracing::Span,
    parent: Option<Context>,
    others: impl IntoIterator<Item = Context>,
) {
    use opentelemetry::trace::TraceContextExt as _;
    if let Some(parent) = parent {
        let _ = span.set_parent(parent);
    }
    for cx in others {
        span.add_link(cx.span().span_context().clone());
    }
}
