//! Request errors and the one exhaustive mapping from them to status, headers and JSON body
//! (PROTOCOL.md §5). Messages say what happened and what to do; they never contain a secret.

use super::body::Reply;
use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};

use crate::auth::AuthError;
use crate::config::unit::format_size;
use crate::json;
use crate::snapshot::GateError;
use crate::token::TokenKind;

/// Everything a request can fail with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    Auth(AuthError),
    /// A valid token of the other kind (or client token on the frontend API, ...).
    WrongKind {
        expected: TokenKind,
        got: TokenKind,
    },
    Gate(GateError),
    BadRequest(String),
    PayloadTooLarge {
        limit: usize,
    },
    NotFound(String),
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: &'static str,
    },
    /// The all-flags listing is turned off in configuration.
    AllEndpointDisabled,
    /// Too many requests in flight.
    Overloaded,
    /// As many streams are open as `streaming.max_streams` allows (0: streaming is off).
    TooManyStreams {
        limit: usize,
    },
    /// `/edge/validate` asked about more unknown tokens than its budget allows now.
    OverBudget {
        budget: &'static str,
        retry_after: u32,
    },
    /// A backstage endpoint without (or with a wrong) `backstage.token`.
    Backstage {
        missing: bool,
    },
    /// The request body did not arrive in time.
    BodyTimeout,
    /// The request could not be answered within the deadline.
    Timeout,
    /// The peer's address is not in the allow list, or is in the deny list.
    AddressNotAllowed,
}

impl ApiError {
    /// Status, error code, message and the seconds for `Retry-After`, if any.
    fn parts(&self) -> (StatusCode, &'static str, String, Option<u32>) {
        match self {
            ApiError::Auth(e) => auth_parts(e),
            ApiError::WrongKind { expected, got } => (
                StatusCode::FORBIDDEN,
                "token_wrong_type",
                format!(
                    "This endpoint needs a {} token, but a {} token was given.",
                    expected.as_str(),
                    got.as_str()
                ),
                None,
            ),
            ApiError::Gate(e) => gate_parts(e),
            ApiError::BadRequest(problem) => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                problem.clone(),
                None,
            ),
            ApiError::PayloadTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "The request body is larger than the limit of {}.",
                    format_size(*limit)
                ),
                None,
            ),
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, "not_found", what.clone(), None),
            ApiError::MethodNotAllowed {
                method,
                path,
                allowed,
            } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                format!("{method} is not allowed on {path}; allowed: {allowed}."),
                None,
            ),
            ApiError::OverBudget {
                budget,
                retry_after,
            } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!(
                    "Too many tokens flagpost does not know yet were sent to /edge/validate \
                     ({budget} budget); they are checked upstream only at a bounded rate. Retry \
                     in {retry_after} s."
                ),
                Some(*retry_after),
            ),
            ApiError::AddressNotAllowed => (
                StatusCode::FORBIDDEN,
                "address_not_allowed",
                "This address may not use flagpost (server.allow_list / server.deny_list).".into(),
                None,
            ),
            ApiError::Overloaded => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "flagpost is answering as many requests as it is allowed to; retry shortly.".into(),
                Some(1),
            ),
            ApiError::TooManyStreams { limit } => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_streams",
                if *limit == 0 {
                    "Streaming is turned off on this flagpost (streaming.max_streams = 0); poll \
                     /api/client/features instead."
                        .into()
                } else {
                    format!(
                        "flagpost already has {limit} streams open (streaming.max_streams); poll \
                         /api/client/features instead."
                    )
                },
                None,
            ),
            ApiError::Backstage { missing } => (
                StatusCode::UNAUTHORIZED,
                if *missing {
                    "token_missing"
                } else {
                    "token_invalid"
                },
                "This backstage endpoint needs flagpost's backstage token (backstage.token) in the \
                 Authorization header."
                    .into(),
                None,
            ),
            ApiError::BodyTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                "The request body did not arrive in time.".into(),
                None,
            ),
            ApiError::Timeout => (
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                "flagpost could not answer in time (usually: the Unleash server is slow to \
                 validate a token flagpost has not seen before); retry shortly."
                    .into(),
                Some(1),
            ),
            ApiError::AllEndpointDisabled => (
                StatusCode::NOT_FOUND,
                "not_found",
                "The all-flags endpoint is turned off in flagpost's configuration \
                 (frontend.all_endpoint)."
                    .into(),
                None,
            ),
        }
    }

    /// The message of the JSON body.
    pub fn message(&self) -> String {
        self.parts().2
    }

    /// The error code of the JSON body (`token_invalid`, ...).
    pub fn code(&self) -> &'static str {
        self.parts().1
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The response for this error.
    pub fn into_response(self) -> Response<Reply> {
        let (status, code, message, retry_after) = self.parts();
        let mut body = String::with_capacity(message.len() + 48);
        body.push_str("{\"error\":");
        json::push_str(&mut body, code);
        body.push_str(",\"message\":");
        json::push_str(&mut body, &message);
        body.push('}');
        let mut response = Response::new(Reply::full(Bytes::from(body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(seconds) = retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let ApiError::MethodNotAllowed { allowed, .. } = &self {
            headers.insert(ALLOW, HeaderValue::from_static(allowed));
        }
        response
    }
}

/// The parts of a scope the gate refused.
fn gate_parts(e: &GateError) -> (StatusCode, &'static str, String, Option<u32>) {
    match e {
        GateError::NotCovered {
            environment,
            missing,
        } => (
            StatusCode::FORBIDDEN,
            "scope_not_covered",
            format!(
                "flagpost does not serve environment {environment:?} for {missing}: none of \
                 its client tokens covers that scope. Give flagpost a client token that does."
            ),
            None,
        ),
        GateError::NotReady { environment } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            format!("Features for environment {environment:?} are not loaded yet; retry shortly."),
            Some(5),
        ),
    }
}

/// The parts of a refused token's answer.
fn auth_parts(e: &AuthError) -> (StatusCode, &'static str, String, Option<u32>) {
    match e {
        AuthError::Missing => (
            StatusCode::UNAUTHORIZED,
            "token_missing",
            "This endpoint needs an API token in the Authorization header.".into(),
            None,
        ),
        AuthError::Malformed(e) => (
            StatusCode::UNAUTHORIZED,
            "token_invalid",
            format!("The Authorization header does not hold a valid token: {e}."),
            None,
        ),
        AuthError::Unknown => (
            StatusCode::UNAUTHORIZED,
            "token_invalid",
            "The token is not known to flagpost. Check that it is an active client or \
             frontend token (or a configured client key)."
                .into(),
            None,
        ),
        AuthError::AdminOrPersonal => (
            StatusCode::FORBIDDEN,
            "token_wrong_type",
            "Admin tokens and personal access tokens cannot be used on SDK endpoints: use a \
             client token (Client API) or a frontend token (Frontend API)."
                .into(),
            None,
        ),
        AuthError::UpstreamUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "upstream_unavailable",
            "flagpost has not seen this token before and cannot reach the Unleash server to \
             check it; retry shortly."
                .into(),
            Some(10),
        ),
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::Auth(e)
    }
}

impl From<GateError> for ApiError {
    fn from(e: GateError) -> Self {
        ApiError::Gate(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body(e: ApiError) -> (u16, serde_json::Value, http::HeaderMap) {
        let r = e.into_response();
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let bytes = r.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap(), headers)
    }

    #[tokio::test]
    async fn every_error_is_json_with_code_and_message() {
        let (s, b, h) = body(ApiError::Gate(GateError::NotReady {
            environment: "dev".into(),
        }))
        .await;
        assert_eq!((s, b["error"].as_str()), (503, Some("not_ready")));
        assert_eq!(h[RETRY_AFTER], "5");
        let (s, b, h) = body(ApiError::MethodNotAllowed {
            method: "PUT".into(),
            path: "/api/frontend".into(),
            allowed: "GET",
        })
        .await;
        assert_eq!((s, b["error"].as_str()), (405, Some("method_not_allowed")));
        assert_eq!(h[ALLOW], "GET");
        let (s, b, _) = body(ApiError::Gate(GateError::NotCovered {
            environment: "production".into(),
            missing: "checkout".into(),
        }))
        .await;
        assert_eq!(s, 403);
        assert!(b["message"].as_str().unwrap().contains("\"production\""));
        assert!(b["message"].as_str().unwrap().contains("checkout"));
    }
}
