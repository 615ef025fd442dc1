//! The refresher and the backup folder: booting from it while upstream is unreachable, and
//! writing it after a change and at shutdown.

use super::{Refresh, Source};
use crate::token::{Scope, Token};

impl Refresh {
    /// Upstream is unreachable at start: serve from the backup, if it has a scope for any
    /// startup token configured now. Never wider than those scopes.
    pub(super) async fn boot_from_backup(&self, tokens: &[Token]) -> bool {
        let Some(backup) = &self.backup else {
            return false;
        };
        let mut restored = match backup.load().await {
            Ok(Some(r)) => r,
            Ok(None) => {
                tracing::info!("no backup to start from yet");
                return false;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start from the backup");
                return false;
            }
        };
        let usable: Vec<(Token, Scope)> = tokens
            .iter()
            .filter_map(|t| {
                let scope = restored.startup.get(&crate::token::digest(t.expose()))?;
                Some((t.clone(), scope.clone()))
            })
            .collect();
        if usable.is_empty() {
            tracing::warn!("the backup holds no scope for the startup tokens configured now");
            return false;
        }
        self.app.auth.restore(std::mem::take(&mut restored.tokens));
        self.app.publisher.init_scopes(
            usable
                .iter()
                .map(|(_, s)| (s.environment.clone(), s.projects.clone())),
        );
        for env in self.app.store.environments() {
            if let Some(document) = restored.documents.remove(&env) {
                self.app.publisher.publish(&env, document).await;
            }
        }
        for (token, scope) in &usable {
            tracing::info!(token = %token, scope = %scope, "upstream unreachable: serving this startup token's scope from the backup");
        }
        *self.lock() = usable.into_iter().map(Source::new).collect();
        self.observe();
        true
    }

    /// Upstream is unreachable at start: serve from the fleet's store, if it has a scope for any
    /// startup token configured now and a snapshot for its environment. Never wider than those
    /// tokens' scopes.
    pub(super) async fn boot_from_store(&self, tokens: &[Token]) -> bool {
        let Some(fleet) = &self.app.fleet else {
            return false;
        };
        let usable = fleet.startup_scopes(tokens).await;
        fleet.own_scopes(&usable);
        if usable.is_empty() {
            tracing::info!("the shared store has no scope for the startup tokens configured now");
            return false;
        }
        self.app.publisher.init_scopes(
            usable
                .iter()
                .map(|(_, s)| (s.environment.clone(), s.projects.clone())),
        );
        let mut loaded = 0;
        for env in self.app.store.environments() {
            loaded += usize::from(fleet.pull(&env).await);
        }
        if loaded == 0 {
            tracing::warn!(
                "the shared store has no usable snapshot for the startup tokens' environments"
            );
            return false;
        }
        for (token, scope) in &usable {
            tracing::info!(token = %token, scope = %scope, "upstream unreachable: serving this startup token's scope from the shared store");
        }
        *self.lock() = usable.into_iter().map(Source::new).collect();
        self.observe();
        true
    }

    /// Writes the startup scopes and token verdicts to the backup (in the background).
    pub(super) fn save_state(&self) {
        let Some(backup) = self.backup.clone() else {
            return;
        };
        let write = backup.save_state(&self.live_scopes(), &self.app.auth.verdicts());
        self.tasks.spawn(async move {
            if let Err(e) = write.await {
                tracing::error!(error = %e, "cannot write the backup");
            }
        });
    }

    pub(super) fn live_scopes(&self) -> Vec<(Token, Scope)> {
        self.lock()
            .iter()
            .filter(|s| !s.revoked)
            .map(|s| (s.token.clone(), s.scope.clone()))
            .collect()
    }

    /// Writes everything to the backup now (at shutdown).
    pub async fn save_backup(&self) {
        let Some(backup) = &self.backup else {
            return;
        };
        if !self.app.store.is_initialized() {
            return;
        }
        let startup = self.live_scopes();
        if let Err(e) = backup.save_state(&startup, &self.app.auth.verdicts()).await {
            tracing::error!(error = %e, "cannot write the backup");
        }
        for env in self.app.store.environments() {
            if let Some(snapshot) = self.app.store.snapshot(&env) {
                if let Err(e) = backup.save_features(&env, snapshot.document()).await {
                    tracing::error!(error = %e, "cannot write the backup");
                }
            }
        }
        tracing::info!("backup written");
    }
}
