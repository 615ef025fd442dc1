//! A fleet of flagposts on one Redis (`--redis-url`): one instance, holding a lease, polls
//! upstream and writes each environment's snapshot to Redis; the others load it when it is
//! announced (and check on every refresh interval in case an announcement was missed). Token
//! verdicts are shared as SHA-256 digests, so a new token is asked about upstream once for the
//! fleet, and a revoked one is revoked for all. A new instance boots from Redis while upstream
//! is down, within its own startup tokens' scopes. Redis is never needed to serve: when it
//! cannot be reached, every instance keeps what it has and, once the lease would have expired,
//! polls upstream itself ("solo") until Redis answers again.
//!
//! Writes are fenced by the lease: the WRITE script writes only for the instance whose id the
//! lease holds, so a poller that was paused or cut off past its lease cannot put its older
//! snapshot over the new poller's (refused, counted as `write`/`fenced`, logged once).
//! Versions are assigned by Redis and every time compared across instances is Redis's
//! (`TIME`): a snapshot's age is Redis's age of it plus local time elapsed since it was read.
//!
//! ```text
//!   poller ── poll upstream ─► Publisher ─► Store ─► (push) WRITE script, fenced ───► Redis
//!                                                         PUBLISH "snapshot <v> <env>"  │
//!   follower ◄─ subscribe / check every interval ◄───────────────────────────────────────┘
//!            ─► read ─► Publisher (same path as a poll)
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod connect;
mod record;
mod scripts;
mod shared;
mod snapshots;
mod tokens;

pub use shared::{Confirmed, Shared, StoreError, Written};

use crate::auth::Authenticator;
use crate::backoff::backoff;
use crate::config::EdgeConfig;
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::snapshot::Store;
use crate::token::Projects;

/// What this instance does in the fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Another instance polls; this one loads what it writes.
    Follower,
    /// This instance holds the lease: it polls upstream and writes to Redis.
    Poller,
    /// Redis cannot be reached: this instance polls upstream itself.
    Solo,
}

impl Role {
    pub fn label(self) -> &'static str {
        match self {
            Role::Follower => "follower",
            Role::Poller => "poller",
            Role::Solo => "solo",
        }
    }
}

/// When upstream last confirmed an environment's snapshot, in Redis's time: the Unix ms Redis
/// stamped, and how old that was by Redis's clock when this instance learned it (at `seen`).
/// Ages are Redis's age plus local time elapsed since: no two hosts' clocks are compared.
#[derive(Debug, Clone, Copy)]
struct Confirmation {
    at_ms: i64,
    age_ms: i64,
    seen: Instant,
}

impl Confirmation {
    fn age(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.age_ms).unwrap_or(0)) + self.seen.elapsed()
    }
}

/// What this instance last wrote or loaded for an environment.
#[derive(Debug, Clone)]
struct Local {
    /// The local snapshot revision it was for.
    revision: u64,
    hash: String,
}

/// The fleet: see the module documentation.
pub struct Fleet {
    shared: Shared,
    /// This instance in the lease (its instance id and a random suffix: unique).
    me: String,
    lease: Duration,
    max_age: Duration,
    /// How often followers check versions and the poller checks the store holds its snapshots.
    interval: Duration,
    /// Largest document read from Redis.
    max_document: usize,
    /// Times to live of shared verdicts: valid, refused, and of a claim.
    ttl: (Duration, Duration, Duration),
    role: watch::Sender<Role>,
    publisher: Arc<Publisher>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    local: Mutex<HashMap<String, Local>>,
    /// The last time Redis answered a lease call.
    contact: Mutex<Option<Instant>>,
    /// When each environment's snapshot was last confirmed upstream, by Redis's clock.
    confirmed: Mutex<HashMap<String, Confirmation>>,
    /// Bumped when another instance announces new token verdicts.
    verdicts_announced: watch::Sender<u64>,
    /// Whether a fenced write was logged since this instance last took the lease.
    fenced_logged: std::sync::atomic::AtomicBool,
    /// What this instance's own startup tokens were validated for, per environment: what a
    /// follower may serve at most, whatever the poller serves.
    own: Mutex<HashMap<String, Projects>>,
}

impl std::fmt::Debug for Fleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fleet")
            .field("me", &self.me)
            .field("role", &*self.role.borrow())
            .finish()
    }
}

impl Fleet {
    pub fn new(
        edge: &EdgeConfig,
        instance_id: &str,
        (publisher, store, metrics): (Arc<Publisher>, Arc<Store>, Arc<Metrics>),
    ) -> Result<Arc<Fleet>, StoreError> {
        let Some(config) = &edge.store else {
            return Err(StoreError::Redis("no store configured".into()));
        };
        let shared = Shared::new(config, metrics.clone())?;
        let me = format!("{instance_id}-{:08x}", rand::random::<u32>());
        let fleet = Arc::new(Fleet {
            shared,
            me,
            lease: config.lease,
            max_age: config.max_age,
            interval: edge.refresh_interval,
            max_document: edge.upstream_max_body_size,
            ttl: (
                edge.token_revalidation_interval,
                edge.invalid_token_ttl,
                edge.upstream_request_timeout + Duration::from_secs(1),
            ),
            role: watch::Sender::new(Role::Follower),
            publisher,
            store,
            metrics,
            local: Mutex::new(HashMap::new()),
            contact: Mutex::new(None),
            confirmed: Mutex::new(HashMap::new()),
            fenced_logged: std::sync::atomic::AtomicBool::new(false),
            verdicts_announced: watch::Sender::new(0),
            own: Mutex::new(HashMap::new()),
        });
        fleet.set_role_gauge(Role::Follower);
        let redis: Vec<String> = config.redis_urls.iter().map(|u| u.redacted()).collect();
        tracing::info!(redis = %redis.join(","), mode = config.mode.name(), namespace = %config.namespace, instance = %fleet.me, "sharing a store with the fleet");
        Ok(fleet)
    }

    pub fn role(&self) -> Role {
        *self.role.borrow()
    }

    /// Whether this instance polls upstream now (the poller, or alone while Redis is away).
    pub fn may_poll(&self) -> bool {
        self.role() != Role::Follower
    }

    pub fn roles(&self) -> watch::Receiver<Role> {
        self.role.subscribe()
    }

    fn set_role(&self, role: Role, why: &str) {
        let before = self.role.send_replace(role);
        if before == role {
            return;
        }
        self.set_role_gauge(role);
        let change = match (before, role) {
            (_, Role::Poller) => "acquired",
            (Role::Poller, _) => "lost",
            _ => "other",
        };
        if change != "other" {
            self.metrics
                .fleet_lease_changes
                .with_label_values(&[change])
                .inc();
        }
        tracing::info!(
            from = before.label(),
            to = role.label(),
            reason = why,
            "fleet role changed"
        );
    }

    fn set_role_gauge(&self, role: Role) {
        for r in [Role::Follower, Role::Poller, Role::Solo] {
            self.metrics
                .fleet_role
                .with_label_values(&[r.label()])
                .set(i64::from(r == role));
        }
    }

    fn touch(&self) {
        *self.contact.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }

    /// Whether Redis has not answered a lease call for longer than the lease.
    fn out_of_touch(&self) -> bool {
        self.contact
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none_or(|at| at.elapsed() > self.lease)
    }

    /// Holds, renews or takes the lease until `cancel`; gives it up then.
    pub async fn run_lease(self: Arc<Self>, cancel: CancellationToken) {
        // Started now: Redis gets a whole lease period before this instance polls alone.
        self.touch();
        let renew_every = self.lease / 3;
        loop {
            let result = if self.role() == Role::Poller {
                self.shared.renew_lease(&self.me, self.lease).await
            } else {
                self.shared.acquire_lease(&self.me, self.lease).await
            };
            match result {
                Ok(held) => {
                    self.touch();
                    match (self.role(), held) {
                        (Role::Poller, true) => {}
                        (_, true) => {
                            self.fenced_logged
                                .store(false, std::sync::atomic::Ordering::Relaxed);
                            self.set_role(Role::Poller, "lease acquired");
                            // The store holds this instance's snapshots at once (after a Redis
                            // restart it may be empty).
                            self.push_all().await;
                        }
                        (Role::Poller, false) => self.set_role(Role::Follower, "lease lost"),
                        (_, false) => self.set_role(Role::Follower, "another instance polls"),
                    }
                }
                Err(_) if self.out_of_touch() => {
                    self.set_role(Role::Solo, "Redis unreachable for longer than the lease");
                }
                Err(_) => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(renew_every) => {}
            }
        }
        if self.role() == Role::Poller {
            if let Ok(true) = self.shared.release_lease(&self.me).await {
                self.metrics
                    .fleet_lease_changes
                    .with_label_values(&["released"])
                    .inc();
                tracing::info!("lease given up: another instance takes over polling");
            }
        }
    }

    /// Follows the fleet's announcements, and checks every interval, until `cancel`: as a
    /// follower loads newer snapshots; as the poller makes sure Redis holds its own; applies
    /// revocations to `auth`.
    pub async fn run_follow(self: Arc<Self>, auth: Arc<Authenticator>, cancel: CancellationToken) {
        let mut attempt = 0u32;
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let subscription = tokio::select! {
                _ = cancel.cancelled() => return,
                s = self.shared.subscribe() => s,
            };
            let mut pubsub = match subscription {
                Ok(p) => {
                    attempt = 0;
                    // Whatever was announced while unsubscribed.
                    self.sync_all().await;
                    p
                }
                Err(_) => {
                    attempt += 1;
                    let wait = backoff(Duration::from_millis(500), attempt).min(self.lease);
                    let until = Instant::now() + wait;
                    // Keep checking on the interval meanwhile (Redis may answer plain calls).
                    loop {
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep_until(until) => break,
                            _ = tick.tick() => self.sync_all().await,
                        }
                    }
                    continue;
                }
            };
            let mut messages = pubsub.on_message();
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => self.sync_all().await,
                    message = messages.next() => {
                        let Some(message) = message else { break };
                        let Ok(text) = message.get_payload::<String>() else { continue };
                        self.on_message(&text, &auth).await;
                    }
                }
            }
        }
    }

    async fn on_message(&self, text: &str, auth: &Authenticator) {
        let mut words = text.splitn(3, ' ');
        match (words.next(), words.next(), words.next()) {
            (Some("snapshot"), Some(_version), Some(env)) if self.role() == Role::Follower => {
                self.pull(env).await;
            }
            (Some("verdicts"), None, None) => {
                self.verdicts_announced
                    .send_modify(|n| *n = n.wrapping_add(1));
            }
            (Some("revoked"), Some(digest), None) => {
                let n = auth.revoke_digest(digest);
                if n > 0 {
                    tracing::info!(
                        tokens = n,
                        "a token revoked for the fleet is refused here too"
                    );
                }
            }
            _ => {}
        }
    }

    /// Sets the snapshot-age gauge of the environments this follower serves from Redis.
    pub fn observe(&self) {
        if self.role() != Role::Follower {
            return;
        }
        for (env, c) in self
            .confirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            if c.at_ms > 0 {
                let age = c.age().as_secs_f64();
                self.metrics.snapshot_age.with_label_values(&[env]).set(age);
                self.metrics
                    .last_sync
                    .with_label_values(&[env])
                    .set(c.at_ms as f64 / 1000.0);
            }
        }
    }
}
