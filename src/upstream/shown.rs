//! How upstream failures are put into words for the log and the metrics: transport errors
//! without URLs' queries or headers, redirect locations without user info or query.

use super::UpstreamError;

/// A `Location` as it may be logged: scheme, host, port and path; no user info, no query.
pub(super) fn shown_location(location: &str) -> String {
    let without_query = location.split(['?', '#']).next().unwrap_or("");
    let shown = match without_query.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
            let host = authority.rsplit('@').next().unwrap_or("");
            format!("{scheme}://{host}{path}")
        }
        None => without_query.to_string(),
    };
    shown
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}

pub(super) fn unreachable(e: &reqwest::Error) -> UpstreamError {
    UpstreamError::Unreachable(describe(e))
}

/// A short description of a transport error, without the URL's query or any header.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "the body was cut off"
    } else {
        "the request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}
