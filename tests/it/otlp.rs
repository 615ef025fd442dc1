//! An OTLP trace receiver for the tests, built from the official protobuf definitions
//! (`opentelemetry-proto`): gRPC (its tonic service) and HTTP (`/v1/traces`, protobuf or JSON,
//! gzip or not) on one port. It keeps every span it was sent, with the resource and the
//! request headers, and can be told to refuse, to hang, or to drop every connection.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use serde_json::Value;
use tonic::codegen::Service as _;

/// How the receiver answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Accept,
    /// gRPC UNAVAILABLE, HTTP 503.
    Refuse,
    /// Takes the request and never answers.
    Hang,
    /// Closes every connection as soon as it is accepted.
    Drop,
}

/// One span as received.
#[derive(Debug, Clone)]
pub struct Got {
    pub name: String,
    /// 1 internal, 2 server, 3 client (the protobuf's SpanKind).
    pub kind: i32,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub attributes: BTreeMap<String, Value>,
    /// 0 unset, 1 ok, 2 error.
    pub status: i32,
    pub resource: BTreeMap<String, Value>,
    /// How it came: "grpc", "http/protobuf", "http/json".
    pub via: &'static str,
}

impl Got {
    pub fn attr(&self, key: &str) -> &Value {
        self.attributes.get(key).unwrap_or(&Value::Null)
    }
}

#[derive(Default)]
struct Inner {
    spans: Vec<Got>,
    headers: Vec<http::HeaderMap>,
    mode: Option<Mode>,
}

#[derive(Clone)]
pub struct Collector {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Collector {
    pub async fn start() -> Collector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let collector = Collector { addr, inner };
        let c = collector.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                if c.mode() == Mode::Drop {
                    drop(stream);
                    continue;
                }
                let c = c.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let c = c.clone();
                        async move {
                            // Down on a connection made before: the request is reset.
                            if c.mode() == Mode::Drop {
                                return Err("down");
                            }
                            Ok(c.answer(req).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                });
            }
        });
        collector
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.inner.lock().unwrap().mode = Some(mode);
    }

    fn mode(&self) -> Mode {
        self.inner.lock().unwrap().mode.unwrap_or(Mode::Accept)
    }

    pub fn spans(&self) -> Vec<Got> {
        self.inner.lock().unwrap().spans.clone()
    }

    /// The headers of every export request taken.
    pub fn headers(&self) -> Vec<http::HeaderMap> {
        self.inner.lock().unwrap().headers.clone()
    }

    /// Waits (up to 20 s) for a span matching `want`; returns it.
    pub async fn span(&self, what: &str, want: impl Fn(&Got) -> bool) -> Got {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.spans().into_iter().find(|s| want(s)) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "no span {what} among {:#?}",
                self.spans()
                    .iter()
                    .map(|s| (&s.name, &s.trace_id))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn answer(&self, req: Request<Incoming>) -> Response<BoxBody> {
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        self.inner
            .lock()
            .unwrap()
            .headers
            .push(req.headers().clone());
        match self.mode() {
            Mode::Hang => std::future::pending().await,
            Mode::Refuse if !grpc => return full(503, Bytes::from_static(b"refused")),
            _ => {}
        }
        if grpc {
            let mut svc = TraceServiceServer::new(Receiver(self.clone()));
            let response = svc.call(req).await.unwrap();
            return response.map(|b| b.map_err(|e| e.to_string()).boxed_unsync());
        }
        if req.uri().path() != "/v1/traces" {
            return full(404, Bytes::new());
        }
        let json = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        let gzip = req
            .headers()
            .get(http::header::CONTENT_ENCODING)
            .is_some_and(|v| v.as_bytes() == b"gzip");
        let mut body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
        if gzip {
            use std::io::Read as _;
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .unwrap();
            body = out;
        }
        let request: ExportTraceServiceRequest = if json {
            serde_json::from_slice(&body).unwrap()
        } else {
            prost::Message::decode(&body[..]).unwrap()
        };
        self.keep(request, if json { "http/json" } else { "http/protobuf" });
        full(200, Bytes::new())
    }

    fn keep(&self, request: ExportTraceServiceRequest, via: &'static str) {
        let mut inner = self.inner.lock().unwrap();
        for rs in request.resource_spans {
            let resource = attributes(
                rs.resource
                    .as_ref()
                    .map(|r| r.attributes.as_slice())
                    .unwrap_or_default(),
            );
            for ss in rs.scope_spans {
                for s in ss.spans {
                    inner.spans.push(Got {
                        name: s.name,
                        kind: s.kind,
                        trace_id: hex(&s.trace_id),
                        span_id: hex(&s.span_id),
                        parent_span_id: hex(&s.parent_span_id),
                        attributes: attributes(&s.attributes),
                        status: s.status.map_or(0, |st| st.code),
                        resource: resource.clone(),
                        via,
                    });
                }
            }
        }
    }
}

type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, String>;

fn full(status: u16, body: Bytes) -> Response<BoxBody> {
    let mut r = Response::new(Full::new(body).map_err(|e| match e {}).boxed_unsync());
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
    r
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, Value> {
    kvs.iter()
        .map(|kv| {
            let v = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => Value::from(s.clone()),
                Some(any_value::Value::IntValue(i)) => Value::from(*i),
                Some(any_value::Value::BoolValue(b)) => Value::from(*b),
                Some(any_value::Value::DoubleValue(d)) => Value::from(*d),
                other => Value::from(format!("{other:?}")),
            };
            (kv.key.clone(), v)
        })
        .collect()
}

struct Receiver(Collector);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if self.0.mode() == Mode::Refuse {
            return Err(tonic::Status::unavailable("refused by the test"));
        }
        self.0.keep(request.into_inner(), "grpc");
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}
