//! Request handling: route, authenticate, gate by scope, answer from the snapshot. Every error
//! goes through [`ApiError::into_response`]; every answer is counted once.

use std::net::SocketAddr;
use std::time::Instant;

use super::body::Reply;
use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_NONE_MATCH, ORIGIN};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

use super::error::ApiError;
use super::refusal::Line;
use super::route::{self, Matched, Route, RouteError};
use super::{client_ip, cors};
use crate::auth::{Access, AuthError};
use crate::evaluate::{self, Listing};
use crate::server::App;
use crate::snapshot::{etag_of, etag_value, Filter, GateError, Snapshot};
use crate::token::{Projects, TokenKind};
pub use access::redirect_to_https;
use access::{peer_allowed, under_base};
use trace::{RequestId, X_REQUEST_ID};

mod access;
mod api;
mod backstage;
mod stream;
mod trace;

pub use api::MAX_VALIDATE_TOKENS;
use api::{client_api, edge_validate, frontend_api, usage_api};
use stream::{client_delta, client_streaming};

const JSON: HeaderValue = HeaderValue::from_static("application/json");

pub(crate) type HttpResponse = Response<Reply>;

/// Answers one request. Never fails: errors become responses.
pub async fn handle(app: &App, req: Request<Incoming>, peer: SocketAddr) -> HttpResponse {
    use tracing::Instrument as _;
    let request_id = RequestId::of(req.headers());
    // Routed before the span is made, so its fields are formatted once.
    // Every route lives under the base path (Unleash Edge's --base-path); nothing outside it.
    let routed = match under_base(&app.config.server.base_path, req.uri().path()) {
        Some(path) => route::route(req.method(), path),
        None => Err(RouteError::NotFound),
    };
    let label = match &routed {
        Ok(Matched { route, .. }) | Err(RouteError::MethodNotAllowed(route)) => {
            route::ROUTE_LABELS.get(route.index()).copied()
        }
        Err(_) => None,
    };
    let span = trace::request_span(app, &req, label, &request_id.0, peer);
    let mut response = answer(app, req, peer, routed)
        .instrument(span.clone())
        .await;
    trace::finish(&span, response.status());
    // The id's own buffer becomes the header value: no copy.
    if let Ok(value) = http::HeaderValue::from_maybe_shared(Bytes::from(request_id.0)) {
        response.headers_mut().insert(X_REQUEST_ID, value);
    }
    response
}

async fn answer(
    app: &App,
    req: Request<Incoming>,
    peer: SocketAddr,
    routed: Result<Matched, RouteError>,
) -> HttpResponse {
    let started = Instant::now();
    let in_flight = InFlight::enter(app);
    let method = req.method().clone();
    let origin = req.headers().get(ORIGIN).cloned();
    let refused_peer = !peer_allowed(&app.config.server, peer.ip());
    let (route, result) = match routed {
        // Unleash Edge's allow and deny lists: the socket peer, before anything else.
        Ok(matched) if refused_peer => (matched.route, Err(ApiError::AddressNotAllowed)),
        Err(_) if refused_peer => (Route::Unmatched, Err(ApiError::AddressNotAllowed)),
        // RFC 9112 §3.2: an HTTP/1.1 request without Host is answered 400.
        Ok(matched)
            if req.version() == http::Version::HTTP_11
                && !req.headers().contains_key(http::header::HOST) =>
        {
            (
                matched.route,
                Err(ApiError::BadRequest(
                    "An HTTP/1.1 request must carry a Host header (RFC 9112 section 3.2).".into(),
                )),
            )
        }
        // Shed load early, but keep answering probes and scrapes.
        Ok(matched)
            if in_flight.over_limit
                && !matches!(matched.route, Route::Health | Route::Ready | Route::Metrics) =>
        {
            app.metrics.shed.with_label_values(&["in_flight"]).inc();
            (matched.route, Err(ApiError::Overloaded))
        }
        Ok(matched) => {
            let route = matched.route;
            let deadline = app.config.server.request_timeout;
            let result = tokio::time::timeout(deadline, dispatch(app, matched, req, peer))
                .await
                .unwrap_or(Err(ApiError::Timeout));
            (route, result)
        }
        Err(e) => {
            let (route, error) = route_error(e, &method, req.uri().path());
            (route, Err(error))
        }
    };
    let label = route::ROUTE_LABELS
        .get(route.index())
        .copied()
        .unwrap_or("");
    let mut response = match result {
        Ok(r) => r,
        Err(e) => error_response(app, e, &method, label),
    };
    if route.is_frontend() {
        cors::decorate(&app.config.cors, origin.as_ref(), &mut response);
    }
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    app.metrics
        .observe_request(route.index(), &method, status, elapsed.as_secs_f64());
    tracing::debug!(%method, route = label, status, micros = elapsed.as_micros() as u64, "request");
    response
}

/// A refusal or failure as its JSON response; a 5xx is logged (within the budget), a 4xx is
/// counted for the summary.
fn error_response(app: &App, e: ApiError, method: &Method, label: &str) -> HttpResponse {
    trace::note("flagpost.refusal", e.code());
    let status = e.status().as_u16();
    if status >= 500 {
        // Ours or upstream's: worth an operator's attention, within the budget (a
        // client can cause many: new tokens while upstream is down, overload).
        if app.request_log.line(Line::Failed) {
            tracing::warn!(%method, route = label, status, error = ?e, "request failed");
        } else {
            tracing::debug!(%method, route = label, status, error = ?e, "request failed");
        }
    } else {
        // The client's: one line at debug, and counted for the summary at info.
        tracing::debug!(%method, route = label, status, error = ?e, "request refused");
        app.request_log.refused(e.code());
    }
    e.into_response()
}

/// The route (for the metrics label) and the error for a path the router did not match.
fn route_error(e: RouteError, method: &Method, path: &str) -> (Route, ApiError) {
    let path: String = path.chars().take(200).collect();
    match e {
        RouteError::NotFound => (
            Route::Unmatched,
            ApiError::NotFound(format!("There is no {method} {path} here.")),
        ),
        RouteError::MethodNotAllowed(route) => (
            route,
            ApiError::MethodNotAllowed {
                method: method.to_string(),
                path,
                allowed: route.allowed(),
            },
        ),
        RouteError::BadPath => (
            Route::Unmatched,
            ApiError::BadRequest("The path is not valid UTF-8 once percent-decoded.".into()),
        ),
    }
}

/// Counts a request as in flight until dropped (also when the client goes away mid-request).
struct InFlight<'a> {
    app: &'a App,
    over_limit: bool,
}

impl<'a> InFlight<'a> {
    fn enter(app: &'a App) -> InFlight<'a> {
        let now = app
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1;
        app.metrics.requests_in_flight.inc();
        InFlight {
            app,
            over_limit: now > app.config.server.max_in_flight,
        }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.app
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.app.metrics.requests_in_flight.dec();
    }
}

async fn dispatch(
    app: &App,
    matched: Matched,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<HttpResponse, ApiError> {
    match matched.route {
        Route::Health => Ok(json_response(StatusCode::OK, r#"{"health":"GOOD"}"#)),
        Route::Ready => Ok(match app.check_readiness() {
            Ok(()) => json_response(StatusCode::OK, r#"{"health":"READY"}"#),
            Err(why) => {
                let body = serde_json::json!({
                    "error": "not_ready",
                    "message": format!("flagpost cannot serve every environment it is configured for: {why}."),
                    "reason": why,
                });
                let mut r = Response::new(Reply::full(Bytes::from(body.to_string())));
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                r.headers_mut().insert(CONTENT_TYPE, JSON);
                r
            }
        }),
        Route::Metrics if !app.config.backstage.metrics => Err(ApiError::NotFound(
            "The metrics endpoint is turned off (--disable-metrics-endpoint).".into(),
        )),
        Route::Metrics => {
            app.observe();
            let mut r = Response::new(Reply::full(Bytes::from(app.metrics.render())));
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(r)
        }
        Route::ClientFeatures | Route::ClientFeature => client_api(app, matched, req).await,
        Route::ClientStreaming => client_streaming(app, req).await,
        Route::ClientDelta => client_delta(app, req).await,
        Route::Explain => backstage::explain(app, req).await,
        Route::BackstageTokens
        | Route::BackstageFeatures
        | Route::BackstageMetricsBatch
        | Route::BackstageInstanceData => backstage::inspect(app, matched.route, req.headers()),
        Route::EdgeValidate => edge_validate(app, req, peer).await,
        Route::ClientEdgeMetrics => backstage::downstream_instance(app, req).await,
        Route::ClientMetrics | Route::ClientRegister | Route::ClientBulkMetrics => {
            usage_api(app, matched.route, req).await
        }
        Route::FrontendMetrics | Route::FrontendRegister => {
            if req.method() == Method::OPTIONS {
                return Ok(cors::preflight(&app.config.cors, req.headers()));
            }
            usage_api(app, matched.route, req).await
        }
        Route::Frontend | Route::FrontendAll | Route::FrontendFeature => {
            if req.method() == Method::OPTIONS {
                return Ok(cors::preflight(&app.config.cors, req.headers()));
            }
            if matched.route == Route::FrontendAll && !app.config.frontend.all_endpoint {
                return Err(ApiError::AllEndpointDisabled);
            }
            frontend_api(app, matched, req, peer).await
        }
        Route::Unmatched => Err(ApiError::NotFound("There is nothing here.".into())),
    }
}

/// [`admit`] for an answer made from the snapshot: one not loaded yet is 503 `not_ready`.
async fn admit_loaded(
    app: &App,
    headers: &HeaderMap,
    expected: TokenKind,
) -> Result<(Access, std::sync::Arc<Snapshot>), ApiError> {
    let (access, snapshot) = admit(app, headers, expected).await?;
    let snapshot = snapshot.ok_or_else(|| {
        ApiError::Gate(GateError::NotReady {
            environment: access.scope.environment.clone(),
        })
    })?;
    Ok((access, snapshot))
}

/// Admits a request's token: resolves it, checks its kind and the scope rule (once), counts
/// the decision. Returns the access and the environment's snapshot, if one is loaded.
async fn admit(
    app: &App,
    headers: &HeaderMap,
    expected: TokenKind,
) -> Result<(Access, Option<std::sync::Arc<Snapshot>>), ApiError> {
    let decision = |result: &str| {
        app.metrics
            .token_decisions
            .with_label_values(&[result])
            .inc();
    };
    let header = headers
        .get(&app.config.server.token_header)
        .map(HeaderValue::as_bytes);
    let access = app.auth.resolve(header).await.map_err(|e| {
        decision(match e {
            AuthError::Missing => "missing",
            AuthError::Malformed(_) | AuthError::Unknown => "invalid",
            AuthError::AdminOrPersonal => "wrong_type",
            AuthError::UpstreamUnavailable => "upstream_unavailable",
        });
        let error = ApiError::Auth(e);
        if matches!(error, ApiError::Auth(AuthError::Unknown | AuthError::AdminOrPersonal)) {
            let token = header
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| crate::token::Token::parse(h).ok());
            if let Some(token) = token.filter(|t| app.request_log.line(Line::Refused(t, error.code()))) {
                tracing::info!(token = %token, error = error.code(), "token refused (logged once per token)");
            }
        }
        error
    })?;
    trace::note("unleash.token.kind", access.kind.as_str());
    trace::note("unleash.token.environment", &access.scope.environment);
    if access.kind != expected {
        decision("wrong_type");
        let error = ApiError::WrongKind {
            expected,
            got: access.kind,
        };
        if app
            .request_log
            .line(Line::Refused(&access.token, error.code()))
        {
            tracing::info!(token = %access.token, kind = access.kind.as_str(), expected = expected.as_str(), "token of the wrong kind refused (logged once per token)");
        }
        return Err(error);
    }
    let snapshot = app.store.admit(&access.scope).map_err(|e| {
        if matches!(e, GateError::NotCovered { .. }) {
            decision("scope_not_covered");
            if app
                .request_log
                .line(Line::Refused(&access.token, "scope_not_covered"))
            {
                tracing::info!(token = %access.token, scope = %access.scope, "scope not covered by the startup client tokens (logged once per token)");
            }
        }
        ApiError::Gate(e)
    })?;
    decision("allowed");
    Ok((access, snapshot))
}

/// Reads a request body up to `limit` bytes: larger is 413, before reading when the length is
/// declared; a body that does not arrive within the body-read timeout is 408.
pub async fn read_body(
    app: &App,
    headers: &HeaderMap,
    body: Incoming,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let collect = Limited::new(body, limit).collect();
    let collected = tokio::time::timeout(app.config.server.body_read_timeout, collect)
        .await
        .map_err(|_| ApiError::BodyTimeout)?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(_) => Err(ApiError::BadRequest(
            "The request body could not be read completely.".into(),
        )),
    }
}

/// A 200 with a strong ETag over `body`, or a 304 when `If-None-Match` matches it.
fn conditional(headers: &HeaderMap, body: Vec<u8>, no_cache: bool) -> HttpResponse {
    let etag = etag_of(&body);
    conditional_tagged(headers, body, etag, no_cache)
}

/// A 200 with `etag`, or a 304 when `If-None-Match` matches it.
fn conditional_tagged(
    headers: &HeaderMap,
    body: Vec<u8>,
    etag: String,
    no_cache: bool,
) -> HttpResponse {
    if etag_matches(headers, &etag) {
        return not_modified(&etag, no_cache);
    }
    let mut r = Response::new(Reply::full(Bytes::from(body)));
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, JSON);
    insert_etag(h, &etag);
    if no_cache {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    r
}

fn not_modified(etag: &str, no_cache: bool) -> HttpResponse {
    let mut r = Response::new(Reply::empty());
    *r.status_mut() = StatusCode::NOT_MODIFIED;
    let h = r.headers_mut();
    insert_etag(h, etag);
    if no_cache {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    r
}

fn insert_etag(headers: &mut HeaderMap, etag: &str) {
    if let Ok(v) = HeaderValue::from_str(etag) {
        headers.insert(ETAG, v);
    }
}

/// `If-None-Match` (RFC 9110 §13.1.2): weak comparison, a list of tags, or `*`.
pub fn etag_matches(headers: &HeaderMap, etag: &str) -> bool {
    let ours = etag.trim_start_matches("W/");
    headers.get_all(IF_NONE_MATCH).iter().any(|value| {
        value.to_str().is_ok_and(|list| {
            list.split(',')
                .map(str::trim)
                .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours)
        })
    })
}

fn json_response(status: StatusCode, body: &'static str) -> HttpResponse {
    let mut r = Response::new(Reply::full(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(CONTENT_TYPE, JSON);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(inm: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in inm {
            h.append(IF_NONE_MATCH, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn if_none_match_uses_weak_comparison_and_lists() {
        let tag = "\"abc\"";
        assert!(etag_matches(&headers(&["\"abc\""]), tag));
        assert!(etag_matches(&headers(&["W/\"abc\""]), tag));
        assert!(etag_matches(&headers(&["\"x\", W/\"abc\""]), tag));
        assert!(etag_matches(&headers(&["\"x\"", "\"abc\""]), tag));
        assert!(etag_matches(&headers(&["*"]), tag));
        assert!(!etag_matches(&headers(&["\"abcd\""]), tag));
        assert!(!etag_matches(&headers(&[]), tag));
        assert!(!etag_matches(&headers(&["abc"]), tag));
    }
}
