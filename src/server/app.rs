//! [`App`]: what a request handler reads (configuration, snapshots, tokens, metrics, streams,
//! usage), its readiness, and the edge-mode pieces attached to it at start.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::auth::Authenticator;
use crate::config::{Config, Mode, OfflineConfig};
use crate::metrics::Metrics;
use crate::refresh::Refresh;
use crate::snapshot::Store;
use crate::token::TokenKind;
use crate::usage::{Usage, UsageConfig};
use crate::{evaluate, fleet, publish, refresh, stream};

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
    pub request_log: super::refusal::RequestLog,
    /// Downstream Edge instances that report to `/api/client/metrics/edge`, bounded.
    pub downstream: super::downstream::Downstream,
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
    pub(crate) fn offline(config: Config, offline: &OfflineConfig, metrics: Arc<Metrics>) -> App {
        let serving = offline
            .tokens
            .iter()
            .filter(|t| t.kind == TokenKind::Client)
            .map(|t| (t.scope.environment.clone(), t.scope.projects.clone()));
        let store = Store::new(serving);
        let auth = Authenticator::offline(offline.tokens.clone());
        App::with(config, store, auth, metrics)
    }

    pub(crate) fn with(
        config: Config,
        store: Store,
        auth: Authenticator,
        metrics: Arc<Metrics>,
    ) -> App {
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
        let publisher = Arc::new(publish::Publisher::new(
            store,
            metrics.clone(),
            config.streaming.history,
        ));
        let store = publisher.store();
        let streams = stream::Streams::new(config.streaming.clone(), metrics.clone());
        let etags = evaluate::Memo::new(
            config.frontend.etag_cache_size,
            config.frontend.etag_cache_ttl,
        );
        let request_log = super::refusal::RequestLog::new(
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
    /// flagpost is not shutting down; if not, why. The answer is also set on the
    /// `flagpost_ready` gauge.
    pub fn check_readiness(&self) -> Result<(), String> {
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
    pub(crate) fn abort(&self) {
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

    /// Edge mode: the refresher whose startup tokens readiness and the metrics consult.
    pub(crate) fn attach_refresh(&self, refresh: Arc<Refresh>) {
        let _ = self.refresh.set(refresh);
    }

    /// Edge mode on a shared store: the fleet this instance is part of.
    pub(crate) fn attach_fleet(&self, fleet: Arc<fleet::Fleet>) {
        let _ = self.fleet.set(fleet);
    }

    /// This instance's role in a fleet, if it shares a store.
    pub fn fleet_role(&self) -> Option<&'static str> {
        self.fleet.get().map(|f| f.role().label())
    }

    /// Brings the gauges computed on demand up to date (before a scrape).
    pub fn observe(&self) {
        let _ = self.check_readiness();
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
