//! The OTLP/HTTP exporter's requests, sent with flagpost's reqwest (rustls and ring, as every
//! other outgoing call), with a deadline and a bounded answer: a collector is outside too.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use opentelemetry_http::{HttpClient, HttpError};

use super::OtelError;

/// The most of a collector's answer read (it is a short status message).
const MAX_ANSWER: usize = 64 * 1024;

#[derive(Debug)]
pub(super) struct Client(reqwest::Client);

impl Client {
    pub(super) fn new(timeout: Duration) -> Result<Client, OtelError> {
        reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .pool_max_idle_per_host(2)
            .build()
            .map(Client)
            .map_err(|e| OtelError(format!("HTTP client: {e}")))
    }

    async fn send(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let mut sent = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await?;
        let status = sent.status();
        let headers = std::mem::take(sent.headers_mut());
        let mut answer = Vec::new();
        while let Some(chunk) = sent.chunk().await? {
            let room = MAX_ANSWER.saturating_sub(answer.len());
            answer.extend_from_slice(chunk.get(..room.min(chunk.len())).unwrap_or_default());
            if answer.len() >= MAX_ANSWER {
                break;
            }
        }
        let mut response = Response::new(Bytes::from(answer));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

impl HttpClient for Client {
    fn send_bytes<'a, 'f>(
        &'a self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Bytes>, HttpError>> + Send + 'f>>
    where
        'a: 'f,
        Self: 'f,
    {
        Box::pin(self.send(request))
    }
}
