//! CORS for the Frontend API: preflights answered without a token, allowed origins from
//! configuration (any origin by default), `ETag` exposed so browser SDKs can send
//! `If-None-Match`.

use super::body::Reply;
use http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN,
    ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS, ORIGIN,
    VARY,
};
use http::{HeaderMap, HeaderValue, Response, StatusCode};

use crate::config::{AllowedOrigins, CorsConfig};

const DEFAULT_ALLOWED_HEADERS: &str = "authorization, content-type, if-none-match, \
     unleash-appname, unleash-connection-id, unleash-sdk, unleash-instanceid";

/// The `Access-Control-Allow-Origin` value for a request's `Origin`, if it is allowed.
fn allow_origin(config: &CorsConfig, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
    match &config.allowed_origins {
        AllowedOrigins::Any => Some(HeaderValue::from_static("*")),
        AllowedOrigins::List(list) => {
            let origin = origin?;
            let text = origin.to_str().ok()?;
            list.iter().any(|o| o == text).then(|| origin.clone())
        }
    }
}

/// Adds the CORS headers of an actual (non-preflight) Frontend API response.
pub fn decorate(config: &CorsConfig, origin: Option<&HeaderValue>, response: &mut Response<Reply>) {
    let headers = response.headers_mut();
    headers.append(VARY, HeaderValue::from_static("Origin"));
    if let Some(allowed) = allow_origin(config, origin) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, exposed(config));
    }
}

/// The headers browsers may read: Unleash Edge's configured list, or `ETag`.
fn exposed(config: &CorsConfig) -> HeaderValue {
    config
        .exposed_headers
        .clone()
        .unwrap_or(HeaderValue::from_static("ETag"))
}

/// Answers an `OPTIONS` preflight. No token is needed: browsers never send one here.
pub fn preflight(config: &CorsConfig, request: &HeaderMap) -> Response<Reply> {
    let mut response = Response::new(Reply::empty());
    *response.status_mut() = StatusCode::NO_CONTENT;
    let origin = request.get(ORIGIN);
    let headers = response.headers_mut();
    headers.insert(
        http::header::ALLOW,
        HeaderValue::from_static("GET, HEAD, POST, OPTIONS"),
    );
    headers.insert(
        VARY,
        HeaderValue::from_static("Access-Control-Request-Headers"),
    );
    if let Some(allowed) = allow_origin(config, origin) {
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        headers.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            config
                .methods
                .clone()
                .unwrap_or(HeaderValue::from_static("GET, HEAD, POST, OPTIONS")),
        );
        // Unleash Edge's configured list, or whatever the browser asks for.
        let allowed = config.allowed_headers.clone().unwrap_or_else(|| {
            request
                .get(ACCESS_CONTROL_REQUEST_HEADERS)
                .filter(|v| v.to_str().is_ok_and(|s| s.len() <= 1024))
                .cloned()
                .unwrap_or(HeaderValue::from_static(DEFAULT_ALLOWED_HEADERS))
        });
        headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, allowed);
        headers.insert(ACCESS_CONTROL_EXPOSE_HEADERS, exposed(config));
        headers.insert(
            ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from(config.max_age.as_secs()),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg(origins: AllowedOrigins) -> CorsConfig {
        CorsConfig {
            allowed_origins: origins,
            max_age: Duration::from_secs(86400),
            allowed_headers: None,
            exposed_headers: None,
            methods: None,
        }
    }

    /// Unleash Edge's lists replace flagpost's defaults, in preflights and answers.
    #[test]
    fn configured_lists_are_what_browsers_get() {
        let mut c = cfg(AllowedOrigins::Any);
        c.allowed_headers = Some(HeaderValue::from_static("authorization, x-custom"));
        c.exposed_headers = Some(HeaderValue::from_static("ETag, X-Request-Id"));
        c.methods = Some(HeaderValue::from_static("GET, POST"));
        let mut req = HeaderMap::new();
        req.insert(ORIGIN, HeaderValue::from_static("http://example.test"));
        req.insert(
            ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("authorization,x-other"),
        );
        let r = preflight(&c, &req);
        let h = r.headers();
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], "authorization, x-custom");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_METHODS], "GET, POST");
        assert_eq!(h[ACCESS_CONTROL_EXPOSE_HEADERS], "ETag, X-Request-Id");
        let mut r = Response::new(Reply::empty());
        decorate(&c, req.get(ORIGIN), &mut r);
        assert_eq!(
            r.headers()[ACCESS_CONTROL_EXPOSE_HEADERS],
            "ETag, X-Request-Id"
        );
    }

    #[test]
    fn any_origin_by_default() {
        let mut req = HeaderMap::new();
        req.insert(ORIGIN, HeaderValue::from_static("http://example.test"));
        req.insert(
            ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("authorization,content-type"),
        );
        let r = preflight(&cfg(AllowedOrigins::Any), &req);
        assert_eq!(r.status(), 204);
        let h = r.headers();
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(
            h[ACCESS_CONTROL_ALLOW_HEADERS],
            "authorization,content-type"
        );
        assert_eq!(h[ACCESS_CONTROL_MAX_AGE], "86400");
    }

    #[test]
    fn listed_origins_are_echoed_and_others_get_nothing() {
        let c = cfg(AllowedOrigins::List(vec!["https://app.example.com".into()]));
        let ok = HeaderValue::from_static("https://app.example.com");
        let bad = HeaderValue::from_static("https://evil.example.com");
        let mut r = Response::new(Reply::empty());
        decorate(&c, Some(&ok), &mut r);
        assert_eq!(r.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], ok);
        assert_eq!(r.headers()[VARY], "Origin");
        let mut r = Response::new(Reply::empty());
        decorate(&c, Some(&bad), &mut r);
        assert!(r.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
        assert_eq!(r.headers()[VARY], "Origin");
    }
}
