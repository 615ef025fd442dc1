//! Edge mode's background work: validating the startup tokens, then keeping every environment's
//! snapshot fresh with one conditional poll per distinct startup scope.
//!
//! Each poll runs in its own task (a slow one delays no other), backs off with jitter when
//! upstream fails, and keeps the last good features meanwhile. Answers for several
//! project-scoped tokens of one environment are merged by project into one snapshot, published
//! only once every one of them has answered. A startup token upstream refuses (401/403) stops
//! being used, and the environment's serving scope shrinks to what the others still cover.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::Authenticator;
mod backup;
mod follow;
mod poll;
mod sources;
mod status;

pub use status::StartupStatus;

use sources::{merged, needed_sources, usable_startup_tokens, Source};

use crate::backoff::backoff;
use crate::document::Document;
use crate::fleet::Fleet;
use crate::metrics::Metrics;
use crate::persist::Backup;
use crate::publish::Publisher;
use crate::snapshot::Store;
use crate::token::Token;
use crate::upstream::{Fetch, Upstream, UpstreamError, UpstreamKind, ValidatedToken};

/// What the refresher works on: where snapshots are published and served, the token caches
/// (the backup's verdicts go there), the metrics, and what to do when a startup scope starts
/// being polled (flagpost registers itself upstream with its token).
pub struct Handles {
    pub store: Arc<Store>,
    pub publisher: Arc<Publisher>,
    pub auth: Arc<Authenticator>,
    pub metrics: Arc<Metrics>,
    pub on_polled: Box<dyn Fn(Token) + Send + Sync>,
    /// The fleet sharing a store, if any: only its poller polls.
    pub fleet: Option<Arc<Fleet>>,
}

impl std::fmt::Debug for Handles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Handles")
    }
}

/// The startup tokens of every environment and what each last fetched.
#[derive(Debug)]
pub struct Refresh {
    app: Handles,
    upstream: Arc<Upstream>,
    interval: Duration,
    /// How often a refused startup token is asked about again.
    recheck: Duration,
    tasks: TaskTracker,
    cancel: CancellationToken,
    sources: Mutex<Vec<Source>>,
    backup: Option<Backup>,
    /// Follow the upstream's stream instead of polling, while it serves one.
    streaming: bool,
}

/// Why edge mode cannot start.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct StartupError(pub String);

impl Refresh {
    pub fn new(
        app: Handles,
        upstream: Arc<Upstream>,
        (interval, recheck): (Duration, Duration),
        tasks: TaskTracker,
        cancel: CancellationToken,
        (backup, streaming): (Option<Backup>, bool),
    ) -> Arc<Refresh> {
        Arc::new(Refresh {
            app,
            upstream,
            interval,
            recheck,
            tasks,
            cancel,
            sources: Mutex::new(Vec::new()),
            backup,
            streaming,
        })
    }

    /// Validates the startup tokens (retrying with backoff while upstream is unreachable),
    /// sets the serving scopes and starts the polls. Fails when no startup token is a usable
    /// client token.
    pub async fn start(self: Arc<Self>, tokens: Vec<Token>) -> Result<(), StartupError> {
        let Some((validated, attempt)) = self.validate_startup(&tokens).await else {
            return Ok(());
        };
        if attempt > 0 {
            tracing::info!("upstream answered; startup tokens validated");
            // Fresh verdicts from now on; the backup's were only for while upstream was away.
            self.app.auth.restore(HashMap::new());
        }
        let usable = usable_startup_tokens(tokens, &validated);
        if usable.is_empty() {
            return Err(StartupError(
                "none of the startup tokens is a valid client token upstream; give flagpost at \
                 least one (see the errors above)"
                    .into(),
            ));
        }
        let client_tokens: Vec<ValidatedToken> = validated
            .into_iter()
            .filter(|v| v.kind == UpstreamKind::Client)
            .collect();
        self.app.auth.remember(&client_tokens);
        self.app.publisher.init_scopes(
            usable
                .iter()
                .map(|(_, scope)| (scope.environment.clone(), scope.projects.clone())),
        );
        for (token, scope) in &usable {
            tracing::info!(token = %token, scope = %scope, "startup token validated");
        }
        if let Some(fleet) = &self.app.fleet {
            fleet.save_startup(&usable).await;
            // The startup tokens are request tokens too (and an instance booting from the
            // store while upstream is down knows them only from there).
            fleet
                .share(&Authenticator::shared_verdicts(&client_tokens), &[])
                .await;
            // A follower is ready from the fleet's snapshots at once.
            fleet.sync_all().await;
        }
        {
            let mut sources = self.lock();
            *sources = usable.into_iter().map(Source::new).collect();
        }
        self.save_state();
        self.start_needed_polls();
        Ok(())
    }

    /// Validates the startup tokens upstream, retrying with backoff (and booting from the
    /// store or the backup meanwhile) until upstream answers; the verdicts and how many
    /// attempts failed. `None` when flagpost stops first.
    async fn validate_startup(&self, tokens: &[Token]) -> Option<(Vec<ValidatedToken>, u32)> {
        let raw: Vec<&str> = tokens.iter().map(Token::expose).collect();
        let mut attempt = 0u32;
        loop {
            let e = match self.upstream.validate(&raw, &self.app.metrics).await {
                Ok(v) => return Some((v, attempt)),
                Err(e) => e,
            };
            attempt += 1;
            let delay = backoff(Duration::from_secs(1), attempt);
            if attempt == 1 {
                tracing::error!(
                    upstream = self.upstream.base_url(),
                    error = %e,
                    "cannot validate the startup tokens; retrying with backoff"
                );
                if matches!(e, UpstreamError::Status(404)) {
                    tracing::error!("upstream answered 404 for /edge/validate: the upstream URL must be the Unleash server's root (without /api)");
                }
                if !self.boot_from_store(tokens).await && !self.boot_from_backup(tokens).await {
                    tracing::warn!("not ready until upstream answers");
                }
            }
            tokio::select! {
                _ = self.cancel.cancelled() => return None,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Source>> {
        // A poisoned lock only means a poll panicked mid-update; the data is still consistent
        // enough to keep serving, so carry on with it.
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a poll for every source no other live source covers.
    fn start_needed_polls(self: &Arc<Self>) {
        let mut start = Vec::new();
        {
            let mut sources = self.lock();
            let needed = needed_sources(&sources);
            for i in needed {
                if let Some(s) = sources.get_mut(i) {
                    if !s.polling {
                        s.polling = true;
                        start.push((i, s.token.clone()));
                    }
                }
            }
        }
        for (i, token) in start {
            let me = self.clone();
            self.tasks.spawn(async move { me.poll(i).await });
            // flagpost registers itself once per startup scope it polls.
            (self.app.on_polled)(token);
        }
    }

    /// Records a fetch's ETag and resets the failure count (for `/internal-backstage/tokens`).
    fn note_fetch(&self, index: usize, sent: Option<&str>, fetch: &Fetch) {
        if let Some(s) = self.lock().get_mut(index) {
            s.failures = 0;
            s.etag = match fetch {
                Fetch::Updated { etag, .. } => etag.clone(),
                Fetch::NotModified => sent.map(str::to_string),
            };
        }
    }

    /// Whether the poll of `index` goes on (`Some(revoked)`), or stops because another live
    /// startup token now covers it (after a refused one was accepted again).
    fn still_polled(&self, index: usize) -> Option<bool> {
        let mut sources = self.lock();
        let revoked = sources.get(index)?.revoked;
        if revoked || needed_sources(&sources).contains(&index) {
            return Some(revoked);
        }
        if let Some(s) = sources.get_mut(index) {
            s.polling = false;
        }
        None
    }

    fn is_revoked(&self, index: usize) -> bool {
        self.lock().get(index).is_some_and(|s| s.revoked)
    }

    /// Records a successful fetch; returns what the environment's features are merged from,
    /// once all its polls have answered.
    fn fetched(&self, index: usize, fetch: Fetch) -> Option<(String, sources::Parts)> {
        let mut sources = self.lock();
        let source = sources.get_mut(index)?;
        source.last_success = Some(SystemTime::now());
        let env = source.scope.environment.clone();
        match fetch {
            // Nothing new (a 304 before any 200 cannot happen: no ETag was sent).
            Fetch::NotModified => return None,
            Fetch::Updated { document, .. } => source.document = Some(Arc::new(document)),
        }
        sources::parts(&sources, &env).map(|parts| (env, parts))
    }

    /// Publishes an environment's features and backs them up.
    async fn publish(&self, env: &str, document: Document) {
        if let Some(backup) = &self.backup {
            let write = backup.save_features(env, &document);
            self.tasks.spawn(async move {
                if let Err(e) = write.await {
                    tracing::error!(error = %e, "cannot write the backup");
                }
            });
        }
        self.app.publisher.publish(env, document).await;
        if let Some(fleet) = &self.app.fleet {
            fleet.polled(env).await;
        }
    }

    /// A startup token was refused: stop serving with it, shrink the serving scope to what the
    /// remaining tokens cover, and let a token it covered take over. Its poll goes on, slowly.
    async fn revoke(self: &Arc<Self>, index: usize, status: u16) {
        let (token, env, remaining) = {
            let mut sources = self.lock();
            let Some(source) = sources.get_mut(index) else {
                return;
            };
            source.revoked = true;
            source.document = None;
            let token = source.token.clone();
            let env = source.scope.environment.clone();
            let remaining = sources::live_projects(&sources, &env);
            (token, env, remaining)
        };
        self.app.publisher.restrict(&env, &remaining);
        self.app
            .metrics
            .refresh_failures
            .with_label_values(&[&env, "refused"])
            .inc();
        tracing::error!(
            token = %token,
            status,
            environment = %env,
            still_served = %remaining,
            recheck_seconds = self.recheck.as_secs(),
            "upstream refused a startup token (revoked or expired); flagpost serves only what the other startup tokens cover, and asks about this one again on the token revalidation interval"
        );
        self.observe();
        self.save_state();
        self.start_needed_polls();
        let document = merged(&self.lock(), &env);
        if let Some(document) = document {
            self.publish(&env, document).await;
        }
    }

    /// A refused startup token was accepted again: its scope is served again.
    fn reinstate(self: &Arc<Self>, index: usize) {
        let (token, env, serving) = {
            let mut sources = self.lock();
            let Some(source) = sources.get_mut(index) else {
                return;
            };
            source.revoked = false;
            let token = source.token.clone();
            let env = source.scope.environment.clone();
            let serving = sources::live_projects(&sources, &env);
            (token, env, serving)
        };
        // Only what the live startup tokens cover, as validated at start: never wider.
        self.app.publisher.serve(&env, &serving);
        tracing::info!(token = %token, environment = %env, serving = %serving, "upstream accepts the startup token again; its scope is served again");
        self.observe();
        self.save_state();
    }
}
