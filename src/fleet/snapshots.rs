//! The fleet's snapshots: the poller writes its own to Redis (after a change, and whenever Redis
//! lacks them), followers load the poller's (when announced, and on every interval).

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::record;
use super::shared::{Confirmed, Written};
use super::{Confirmation, Fleet, Local, Role};

impl Fleet {
    /// As a follower: loads every environment's newer snapshot. As the poller (or solo): makes
    /// sure Redis holds this instance's snapshots.
    pub async fn sync_all(&self) {
        for env in self.store.environments() {
            match self.role() {
                Role::Follower => {
                    self.pull(&env).await;
                }
                Role::Poller => self.push(&env, false).await,
                Role::Solo => {}
            }
        }
    }

    pub(super) async fn push_all(&self) {
        for env in self.store.environments() {
            self.push(&env, false).await;
        }
    }

    /// After a poll (a change published, or the environment unchanged upstream): the poller
    /// writes or confirms the environment's snapshot in Redis, confirmed now by Redis's clock.
    pub async fn polled(&self, environment: &str) {
        if self.role() == Role::Poller {
            self.push(environment, true).await;
        }
    }

    /// Records when `environment` was confirmed (Redis's Unix ms) and how old that was by
    /// Redis's clock just now.
    fn set_confirmed(&self, environment: &str, at_ms: i64, age_ms: i64) {
        self.confirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                environment.to_string(),
                Confirmation {
                    at_ms,
                    age_ms,
                    seen: Instant::now(),
                },
            );
    }

    /// A write this instance made without holding the lease was refused: counted, and logged
    /// once until it takes the lease again.
    fn fenced(&self, environment: &str) {
        self.metrics
            .store_operations
            .with_label_values(&["write", "fenced"])
            .inc();
        if !self.fenced_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(environment, "this instance wrote to the shared store without holding the lease (it was paused or cut off past it); refused, the lease holder's snapshot stays");
        }
    }

    /// Writes the environment's current snapshot unless Redis already holds it; with `confirm`,
    /// moves its confirmation time to now.
    async fn push(&self, environment: &str, confirm: bool) {
        let Some(snapshot) = self.store.snapshot(environment) else {
            return;
        };
        let revision = snapshot.revision();
        let confirmed = if confirm {
            Confirmed::Now
        } else {
            Confirmed::At(
                self.confirmed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(environment)
                    .map_or(0, |c| c.at_ms),
            )
        };
        let known = self
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(environment)
            .filter(|l| l.revision == revision)
            .map(|l| l.hash.clone());
        if let Some(hash) = &known {
            // Unchanged here: a cheap check (or confirmation) unless Redis lost it.
            match self.held(environment, hash, confirm).await {
                Ok(true) | Err(_) => return,
                // Changed in Redis, or the lease is not ours: the write below decides.
                Ok(false) => {}
            }
        }
        let document = snapshot.document().clone();
        drop(snapshot);
        let Ok((json, hash)) = tokio::task::spawn_blocking(move || {
            let json = document.to_json();
            let hash = record::hash_of(&json);
            (json, hash)
        })
        .await
        else {
            return;
        };
        let scopes = self
            .store
            .serving(environment)
            .map(|p| serde_json::json!(p.names()).to_string())
            .unwrap_or_else(|| "[]".into());
        let written = self
            .shared
            .write_snapshot(environment, (&hash, &json), (&scopes, confirmed), &self.me)
            .await;
        let Ok((written, now)) = written else {
            return;
        };
        match written {
            Written::Stored(version) => {
                tracing::debug!(environment, version, "snapshot written to the shared store");
            }
            Written::Fenced => {
                self.fenced(environment);
                return;
            }
            Written::Same => {}
        }
        if confirm {
            self.set_confirmed(environment, now, 0);
        }
        self.set_local(environment, Local { revision, hash });
    }

    /// Whether Redis still holds the snapshot with `hash` (with `confirm`: and its confirmation
    /// time moved to now, which needs the lease).
    async fn held(
        &self,
        environment: &str,
        hash: &str,
        confirm: bool,
    ) -> Result<bool, super::shared::StoreError> {
        if !confirm {
            return self
                .shared
                .head(environment)
                .await
                .map(|h| h.is_some_and(|h| h.hash == hash));
        }
        let (done, now) = self.shared.confirm(environment, hash, &self.me).await?;
        if done {
            self.set_confirmed(environment, now, 0);
        }
        Ok(done)
    }

    fn set_local(&self, environment: &str, local: Local) {
        self.local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(environment.to_string(), local);
    }

    /// Loads the environment's snapshot from Redis if it differs from this instance's; true if
    /// one was published.
    pub async fn pull(&self, environment: &str) -> bool {
        let Ok(Some(head)) = self.shared.head(environment).await else {
            return false;
        };
        self.set_confirmed(environment, head.confirmed_at, head.age_ms);
        let current = self.store.snapshot(environment).map(|s| s.revision());
        let same = self
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(environment)
            .is_some_and(|l| l.hash == head.hash && Some(l.revision) == current);
        if same {
            return false;
        }
        if !self.usable(environment, &head) {
            return false;
        }
        let Ok(Some(record)) = self.shared.read(environment).await else {
            return false;
        };
        // What the poller serves narrows what this follower serves (a startup token upstream
        // refused there is not served here either); never beyond this instance's own tokens.
        let poller_serves = record::poller_scope(&record);
        let own = self
            .own
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(environment)
            .cloned();
        if let (Some(poller), Some(own)) = (poller_serves, own) {
            self.publisher.serve(environment, &own.intersect(&poller));
        }
        let version = record.version;
        let Some((mut document, hash)) = self.decode(environment, record).await else {
            return false;
        };
        // The fleet's version is the event id, so streams agree across instances.
        document.revision = Some(version);
        self.publisher.publish(environment, document).await;
        let revision = self.publisher.revision(environment);
        self.set_local(environment, Local { revision, hash });
        tracing::debug!(
            environment,
            version,
            "snapshot loaded from the shared store"
        );
        true
    }

    /// Whether the head of the stored snapshot allows reading it: not older than
    /// `store.max_age`, not larger than a document may be (each refusal logged).
    fn usable(&self, environment: &str, head: &super::shared::Head) -> bool {
        match record::check_head(head, self.max_age, self.max_document) {
            Ok(()) => true,
            Err(record::Unusable::TooOld) => {
                tracing::warn!(
                    environment,
                    age_seconds = head.age_ms / 1000,
                    max_age_seconds = self.max_age.as_secs(),
                    "the shared store's snapshot is older than store.max_age; not used"
                );
                false
            }
            Err(record::Unusable::TooLarge) => {
                tracing::error!(
                    environment,
                    size = head.size,
                    limit = self.max_document,
                    "the shared store's snapshot is larger than upstream_max_body_size; not used"
                );
                false
            }
        }
    }

    /// The stored snapshot as a document with its hash, off the runtime's threads; a record
    /// that is not a document or does not match its hash is logged, counted and not used.
    async fn decode(
        &self,
        environment: &str,
        record: super::shared::Record,
    ) -> Option<(crate::document::Document, String)> {
        let parsed = tokio::task::spawn_blocking(move || record::decode(&record)).await;
        let rejected = match parsed {
            Ok(Ok(decoded)) => return Some(decoded),
            Ok(Err(rejected)) => rejected,
            Err(_) => return None,
        };
        match rejected {
            record::Rejected::NotADocument(e) => {
                tracing::error!(environment, error = %e, "the shared store's snapshot is not a features document; not used")
            }
            record::Rejected::HashMismatch => tracing::error!(
                environment,
                "the shared store's snapshot does not match its hash; not used"
            ),
        }
        self.metrics
            .store_operations
            .with_label_values(&["read", "bad_data"])
            .inc();
        None
    }
}
