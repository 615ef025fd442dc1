//! flagpost: a validating edge proxy for Unleash feature flags.
//!
//! SDKs call flagpost instead of the Unleash server. The source follows the flow:
//!
//! ```text
//! WHERE SNAPSHOTS COME FROM                WHERE THEY ARE KEPT          WHERE REQUESTS ARE SERVED
//! offline: features file (offline.rs) ─┐
//! edge: startup tokens validated and   ├─► publish::Publisher ─► snapshot::Store ◄─ server::handler
//!   polled (refresh/), or the upstream │   compiles (blocking     one Arc<Snapshot>   (one gate:
//!   stream followed (refresh/follow.rs)│   pool), swaps, counts,  per environment,    Store::admit)
//!   merged (refresh/sources.rs)        │   announces a ChangeSet  read lock-free
//! edge: backup at start (refresh/      ┘   per environment, keeps
//!   backup.rs, persist/)                    a short history ─────► stream::Streams: SSE to SDKs
//!                                          (delta: rendered once  and /api/client/delta
//!                                           per filter)            (server::handler::stream)
//!
//! A request: server (accept, TLS, timeouts, limits, spans) ─► server::route ─► auth (token →
//! Access{kind, scope}: the configured table, or caches in front of upstream /edge/validate)
//! ─► the scope gate, once ─► server::handler::api: Client API (body memoised per snapshot and
//! filter, ETag) · Frontend API (evaluate: context, one evaluation per flag) · usage (bounded
//! aggregation, forwarded by usage::forward) ─► server::error maps every refusal to JSON.
//!
//! Background work, owned by one task tracker and stopped by one cancellation token, gets
//! narrow handles (the store, the publisher, the authenticator, the usage buffer, the metrics),
//! never the request handlers' `App`: the offline file watcher, refresh (one poll per startup
//! scope), auth::Validator (the validation lanes) and auth::revalidate, usage::forward, and
//! the streams' ticker (heartbeats, token checks when verdicts or scopes change).
//! ```
//!
//! Modules, one job each:
//! - [`config`]: `config.toml` < environment < flags, validated into one [`config::Config`]
//!   (`config/mode.rs`: the offline and edge sections; `config/edge_compat.rs`: Unleash Edge's
//!   settings flagpost does not use, warned about or refused).
//! - [`token`]: token shapes and redaction; `token/scope.rs`: [`token::Scope`] and the scope
//!   rule (`covers`).
//! - [`document`]: a Client API document as received (features, segments, merge, compact).
//! - [`offline`]: features from a local file, watched and reloaded.
//! - [`upstream`]: the only HTTP client (the Unleash server, another flagpost, or Edge).
//! - [`refresh`]: edge mode's startup validation and polls; `refresh/sources.rs`: which
//!   startup tokens are polled and how their answers merge; `refresh/backup.rs`: the backup.
//! - [`persist`]: the backup's objects, in a folder or an S3 bucket (`persist/place.rs`).
//! - [`publish`]: the one publish path: compile, swap, metrics, change sets and their ids, the
//!   history clients resume from.
//! - [`delta`]: a change set as the delta events one filter sees, rendered once; SSE frames.
//! - [`stream`]: the open SDK streams: their limit, tasks, heartbeats and why they end.
//! - [`sse`]: the Server-Sent Events parser (the upstream stream, and the tests' client).
//! - [`fleet`]: a fleet on one Redis (a server, Sentinels or a cluster): the poller's lease,
//!   snapshots written (fenced by the lease) and followed, shared token verdicts, booting from the
//!   store; `fleet/shared.rs` every Redis key and call, `fleet/connect.rs` the connections per
//!   shape.
//! - [`snapshot`]: immutable per-environment snapshots, the serving scopes, and the arc-swap
//!   [`snapshot::Store`].
//! - [`auth`]: token → [`auth::Access`]; `auth/remote.rs` the verdict caches, `auth/budget.rs`
//!   the `/edge/validate` budgets, `auth/validator.rs` the validation lanes, `auth/shared.rs`
//!   what validation needs from a fleet ([`auth::SharedVerdicts`], which the fleet implements).
//! - [`evaluate`]: flagpost's walk of yggdrasil's compiled flags (`evaluate/engine.rs`) and the
//!   Frontend API response; `evaluate/context.rs`: the SDK context from a query or a body;
//!   `evaluate/volatility.rs`: what chance and the clock decide; `evaluate/memo.rs`: the
//!   bounded memo of remembered answers; `evaluate/properties.rs`: the generated-input
//!   properties against yggdrasil.
//! - [`usage`]: SDK usage metrics and registrations, bounded (`usage/body.rs` reads them),
//!   forwarded upstream (`usage/forward.rs`); flagpost's own instance data upstream (`usage/instance.rs`).
//! - [`server`]: accept loops, TLS, connection timeouts, the router, CORS, errors;
//!   `server/handler/` the request pipeline and the API handlers (`stream.rs`: streaming and
//!   delta; `backstage.rs`: explain, the inspection endpoints, downstream Edge reports);
//!   `server/refusal.rs`: the log lines requests may cause, within a budget;
//!   `server/downstream.rs`: downstream instances, bounded.
//! - `start.rs`: starting each mode, and edge mode's last work at shutdown.
//! - [`otel`]: OpenTelemetry traces: the subscriber (log and OTel layer, trace ids in JSON
//!   lines), the bounded span queue and its export over OTLP, `traceparent` in and out. The
//!   spans themselves are made where the work is (`server/handler/trace.rs` the request span,
//!   `upstream/trace.rs` upstream calls, the publisher, the validation lanes, the fleet).
//! - [`metrics`]: the Prometheus registry (`remote_write.rs`: pushing it, Edge's remote write);
//!   [`explain`]: `flagpost explain`'s text; [`json`]: the JSON written by hand on hot paths;
//!   [`backoff`]: retry delays; [`watch`]: noticing that a file changed.
//!
//! [`run`] (and [`run_with`], for HTTPS too) takes the configuration, bound listeners and a
//! shutdown future, so tests start the real server in-process on port 0.

pub mod auth;
pub mod backoff;
pub mod config;
pub mod delta;
pub mod document;
pub mod evaluate;
pub mod explain;
pub mod fleet;
pub mod json;
pub mod metrics;
pub mod offline;
pub mod otel;
pub mod persist;
pub mod publish;
pub mod refresh;
pub mod server;
pub mod snapshot;
pub mod sse;
pub mod stream;
pub mod token;
pub mod upstream;
pub mod usage;
pub mod watch;

mod start;

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::{Config, Mode, OfflineConfig};
use crate::metrics::Metrics;
use crate::refresh::Refresh;
use crate::server::tls::TlsReloader;
pub use crate::server::Listeners;
use crate::snapshot::Store;
use crate::start::{finish_edge, start_edge, start_offline};
use crate::token::TokenKind;
use crate::upstream::UpstreamSetupError;
use crate::usage::{Usage, UsageConfig};

/// Everything a request handler reads: configuration, the snapshots, the token lookup and the
/// metrics. Shared behind an `Arc`.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub store: Arc<Store>,
    /// The one way snapshots are served and announced.
    pub publisher: Arc<publish::Publisher>,
    /// The Server-Sent Events streams open to SDKs.
    pub streams: Arc<stream::Streams>,
    /// Remembered Frontend API ETags.
    pub etags: evaluate::Memo,
    pub auth: Arc<Authenticator>,
    pub metrics: Arc<Metrics>,
    pub usage: Arc<Usage>,
    draining: AtomicBool,
    aborted: AtomicBool,
    /// Refusals, logged without flooding the log.
    /// The log lines client requests cause, within `log.request_lines_per_minute`.
    pub request_log: server::refusal::RequestLog,
    /// Downstream Edge instances that report to `/api/client/metrics/edge`, bounded.
    pub downstream: server::downstream::Downstream,
    /// Requests being answered now (for the in-flight limit).
    pub(crate) in_flight: AtomicUsize,
    refresh: OnceLock<Arc<Refresh>>,
    /// The fleet this instance shares a store with, if any.
    fleet: OnceLock<Arc<fleet::Fleet>>,
    /// When this instance started.
    pub started: std::time::SystemTime,
}

impl App {
    /// Builds the app for offline mode: one store slot per environment the client tokens name.
    fn offline(config: Config, offline: &OfflineConfig, metrics: Arc<Metrics>) -> App {
        let serving = offline
            .tokens
            .iter()
            .filter(|t| t.kind == TokenKind::Client)
            .map(|t| (t.scope.environment.clone(), t.scope.projects.clone()));
        let store = Store::new(serving);
        let auth = Authenticator::offline(offline.tokens.clone());
        App::with(config, store, auth, metrics)
    }

    fn with(config: Config, store: Store, auth: Authenticator, metrics: Arc<Metrics>) -> App {
        let usage = Arc::new(Usage::new(
            UsageConfig {
                forward: matches!(config.mode, Mode::Edge(_)),
                max_entries: config.usage.max_entries,
                max_bytes: config.usage.max_bytes,
                per_flag_metrics: config.usage.per_flag_metrics,
                app_name: config.app_name.clone(),
                instance_id: config.instance_id.clone(),
            },
            metrics.clone(),
        ));
        let store = Arc::new(store);
        let publisher = Arc::new(publish::Publisher::new(
            store.clone(),
            metrics.clone(),
            config.streaming.history,
        ));
        let streams = stream::Streams::new(config.streaming.clone(), metrics.clone());
        let etags = evaluate::Memo::new(
            config.frontend.etag_cache_size,
            config.frontend.etag_cache_ttl,
        );
        let request_log = server::refusal::RequestLog::new(
            config.log_request_lines_per_minute,
            config.log_summary_interval,
            Some(metrics.log_lines_folded.clone()),
        );
        App {
            config,
            store,
            publisher,
            streams,
            etags,
            auth: Arc::new(auth),
            metrics,
            usage,
            draining: AtomicBool::new(false),
            aborted: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            request_log,
            downstream: Default::default(),
            refresh: OnceLock::new(),
            fleet: OnceLock::new(),
            started: std::time::SystemTime::now(),
        }
    }

    /// Ready: every environment has a snapshot and a startup token upstream accepts, and
    /// flagpost is not shutting down.
    pub fn is_ready(&self) -> bool {
        self.readiness().is_ok()
    }

    /// Whether flagpost can serve every environment it is configured for; if not, why.
    pub fn readiness(&self) -> Result<(), String> {
        let result = self.why_not_ready().map_or(Ok(()), Err);
        self.metrics
            .ready
            .set(if result.is_ok() { 1.0 } else { 0.0 });
        result
    }

    fn why_not_ready(&self) -> Option<String> {
        if self.draining.load(Ordering::Relaxed) {
            return Some("flagpost is shutting down".into());
        }
        if !self.store.is_initialized() {
            return Some(
                "the startup tokens have not been validated upstream yet (upstream unreachable?)"
                    .into(),
            );
        }
        if let Some(why) = self.refresh.get().and_then(|r| r.not_usable()) {
            return Some(why);
        }
        let unloaded = self.store.unloaded();
        if !unloaded.is_empty() {
            return Some(format!(
                "no features loaded yet for environment {}",
                unloaded.join(", ")
            ));
        }
        None
    }

    /// Stop without the pre-stop delay (flagpost cannot serve anyway).
    fn abort(&self) {
        self.aborted.store(true, Ordering::Relaxed);
    }

    /// How long to keep serving after a shutdown signal, with `/ready` at 503.
    pub fn drain_delay(&self) -> std::time::Duration {
        if self.aborted.load(Ordering::Relaxed) {
            std::time::Duration::ZERO
        } else {
            self.config.server.shutdown_delay
        }
    }

    /// From now on `/ready` answers 503.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.metrics.ready.set(0.0);
        self.streams.drain();
    }

    /// The startup client tokens with their scopes and whether they are usable: the configured
    /// client tokens in offline mode, the validated startup tokens in edge mode.
    pub fn startup_tokens(&self) -> Vec<refresh::StartupStatus> {
        if let Some(refresh) = self.refresh.get() {
            return refresh.startup();
        }
        match &self.config.mode {
            Mode::Offline(offline) => offline
                .tokens
                .iter()
                .filter(|t| t.kind == TokenKind::Client)
                .map(|t| refresh::StartupStatus {
                    token: t.token.clone(),
                    scope: t.scope.clone(),
                    live: true,
                    polled: false,
                    etag: None,
                    last_success: None,
                    features: None,
                    revision: None,
                    failures: 0,
                    interval: std::time::Duration::ZERO,
                })
                .collect(),
            Mode::Edge(_) => Vec::new(),
        }
    }

    /// This instance's role in a fleet, if it shares a store.
    pub fn fleet_role(&self) -> Option<&'static str> {
        self.fleet.get().map(|f| f.role().label())
    }

    /// Brings the gauges computed on demand up to date (before a scrape).
    pub fn observe(&self) {
        self.is_ready();
        self.metrics.more.observe_spans();
        self.auth.observe(&self.metrics);
        if let Some(refresh) = self.refresh.get() {
            refresh.observe();
        }
        if let Some(fleet) = self.fleet.get() {
            fleet.observe();
        }
    }
}

/// Why flagpost could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot load the features file: {0}")]
    Features(#[from] offline::LoadError),
    #[error("cannot set up the upstream client: {0}")]
    Upstream(#[from] UpstreamSetupError),
    #[error("{0}")]
    Startup(#[from] refresh::StartupError),
    #[error("{0}")]
    Tls(#[from] server::tls::TlsError),
    #[error("cannot set up the shared store: {0}")]
    Store(#[from] fleet::StoreError),
    #[error("cannot set up the backup: {0}")]
    Backup(#[from] persist::BackupError),
}

/// Runs flagpost on `listener` (plain HTTP) until `shutdown` completes (or edge mode finds no
/// usable startup token), then drains and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let listeners = Listeners {
        http: Some(listener),
        https: None,
    };
    run_with(config, listeners, shutdown).await
}

/// Runs flagpost on plain HTTP and/or HTTPS listeners (HTTPS with the certificate of
/// `config.server.tls`).
pub async fn run_with(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let metrics = Arc::new(Metrics::new(server::route::ROUTE_LABELS));
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    let tls = match (&config.server.tls, &listeners.https) {
        (Some(t), Some(_)) => {
            let reloader = Arc::new(TlsReloader::load(&t.cert_file, &t.key_file)?);
            tasks.spawn(reloader.clone().watch(metrics.clone(), cancel.clone()));
            Some(reloader)
        }
        _ => None,
    };
    let (fatal_tx, fatal_rx) = oneshot::channel::<refresh::StartupError>();
    let (app, edge) = match config.mode.clone() {
        Mode::Offline(offline) => {
            let app = Arc::new(App::offline(config, &offline, metrics));
            start_offline(&app, &offline, &tasks, &cancel).await?;
            (app, None)
        }
        Mode::Edge(edge) => {
            let (app, pieces) = start_edge(config, &edge, metrics, &tasks, &cancel, fatal_tx)?;
            (app, Some(pieces))
        }
    };
    app.is_ready();
    if let Some(rw) = app.config.remote_write.clone() {
        let labels: Vec<(String, String)> = [
            ("app_name".to_string(), app.config.app_name.clone()),
            ("instance_id".to_string(), app.config.instance_id.clone()),
        ]
        .into_iter()
        .chain(rw.hostname.clone().map(|h| ("hostname".to_string(), h)))
        .collect();
        let metrics = app.metrics.clone();
        tasks.spawn(metrics::remote_write::run(
            metrics,
            rw,
            labels,
            cancel.clone(),
        ));
    }
    tasks.spawn(app.streams.clone().run(
        app.auth.revisions(),
        app.store.scope_changes(),
        cancel.clone(),
    ));
    let fatal = Arc::new(std::sync::Mutex::new(None));
    let fatal_slot = fatal.clone();
    let app_for_stop = app.clone();
    let stop = async move {
        tokio::select! {
            _ = shutdown => {}
            Ok(e) = fatal_rx => {
                tracing::error!(error = %e, "flagpost cannot serve; stopping");
                app_for_stop.abort();
                if let Ok(mut slot) = fatal_slot.lock() {
                    *slot = Some(e);
                }
            }
        }
    };
    // Everything after this must be done by `deadline`: the grace period, counted from when
    // the listeners closed, covers the requests in flight and then the final flush.
    let deadline = server::serve(app.clone(), listeners, tls, stop).await;
    if let Some(edge) = edge {
        finish_edge(edge, deadline).await;
    }
    cancel.cancel();
    tasks.close();
    if tokio::time::timeout_at(deadline, tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("background tasks still busy at the shutdown deadline; stopping anyway");
    }
    let failed = fatal.lock().ok().and_then(|mut f| f.take());
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
