//! Running flagpost: [`run_with`] starts a mode (offline: load and watch the file; edge: the
//! upstream client, validation, the refresher, the usage forwarder), owns every background
//! task, serves until the shutdown signal, and drains (edge mode's last work included).

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::{self, Authenticator, Validator};
use crate::config::{Config, EdgeConfig, Mode, OfflineConfig};
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::refresh::{self, Refresh};
use crate::server::tls::TlsReloader;
use crate::server::App;
use crate::server::Listeners;
use crate::snapshot::Store;
use crate::upstream::{Upstream, UpstreamSetupError};
use crate::{fleet, offline, persist, server, token, usage};

/// Edge mode's last work at shutdown, in order: the backup (local, quick), then the usage
/// forwarder is stopped (a round under way finishes the body on its way, until `deadline`, and
/// puts back what it has not sent) and the buffer is flushed upstream until `deadline`; what
/// is still undelivered then is counted as dropped.
pub(crate) async fn finish_edge(edge: EdgeParts, deadline: tokio::time::Instant) {
    let backup_limit = deadline.max(tokio::time::Instant::now()) + BACKUP_AT_EXIT;
    let refresh = edge.refresh.clone();
    // Its own task, awaited here and aborted past the limit: never left running.
    let mut backup = tokio::spawn(async move { refresh.save_backup().await });
    if tokio::time::timeout_at(backup_limit, &mut backup)
        .await
        .is_err()
    {
        backup.abort();
        tracing::error!("the backup could not be written before the shutdown deadline");
    }
    edge.forwarder_stop.stop.cancel();
    let mut forwarder = edge.forwarder;
    if tokio::time::timeout_at(deadline, &mut forwarder)
        .await
        .is_err()
    {
        // A body still on its way at the deadline is given up and counted as dropped.
        edge.forwarder_stop.abandon.cancel();
        let _ = tokio::time::timeout(ABANDON_AT_EXIT, forwarder).await;
    }
    edge.forwarding
        .forward(usage::forward::Round::Final(deadline))
        .await;
}

/// Most time the usage forwarder gets, past the deadline, to count what it gives up.
const ABANDON_AT_EXIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Most time the backup at shutdown may take past the deadline (disks can be slow).
const BACKUP_AT_EXIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Offline mode: loads the features file (on the blocking pool) and watches it.
pub(crate) async fn start_offline(
    app: &Arc<App>,
    offline: &OfflineConfig,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
) -> Result<(), RunError> {
    let loaded = tokio::task::spawn_blocking({
        let app = app.clone();
        let path = offline.features_file.clone();
        move || offline::reload(&app.publisher, &path)
    })
    .await
    .unwrap_or_else(|e| {
        Err(offline::LoadError::Format {
            path: offline.features_file.clone(),
            problem: format!("loading failed: {e}"),
        })
    });
    match loaded {
        Ok(count) => tracing::info!(
            path = %offline.features_file.display(),
            features = count,
            environments = ?app.store.environments(),
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
            app.publisher.clone(),
            offline.features_file.clone(),
            interval,
            cancel.clone(),
        ));
    }
    Ok(())
}

/// What the final usage flush and backup at shutdown need in edge mode.
pub(crate) struct EdgeParts {
    /// The usage forwarder (the final flush).
    forwarding: Arc<usage::forward::Forwarder>,
    refresh: Arc<Refresh>,
    /// Stops the periodic usage forwarder.
    forwarder_stop: usage::forward::Stop,
    forwarder: tokio::task::JoinHandle<()>,
}

/// Edge mode: the upstream client, token validation, the startup-token polls and the usage
/// forwarding, all owned by `tasks`. Returns what the final flush at shutdown needs.
pub(crate) fn start_edge(
    config: Config,
    edge: &EdgeConfig,
    metrics: Arc<Metrics>,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
    fatal: oneshot::Sender<refresh::StartupError>,
) -> Result<(Arc<App>, EdgeParts), RunError> {
    let upstream = Arc::new(Upstream::new(edge, &config.app_name, &config.instance_id)?);
    let backup = backup(edge)?;
    if edge.skip_ssl_verification {
        tracing::warn!("TLS verification of the upstream is OFF (skip_ssl_verification): anyone on the network path can impersonate it");
    }
    let (auth, mut validator): (Authenticator, Validator) = Authenticator::edge(
        edge.client_keys.clone(),
        upstream.clone(),
        metrics.clone(),
        (edge.token_cache_size, edge.invalid_token_ttl),
        auth::Budget::new(
            edge.validate_caller_budget,
            edge.validate_total_budget,
            metrics.clone(),
        ),
    );
    let app = Arc::new(App::with(config, Store::pending(), auth, metrics));
    let fleet = start_fleet(edge, &app, &mut validator, (tasks, cancel))?;
    tasks.spawn(validator.run(cancel.clone()));
    tasks.spawn(auth::revalidate(
        app.auth.clone(),
        (
            upstream.clone(),
            app.metrics.clone(),
            fleet.clone().map(|f| f as Arc<dyn auth::SharedVerdicts>),
        ),
        edge.token_revalidation_interval,
        cancel.clone(),
    ));
    let refresh = edge_refresh(&app, &upstream, edge, (tasks, cancel), fleet, backup);
    app.attach_refresh(refresh.clone());
    let (forwarding, forwarder_stop, forwarder) =
        start_forwarding(&app, &upstream, &refresh, tasks, cancel);
    if let Some(token) = edge.tokens.first() {
        tasks.spawn(crate::instance::run(
            app.clone(),
            upstream.clone(),
            token.clone(),
            app.config.usage.interval,
            cancel.clone(),
        ));
    }
    tracing::info!(
        upstream = %edge.upstream_url,
        tokens = edge.tokens.len(),
        "edge mode: validating the startup tokens"
    );
    let starting = refresh.clone();
    let tokens = edge.tokens.clone();
    tasks.spawn(async move {
        if let Err(e) = starting.start(tokens).await {
            let _ = fatal.send(e);
        }
    });
    let parts = EdgeParts {
        forwarding,
        refresh,
        forwarder_stop,
        forwarder,
    };
    Ok((app, parts))
}

/// The fleet on the shared store, if one is configured: its lease and follow loops on
/// `tasks`, the validator sharing its verdicts through it.
fn start_fleet(
    edge: &EdgeConfig,
    app: &Arc<App>,
    validator: &mut Validator,
    (tasks, cancel): (&TaskTracker, &CancellationToken),
) -> Result<Option<Arc<Fleet>>, RunError> {
    if edge.store.is_none() {
        return Ok(None);
    }
    let fleet = Fleet::new(
        edge,
        &app.config.instance_id,
        (
            app.publisher.clone(),
            app.store.clone(),
            app.metrics.clone(),
        ),
    )?;
    validator.share_with(fleet.clone());
    tasks.spawn(fleet.clone().run_lease(cancel.clone()));
    tasks.spawn(fleet.clone().run_follow(app.auth.clone(), cancel.clone()));
    app.attach_fleet(fleet.clone());
    Ok(Some(fleet))
}

/// The periodic usage forwarder on `tasks`, with its own stop (the final flush at shutdown
/// comes after it stops).
fn start_forwarding(
    app: &Arc<App>,
    upstream: &Arc<Upstream>,
    refresh: &Arc<Refresh>,
    tasks: &TaskTracker,
    cancel: &CancellationToken,
) -> (
    Arc<usage::forward::Forwarder>,
    usage::forward::Stop,
    tokio::task::JoinHandle<()>,
) {
    let forwarder_stop = usage::forward::Stop {
        stop: cancel.child_token(),
        abandon: CancellationToken::new(),
    };
    let forwarding = Arc::new(usage::forward::Forwarder {
        usage: app.usage.clone(),
        metrics: app.metrics.clone(),
        upstream: upstream.clone(),
        refresh: refresh.clone(),
    });
    let forwarder = tasks.spawn(
        forwarding
            .clone()
            .run(app.config.usage.interval, forwarder_stop.clone()),
    );
    (forwarding, forwarder_stop, forwarder)
}

/// The backup folder or bucket, if any. Objects read back are bounded by what upstream may
/// send (features) and by the token caches (verdicts), with room for the wrapping.
fn backup(edge: &EdgeConfig) -> Result<Option<persist::Backup>, persist::BackupError> {
    let max_object = (edge.upstream_max_body_size as u64)
        .saturating_mul(2)
        .saturating_add(64 * 1024 * 1024);
    if let Some(bucket) = &edge.s3_bucket {
        let backup = persist::Backup::bucket(bucket, edge.upstream_request_timeout, max_object)?;
        return Ok(Some(backup));
    }
    Ok(edge
        .backup_folder
        .as_deref()
        .map(|dir| persist::Backup::folder(dir, max_object)))
}

/// The edge refresher, with the handles it works on; flagpost registers itself upstream for
/// each startup scope it starts polling.
fn edge_refresh(
    app: &Arc<App>,
    upstream: &Arc<Upstream>,
    edge: &EdgeConfig,
    (tasks, cancel): (&TaskTracker, &CancellationToken),
    fleet: Option<Arc<Fleet>>,
    backup: Option<persist::Backup>,
) -> Arc<Refresh> {
    let registration = usage::forward::Registration {
        app_name: app.config.app_name.clone(),
        instance_id: app.config.instance_id.clone(),
        interval: app.config.usage.interval,
    };
    let on_polled = {
        let (upstream, metrics, tasks) = (upstream.clone(), app.metrics.clone(), tasks.clone());
        move |token: token::Token| {
            let (upstream, metrics, registration) =
                (upstream.clone(), metrics.clone(), registration.clone());
            tasks.spawn(async move { registration.send(&upstream, &token, &metrics).await });
        }
    };
    let handles = refresh::Handles {
        store: app.store.clone(),
        publisher: app.publisher.clone(),
        auth: app.auth.clone(),
        metrics: app.metrics.clone(),
        on_polled: Box::new(on_polled),
        fleet,
    };
    Refresh::new(
        handles,
        upstream.clone(),
        (edge.refresh_interval, edge.token_revalidation_interval),
        tasks.clone(),
        cancel.clone(),
        (backup, edge.streaming),
    )
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
    let _ = app.check_readiness();
    spawn_remote_write(&app, &tasks, &cancel);
    tasks.spawn(app.streams.clone().run(
        app.auth.revisions(),
        app.publisher.scope_changes(),
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
    if tokio::time::timeout_at(deadline, app.streams.finished())
        .await
        .is_err()
    {
        tracing::warn!("stream tasks still running at the shutdown deadline");
    }
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

/// Remote write, when configured: every series labelled as Unleash Edge labels them.
fn spawn_remote_write(app: &App, tasks: &TaskTracker, cancel: &CancellationToken) {
    let Some(rw) = app.config.remote_write.clone() else {
        return;
    };
    let labels: Vec<(String, String)> = [
        ("app_name".to_string(), app.config.app_name.clone()),
        ("instance_id".to_string(), app.config.instance_id.clone()),
    ]
    .into_iter()
    .chain(rw.hostname.clone().map(|h| ("hostname".to_string(), h)))
    .collect();
    tasks.spawn(crate::remote_write::run(
        app.metrics.clone(),
        rw,
        labels,
        cancel.clone(),
    ));
}
