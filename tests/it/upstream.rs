//! A scripted fake Unleash server on port 0. It answers like the captures in
//! `tests/fixtures/upstream/` (status codes, headers, messages), records every request, and can
//! be told to misbehave: down, slow, an error status, garbage JSON.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::sync::oneshot;

mod answer;
use answer::answer;

/// A token the fake knows.
#[derive(Debug, Clone)]
pub struct FakeToken {
    pub secret: String,
    pub kind: String,
    pub environment: String,
    pub projects: Vec<String>,
}

/// How the fake answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Behaviour {
    Normal,
    /// Connections are dropped at once.
    Down,
    /// Every answer comes after this long.
    Slow(Duration),
    /// Every call answers this status.
    Status(u16),
    /// Feature fetches answer 200 with a broken JSON body.
    Garbage,
}

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// What a script makes the fake do with a request instead of answering normally.
pub enum Scripted {
    Respond(Response<Full<Bytes>>),
    /// Never answer.
    Hang,
}

/// The request's head and body in, what to do instead of answering normally out.
type ScriptFn = dyn Fn(&http::request::Parts, &Bytes) -> Option<Scripted> + Send + Sync;

/// A function of the request deciding whether to misbehave (`None`: answer normally).
#[derive(Clone)]
pub struct Script(pub Arc<ScriptFn>);

impl std::fmt::Debug for Script {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Script")
    }
}

#[derive(Debug)]
pub struct State {
    /// Consulted first, for every request.
    pub script: Option<Script>,
    pub tokens: Vec<FakeToken>,
    /// Features per environment (the full list), and segments.
    pub features: HashMap<String, Vec<Value>>,
    pub segments: HashMap<String, Vec<Value>>,
    pub revision: u64,
    pub behaviour: Behaviour,
    /// Only feature fetches misbehave when set (validation keeps working).
    pub only_features: bool,
    pub requests: Vec<Recorded>,
    /// Status to answer bulk metrics with (202 by default).
    pub metrics_status: Vec<u16>,
}

pub struct FakeUpstream {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
}

fn fixture(path: &str) -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/upstream")
        .join(path);
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// The fixture tokens by name (`client-all-dev`, `frontend-multi-prod`, ...).
pub fn fixture_tokens() -> HashMap<String, FakeToken> {
    let all = fixture("tokens.json");
    all.as_object()
        .unwrap()
        .iter()
        .map(|(name, t)| {
            let kind = match t["type"].as_str().unwrap() {
                "backend" => "client",
                other => other,
            };
            (
                name.clone(),
                FakeToken {
                    secret: t["secret"].as_str().unwrap().to_string(),
                    kind: kind.to_string(),
                    environment: t["environment"].as_str().unwrap_or("*").to_string(),
                    projects: t["projects"]
                        .as_array()
                        .map(|ps| ps.iter().map(|p| p.as_str().unwrap().to_string()).collect())
                        .unwrap_or_default(),
                },
            )
        })
        .collect()
}

/// The secret of a fixture token.
pub fn secret(name: &str) -> String {
    fixture_tokens()[name].secret.clone()
}

impl FakeUpstream {
    /// A fake that knows every fixture token and serves the captured features of development
    /// and production.
    pub async fn start() -> FakeUpstream {
        let mut features = HashMap::new();
        let mut segments = HashMap::new();
        for (env, file) in [
            ("development", "client-features/client-all-dev.json"),
            ("production", "client-features/client-all-prod.json"),
        ] {
            let body = fixture(file)["response"]["body"].clone();
            features.insert(
                env.to_string(),
                body["features"].as_array().unwrap().clone(),
            );
            segments.insert(
                env.to_string(),
                body["segments"].as_array().cloned().unwrap_or_default(),
            );
        }
        let state = State {
            script: None,
            tokens: fixture_tokens().into_values().collect(),
            features,
            segments,
            revision: 64,
            behaviour: Behaviour::Normal,
            only_features: false,
            requests: Vec::new(),
            metrics_status: Vec::new(),
        };
        FakeUpstream::start_with(state).await
    }

    pub async fn start_with(state: State) -> FakeUpstream {
        FakeUpstream::serve(state, None).await
    }

    /// The fake over HTTPS with `cert`/`key`, requiring client certificates issued by
    /// `client_ca` (all PEM).
    pub async fn start_tls(cert: &str, key: &str, client_ca: &str) -> FakeUpstream {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(client_ca.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots.into(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert.as_bytes())
            .map(|c| c.unwrap())
            .collect();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .unwrap();
        let fake = FakeUpstream::start().await;
        // Replace the plain listener with a TLS one over the same state.
        let state = std::mem::replace(&mut *fake.state.lock().unwrap(), empty_state());
        drop(fake);
        FakeUpstream::serve(state, Some(std::sync::Arc::new(config))).await
    }

    async fn serve(
        state: State,
        tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    ) -> FakeUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(state));
        let (stop, mut stopped) = oneshot::channel::<()>();
        let shared = state.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = &mut stopped => return,
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => pair,
                        Err(_) => continue,
                    },
                };
                if shared.lock().unwrap().behaviour == Behaviour::Down {
                    drop(stream);
                    continue;
                }
                let state = shared.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let state = state.clone();
                        async move {
                            // Down also cuts connections that were already open.
                            if state.lock().unwrap().behaviour == Behaviour::Down {
                                return Err(std::io::Error::other("down"));
                            }
                            Ok(answer(state, req).await)
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match tls {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(config) => {
                            let Ok(stream) =
                                tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                            else {
                                return;
                            };
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        FakeUpstream {
            addr,
            state,
            stop: Some(stop),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn https_url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Misbehaves as `script` says (replacing any earlier script).
    pub fn script(
        &self,
        script: impl Fn(&http::request::Parts, &Bytes) -> Option<Scripted> + Send + Sync + 'static,
    ) {
        self.state.lock().unwrap().script = Some(Script(Arc::new(script)));
    }

    pub fn unscript(&self) {
        self.state.lock().unwrap().script = None;
    }

    pub fn set(&self, behaviour: Behaviour) {
        self.state.lock().unwrap().behaviour = behaviour;
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn requests_to(&self, path_prefix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path.starts_with(path_prefix))
            .collect()
    }

    /// Changes one flag in an environment (and bumps the revision, so ETags change).
    pub fn set_enabled(&self, environment: &str, flag: &str, enabled: bool) {
        let mut s = self.state.lock().unwrap();
        for f in s.features.get_mut(environment).unwrap() {
            if f["name"] == flag {
                f["enabled"] = json!(enabled);
            }
        }
        s.revision += 1;
    }

    /// Deletes a token upstream.
    pub fn revoke(&self, secret: &str) {
        self.state
            .lock()
            .unwrap()
            .tokens
            .retain(|t| t.secret != secret);
    }

    pub fn add_token(&self, token: FakeToken) {
        self.state.lock().unwrap().tokens.push(token);
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn empty_state() -> State {
    State {
        script: None,
        tokens: Vec::new(),
        features: HashMap::new(),
        segments: HashMap::new(),
        revision: 0,
        behaviour: Behaviour::Normal,
        only_features: false,
        requests: Vec::new(),
        metrics_status: Vec::new(),
    }
}

pub fn json_response(status: u16, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert(
        "content-type",
        "application/json; charset=utf-8".parse().unwrap(),
    );
    r
}
