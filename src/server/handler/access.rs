//! Which requests reach the router, as Unleash Edge's settings say: every route under the base
//! path (`--base-path`), only peers the allow and deny lists admit, and plain HTTP sent to
//! HTTPS (`--redirect-http-to-https`).

use http::{HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::HttpResponse;
use crate::server::error::ApiError;
use crate::server::App;

/// Unleash Edge's `--redirect-http-to-https`: 308 to the same host, path and query on the
/// HTTPS `port`. Probes are answered as they are (`None`), so a load balancer or Kubernetes
/// probing plain HTTP still learns whether flagpost can serve; a request without a usable
/// `Host` gets 400.
pub fn redirect_to_https(app: &App, req: &Request<Incoming>, port: u16) -> Option<HttpResponse> {
    let path = req.uri().path();
    let probe = under_base(&app.config.server.base_path, path).is_some_and(|p| {
        matches!(
            p.trim_end_matches('/'),
            "/health" | "/ready" | "/internal-backstage/health" | "/internal-backstage/ready"
        )
    });
    if probe {
        return None;
    }
    let host = req
        .uri()
        .host()
        .map(str::to_string)
        .or_else(|| {
            let value = req.headers().get(http::header::HOST)?.to_str().ok()?;
            let authority: http::uri::Authority = value.parse().ok()?;
            Some(authority.host().to_string())
        })
        .filter(|h| !h.is_empty());
    let Some(host) = host else {
        return Some(
            ApiError::BadRequest("A request must name its host to be redirected to HTTPS.".into())
                .into_response(),
        );
    };
    let target = match port {
        443 => format!("https://{host}"),
        _ => format!("https://{host}:{port}"),
    };
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or("/", http::uri::PathAndQuery::as_str);
    let location = HeaderValue::from_str(&format!("{target}{path_and_query}")).ok()?;
    let mut response = Response::new(crate::server::body::Reply::empty());
    *response.status_mut() = StatusCode::PERMANENT_REDIRECT;
    response
        .headers_mut()
        .insert(http::header::LOCATION, location);
    Some(response)
}

/// Whether Unleash Edge's allow list (empty: everyone) admits `ip` and its deny list does not
/// name it. An IPv4 peer on an IPv6 socket is read as IPv4.
pub(super) fn peer_allowed(server: &crate::config::ServerConfig, ip: std::net::IpAddr) -> bool {
    if server.allow_list.is_empty() && server.deny_list.is_empty() {
        return true;
    }
    let ip = match ip {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        v4 => v4,
    };
    (server.allow_list.is_empty() || server.allow_list.iter().any(|n| n.contains(&ip)))
        && !server.deny_list.iter().any(|n| n.contains(&ip))
}

/// The part of `path` under `base` (`""`, or `/a/b` without a trailing slash), if it is under it.
pub(super) fn under_base<'a>(base: &str, path: &'a str) -> Option<&'a str> {
    if base.is_empty() {
        return Some(path);
    }
    match path.strip_prefix(base)? {
        "" => Some("/"),
        rest if rest.starts_with('/') => Some(rest),
        _ => None,
    }
}
