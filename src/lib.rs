//! flagpost: a validating edge proxy for Unleash feature flags.
//!
//! SDKs call flagpost instead of the Unleash server. Every request flows the same way:
//!
//! ```text
//! SDK ─► server (accept, hyper, limits) ─► server::route ─► auth: Authorization → Access{kind, scope}
//!     ─► scope gate (snapshot::Store::gate): do the startup client tokens cover the scope? else 403
//!     ─► handler reads the environment's Arc<Snapshot> (lock-free)
//!          Client API   → body serialised once per snapshot and project filter, with its ETag
//!          Frontend API → evaluate (unleash-yggdrasil), one evaluation per flag → JSON → ETag
//!     ─► response (server::error maps every error to status + JSON)
//! ```
//!
//! Modules, one job each:
//! - [`config`]: `config.toml` < environment < flags, validated into one [`config::Config`].
//! - [`token`]: token shapes, redaction, [`token::Scope`] and `covers`.
//! - [`auth`]: token → [`auth::Access`].
//! - [`snapshot`]: immutable per-environment snapshots and the arc-swap [`snapshot::Store`].
//! - [`evaluate`]: SDK context parsing, the engine wrapper, the Frontend API response.
//! - [`offline`]: features from a local file, watched and reloaded.
//! - [`metrics`]: the Prometheus registry the app owns.
//! - [`server`]: accept loop, router, handlers, CORS, errors.
//!
//! [`run`] takes the configuration, a bound listener and a shutdown future, so tests start the
//! real server in-process on port 0.

pub mod auth;
pub mod config;
pub mod evaluate;
pub mod metrics;
pub mod offline;
pub mod server;
pub mod snapshot;
pub mod token;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
use crate::config::{Config, Mode};
use crate::metrics::Metrics;
use crate::snapshot::{Document, Snapshot, Store};
use crate::token::TokenKind;

/// Everything a request handler reads: configuration, the snapshots, the token lookup and the
/// metrics. Shared behind an `Arc`.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub store: Store,
    pub auth: Authenticator,
    pub metrics: Metrics,
    draining: AtomicBool,
}

impl App {
    /// Builds the app for `config`: one store slot per environment the client tokens cover.
    pub fn new(config: Config) -> App {
        let metrics = Metrics::new(server::route::ROUTE_LABELS);
        let (store, auth) = match &config.mode {
            Mode::Offline(offline) => {
                let serving = offline
                    .tokens
                    .iter()
                    .filter(|t| t.kind == TokenKind::Client)
                    .map(|t| (t.scope.environment.clone(), t.scope.projects.clone()));
                (
                    Store::new(serving),
                    Authenticator::offline(offline.tokens.clone()),
                )
            }
        };
        App {
            config,
            store,
            auth,
            metrics,
            draining: AtomicBool::new(false),
        }
    }

    /// Ready: every environment has a snapshot, and flagpost is not shutting down.
    pub fn is_ready(&self) -> bool {
        let ready = !self.draining.load(Ordering::Relaxed) && self.store.all_loaded();
        self.metrics.ready.set(if ready { 1.0 } else { 0.0 });
        ready
    }

    /// From now on `/ready` answers 503.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.metrics.ready.set(0.0);
    }

    /// Builds a snapshot of `document` for `environment` and swaps it in.
    pub fn publish(&self, environment: &str, document: Document) {
        let count = document.features.len();
        let (snapshot, warnings) = Snapshot::build(environment, document);
        for w in warnings {
            tracing::warn!(environment, warning = %w, "flag cannot be evaluated; it will be off");
        }
        let built = snapshot
            .built_at()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        if self.store.publish(snapshot) {
            self.metrics
                .snapshot_features
                .with_label_values(&[environment])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
            self.metrics
                .snapshot_last_load
                .with_label_values(&[environment])
                .set(built);
        }
    }
}

/// Why flagpost could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot load the features file: {0}")]
    Features(#[from] offline::LoadError),
}

/// Runs flagpost on `listener` until `shutdown` completes, then drains and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let app = Arc::new(App::new(config));
    let cancel = CancellationToken::new();
    let tasks = TaskTracker::new();
    match &app.config.mode {
        Mode::Offline(offline) => {
            match offline::reload(&app, &offline.features_file) {
                Ok(count) => tracing::info!(
                    path = %offline.features_file.display(),
                    features = count,
                    environments = ?app.store.environments().collect::<Vec<_>>(),
                    "offline mode: features loaded"
                ),
                // Watched: stay up, not ready, and load the file once it is fixed.
                Err(e) if offline.reload_interval.is_some() => tracing::error!(
                    error = %e,
                    "offline mode: the features file cannot be used; not ready until it is fixed"
                ),
                Err(e) => return Err(e.into()),
            }
            if let Some(interval) = offline.reload_interval {
                tasks.spawn(offline::watch(
                    app.clone(),
                    offline.features_file.clone(),
                    interval,
                    cancel.clone(),
                ));
            }
        }
    }
    app.is_ready();
    server::serve(app.clone(), listener, shutdown).await;
    cancel.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(())
}
