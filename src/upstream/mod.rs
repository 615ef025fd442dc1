//! The upstream Unleash server (or another flagpost, or an Unleash Edge): typed calls with
//! timeouts, the identifying headers of PROTOCOL.md §3 on every request, TLS roots. (Remote
//! write and the OTLP/HTTP exporter have reqwest clients of their own, for other servers.)

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ETAG, IF_NONE_MATCH};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use tracing::Instrument as _;

use crate::config::EdgeConfig;
use crate::document::Document;
use crate::metrics::Metrics;
use crate::token::Token;

/// The flagpost SDK identifier sent upstream.
pub const SDK_NAME: &str = concat!("flagpost:", env!("CARGO_PKG_VERSION"));

/// What an upstream call can end in, other than success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// Could not connect, the connection broke, or the deadline passed.
    #[error("upstream unreachable: {0}")]
    Unreachable(String),
    /// 401 or 403: the token is not (or no longer) accepted.
    #[error("upstream refused the token ({0})")]
    Refused(u16),
    /// Any other unexpected status.
    #[error("upstream answered {0}")]
    Status(u16),
    /// The body is not what the call returns.
    #[error("upstream sent a body flagpost cannot use: {0}")]
    BadBody(String),
    /// The body (decompressed) passed the configured limit; reading stopped there.
    #[error(
        "upstream sent a body over the limit of {limit} bytes (at least {seen} bytes); if it is \
         genuine, raise edge.upstream_max_body_size (--upstream-max-body-size)"
    )]
    TooLarge { seen: u64, limit: u64 },
    /// A 3xx: redirects are never followed (a token or a configured header must not reach
    /// another origin).
    #[error(
        "upstream answered {status} redirecting to {location}; flagpost does not follow \
         redirects: set --upstream-url to the address that answers"
    )]
    Redirect { status: u16, location: String },
}

impl UpstreamError {
    /// The bounded label used in metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            UpstreamError::Unreachable(_) => "unreachable",
            UpstreamError::Refused(_) => "refused",
            UpstreamError::Status(s) if *s >= 500 => "server_error",
            UpstreamError::Status(_) => "client_error",
            UpstreamError::BadBody(_) => "bad_body",
            UpstreamError::TooLarge { .. } => "too_large",
            UpstreamError::Redirect { .. } => "redirect",
        }
    }
}

/// A token's type as upstream names it (`"backend"` is newer Unleash's name for client).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamKind {
    #[serde(alias = "backend")]
    Client,
    Frontend,
    Admin,
    /// Any type flagpost does not serve (a future one, a personal access token, ...).
    #[serde(other)]
    Other,
}

impl UpstreamKind {
    /// The SDK kind this type may act as; `None` for types never served on SDK endpoints.
    pub fn sdk_kind(self) -> Option<crate::token::TokenKind> {
        match self {
            UpstreamKind::Client => Some(crate::token::TokenKind::Client),
            UpstreamKind::Frontend => Some(crate::token::TokenKind::Frontend),
            UpstreamKind::Admin | UpstreamKind::Other => None,
        }
    }
}

/// A token as `/edge/validate` describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidatedToken {
    pub token: String,
    #[serde(rename = "type")]
    pub kind: UpstreamKind,
    #[serde(default)]
    pub projects: Vec<String>,
    pub environment: String,
}

#[derive(Deserialize)]
struct ValidateResponse {
    tokens: Vec<ValidatedToken>,
}

/// The answer to a conditional features fetch: a type, not an error.
#[derive(Debug)]
pub enum Fetch {
    /// 304: what flagpost has is current.
    NotModified,
    /// 200: new features, and the ETag to send next time (if upstream gave one).
    Updated {
        document: Document,
        etag: Option<String>,
    },
}

/// The client for one upstream.
#[derive(Debug)]
pub struct Upstream {
    http: reqwest::Client,
    /// The client for `/api/client/streaming` (`--streaming` only).
    streaming: Option<reqwest::Client>,
    base: String,
    /// Largest response body read (decompressed).
    max_body: u64,
    /// The header tokens are sent in (`Authorization`, or Unleash Edge's
    /// `--upstream-auth-header`).
    auth_header: HeaderName,
}

/// Why the upstream client cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    #[error("cannot read the upstream CA bundle {path}: {problem}")]
    CaBundle { path: String, problem: String },
    #[error("cannot use the upstream client certificate {path}: {problem}")]
    ClientIdentity { path: String, problem: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

impl Upstream {
    /// Builds the client: timeouts, identifying and custom headers, TLS roots (the bundled and
    /// system roots, plus the configured CA bundle).
    pub fn new(
        config: &EdgeConfig,
        app_name: &str,
        instance_id: &str,
    ) -> Result<Upstream, UpstreamSetupError> {
        let mut headers = HeaderMap::new();
        let connection_id = connection_id();
        let interval_ms = config.refresh_interval.as_millis().to_string();
        for (name, value) in [
            ("unleash-appname", app_name),
            ("unleash-instanceid", instance_id),
            ("unleash-connection-id", connection_id.as_str()),
            ("unleash-sdk", SDK_NAME),
            (
                "unleash-client-spec",
                unleash_yggdrasil::SUPPORTED_SPEC_VERSION,
            ),
            ("unleash-interval", interval_ms.as_str()),
        ] {
            if let Ok(v) = HeaderValue::from_str(value) {
                headers.insert(HeaderName::from_static(name), v);
            }
        }
        for (name, value) in &config.custom_client_headers {
            let (Ok(n), Ok(mut v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) else {
                continue; // validated in config
            };
            v.set_sensitive(true);
            headers.insert(n, v);
        }
        let http = client(config, headers.clone())?
            .timeout(config.upstream_request_timeout)
            .build()
            .map_err(|e| UpstreamSetupError::Client(e.to_string()))?;
        // A stream has no overall deadline, only one between bytes: upstream sends a heartbeat
        // well within it, so silence means the connection is gone.
        let streaming = config
            .streaming
            .then(|| {
                let mut stream_headers = headers;
                stream_headers.insert(
                    HeaderName::from_static("unleash-sdk-type"),
                    HeaderValue::from_static("edge"),
                );
                client(config, stream_headers)?
                    .read_timeout(STREAM_SILENCE)
                    .build()
                    .map_err(|e| UpstreamSetupError::Client(e.to_string()))
            })
            .transpose()?;
        Ok(Upstream {
            http,
            streaming,
            base: config.upstream_url.clone(),
            max_body: u64::try_from(config.upstream_max_body_size).unwrap_or(u64::MAX),
            auth_header: config.upstream_auth_header.clone(),
        })
    }
}

/// The HTTP client's settings common to polls and streams: identifying and custom headers,
/// connect timeout, no redirects, TLS roots and identity.
fn client(
    config: &EdgeConfig,
    headers: HeaderMap,
) -> Result<reqwest::ClientBuilder, UpstreamSetupError> {
    {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("flagpost/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .connect_timeout(config.upstream_connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            // A redirect could carry the token and the custom headers to another origin.
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true);
        if let Some(path) = &config.upstream_certificate_file {
            let err = |problem: String| UpstreamSetupError::CaBundle {
                path: path.display().to_string(),
                problem,
            };
            let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| err(e.to_string()))?;
            if certs.is_empty() {
                return Err(err("no PEM certificate in it".into()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(id) = &config.client_identity {
            let identity =
                identity::load(id).map_err(|problem| UpstreamSetupError::ClientIdentity {
                    path: id.describe(),
                    problem,
                })?;
            builder = builder.identity(identity);
        }
        if config.skip_ssl_verification {
            builder = builder.danger_accept_invalid_certs(true);
        }
        Ok(builder)
    }
}

impl Upstream {
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `POST /edge/validate` without `Authorization`: the tokens upstream knows, with their
    /// type, environment and projects (unknown ones are simply absent).
    pub async fn validate(
        &self,
        tokens: &[&str],
        metrics: &Metrics,
    ) -> Result<Vec<ValidatedToken>, UpstreamError> {
        let body = serde_json::json!({ "tokens": tokens }).to_string();
        let request = self
            .http
            .post(format!("{}/edge/validate", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let (status, _, bytes) = self.send("validate", request, metrics).await?;
        if status != StatusCode::OK {
            return Err(self.fail("validate", status, metrics));
        }
        let parsed: ValidateResponse = serde_json::from_slice(&bytes).map_err(|e| {
            metrics.upstream_outcome("validate", "bad_body");
            UpstreamError::BadBody(e.to_string())
        })?;
        metrics.upstream_outcome("validate", "ok");
        Ok(parsed.tokens)
    }

    /// `GET /api/client/features` with the token, conditional on `etag`.
    pub async fn features(
        &self,
        token: &Token,
        etag: Option<&str>,
        metrics: &Metrics,
    ) -> Result<Fetch, UpstreamError> {
        let mut request = self
            .http
            .get(format!("{}/api/client/features", self.base))
            .header(self.auth_header.clone(), sensitive(token.expose()));
        if let Some(tag) = etag {
            request = request.header(IF_NONE_MATCH, tag);
        }
        let (status, headers, bytes) = self.send("features", request, metrics).await?;
        match status {
            StatusCode::NOT_MODIFIED => {
                metrics.upstream_outcome("features", "not_modified");
                Ok(Fetch::NotModified)
            }
            StatusCode::OK => {
                let document = tokio::task::spawn_blocking(move || Document::parse(&bytes))
                    .await
                    .map_err(|e| UpstreamError::BadBody(e.to_string()))?
                    .map_err(|e| {
                        metrics.upstream_outcome("features", "bad_body");
                        UpstreamError::BadBody(e.to_string())
                    })?;
                metrics.upstream_outcome("features", "ok");
                let etag = headers
                    .get(ETAG)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                Ok(Fetch::Updated { document, etag })
            }
            other => Err(self.fail("features", other, metrics)),
        }
    }

    /// `POST` a JSON body with a client token; success is any 2xx.
    pub async fn post_json(
        &self,
        call: &'static str,
        path: &str,
        token: &Token,
        body: Vec<u8>,
        metrics: &Metrics,
    ) -> Result<(), UpstreamError> {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(self.auth_header.clone(), sensitive(token.expose()))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let (status, _, _) = self.send(call, request, metrics).await?;
        if status.is_success() {
            metrics.upstream_outcome(call, "ok");
            Ok(())
        } else {
            Err(self.fail(call, status, metrics))
        }
    }

    async fn send(
        &self,
        call: &'static str,
        request: reqwest::RequestBuilder,
        metrics: &Metrics,
    ) -> Result<(StatusCode, HeaderMap, Bytes), UpstreamError> {
        let started = Instant::now();
        let mut request = match request.build() {
            Ok(r) => r,
            Err(e) => {
                let e = unreachable(&e);
                metrics.upstream_outcome(call, e.outcome());
                return Err(e);
            }
        };
        let span = trace::begin(call, &mut request);
        let result = async {
            let response = self
                .http
                .execute(request)
                .await
                .map_err(|e| unreachable(&e))?;
            let status = response.status();
            // 304 is an answer (nothing new); every other 3xx is a redirect.
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                let location = response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .map(|v| shown_location(&String::from_utf8_lossy(v.as_bytes())))
                    .unwrap_or_else(|| "nowhere (no Location)".into());
                return Err(UpstreamError::Redirect {
                    status: status.as_u16(),
                    location,
                });
            }
            let headers = response.headers().clone();
            let bytes = read_bounded(response, self.max_body).await?;
            Ok((status, headers, bytes))
        }
        .instrument(span.clone())
        .await;
        trace::end(&span, result.as_ref().map(|(s, _, _)| *s));
        metrics.upstream_latency(call, started.elapsed().as_secs_f64());
        result.inspect_err(|e| metrics.upstream_outcome(call, e.outcome()))
    }

    fn fail(&self, call: &'static str, status: StatusCode, metrics: &Metrics) -> UpstreamError {
        let error = match status.as_u16() {
            code @ (401 | 403) => UpstreamError::Refused(code),
            code => UpstreamError::Status(code),
        };
        metrics.upstream_outcome(call, error.outcome());
        error
    }
}

/// Reads a response body as it arrives, refusing it as soon as it passes `limit` bytes. The
/// count is of decompressed bytes (reqwest inflates gzip before handing out chunks), so a small
/// compressed body that unpacks to a huge one is refused just the same.
async fn read_bounded(mut response: reqwest::Response, limit: u64) -> Result<Bytes, UpstreamError> {
    let too_large = |seen: u64| UpstreamError::TooLarge { seen, limit };
    let declared = response.content_length();
    if let Some(n) = declared.filter(|n| *n > limit) {
        return Err(too_large(n));
    }
    let cap = |n: u64| usize::try_from(n.min(limit)).unwrap_or(usize::MAX);
    let mut body: Vec<u8> = Vec::with_capacity(cap(declared.unwrap_or(0)));
    while let Some(chunk) = response.chunk().await.map_err(|e| unreachable(&e))? {
        let seen = (body.len() + chunk.len()) as u64;
        if seen > limit {
            return Err(too_large(seen));
        }
        if body.capacity() < body.len() + chunk.len() {
            // Grow by doubling, but never past the limit.
            let want = cap((body.capacity() as u64).saturating_mul(2).max(seen));
            body.reserve_exact(want - body.len());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

fn sensitive(value: &str) -> HeaderValue {
    let mut v = HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static(""));
    v.set_sensitive(true);
    v
}

/// A random v4-style UUID identifying this process's connection to upstream.
fn connection_id() -> String {
    let b: [u8; 16] = rand::random();
    let v = u128::from_be_bytes(b);
    let v = (v & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{v:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        hex.get(0..8).unwrap_or(""),
        hex.get(8..12).unwrap_or(""),
        hex.get(12..16).unwrap_or(""),
        hex.get(16..20).unwrap_or(""),
        hex.get(20..32).unwrap_or("")
    )
}

mod identity;
mod shown;
mod stream;
mod trace;

pub(crate) use shown::describe;
use shown::{shown_location, unreachable};

pub use stream::{EventStream, STREAM_SILENCE};

#[cfg(test)]
mod tests;
