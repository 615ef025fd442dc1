//! A fleet of flagposts on one Redis (`--redis-url`): one instance, holding a lease, polls
//! upstream and writes each environment's snapshot to Redis; the others load it when it is
//! announced (and check on every refresh interval in case an announcement was missed). Token
//! verdicts are shared as SHA-256 digests, so a new token is asked about upstream once for the
//! fleet, and a revoked one is revoked for all. A new instance boots from Redis while upstream
//! is down, within its own startup tokens' scopes. Redis is never needed to serve: when it
//! cannot be reached, every instance keeps what it has and, once the lease would have expired,
//! polls upstream itself ("solo") until Redis answers again.
//!
//! ```text
//!   poller ── poll upstream ─► Publisher ─► Store ─► (push) WRITE script: newer wins ─► Redis
//!                                                         PUBLISH "snapshot <v> <env>"  │
//!   follower ◄─ subscribe / check every interval ◄───────────────────────────────────────┘
//!            ─► read ─► Publisher (same path as a poll)
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

mod shared;

pub use shared::{Shared, StoreError, Written};

use crate::auth::{Authenticator, SharedVerdict};
use crate::backoff::backoff;
use crate::config::EdgeConfig;
use crate::metrics::Metrics;
use crate::persist::digest;
use crate::publish::Publisher;
use crate::snapshot::{Document, Store};
use crate::token::{Projects, Scope, Token, TokenKind};

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
    /// Unix ms when each environment's snapshot was last confirmed upstream (followers).
    confirmed: Mutex<HashMap<String, i64>>,
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

/// A scope as stored: `{"environment":"…","projects":["*"]}`.
#[derive(Debug, Serialize, Deserialize)]
struct StoredScope {
    environment: String,
    projects: Vec<String>,
}

impl StoredScope {
    fn of(scope: &Scope) -> StoredScope {
        StoredScope {
            environment: scope.environment.clone(),
            projects: projects_list(&scope.projects),
        }
    }

    fn scope(&self) -> Scope {
        Scope::new(
            self.environment.clone(),
            if self.projects.is_empty() {
                Projects::none()
            } else {
                Projects::from_names(self.projects.iter().map(String::as_str))
            },
        )
    }
}

/// Whether `scope` is no wider than what the token itself states (its environment, and its
/// project unless it is a `[]` token).
fn within_token(token: &Token, scope: &Scope) -> bool {
    match token.stated_scope() {
        Some(stated) => stated.covers(scope),
        None => token.environment().is_none_or(|e| e == scope.environment),
    }
}

fn projects_list(projects: &Projects) -> Vec<String> {
    match projects {
        Projects::All => vec!["*".into()],
        Projects::Some(set) => set.iter().cloned().collect(),
    }
}

/// A verdict as stored under `token:<sha256>`.
#[derive(Debug, Serialize, Deserialize)]
struct StoredVerdict {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<TokenKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<StoredScope>,
    /// `invalid` or `wrong_type` when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refused: Option<String>,
    expires_at: i64,
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
            own: Mutex::new(HashMap::new()),
        });
        fleet.set_role_gauge(Role::Follower);
        tracing::info!(redis = %config.redis_url, namespace = %config.namespace, instance = %fleet.me, "sharing a store with the fleet");
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

    async fn push_all(&self) {
        for env in self.store.environments() {
            self.push(&env, false).await;
        }
    }

    /// After a publish from a poll: the poller writes the environment's snapshot, confirmed now.
    pub async fn published(&self, environment: &str) {
        if self.role() == Role::Poller {
            self.set_confirmed(environment, shared::now_ms());
            self.push(environment, true).await;
        }
    }

    /// A poll found the environment unchanged upstream: the poller says so in Redis.
    pub async fn confirmed(&self, environment: &str) {
        if self.role() == Role::Poller {
            self.set_confirmed(environment, shared::now_ms());
            self.push(environment, true).await;
        }
    }

    fn set_confirmed(&self, environment: &str, at: i64) {
        self.confirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(environment.to_string(), at);
    }

    /// Writes the environment's current snapshot unless Redis already holds it; with `confirm`,
    /// moves its confirmation time to now.
    async fn push(&self, environment: &str, confirm: bool) {
        let Some(snapshot) = self.store.snapshot(environment) else {
            return;
        };
        let revision = snapshot.revision();
        let confirmed_at = self
            .confirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(environment)
            .copied()
            .unwrap_or(0);
        let known = self
            .local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(environment)
            .filter(|l| l.revision == revision)
            .map(|l| l.hash.clone());
        if let Some(hash) = &known {
            // Unchanged here: a cheap check (or confirmation) unless Redis lost it.
            let held = if confirm {
                self.shared.confirm(environment, hash).await
            } else {
                self.shared
                    .head(environment)
                    .await
                    .map(|h| h.is_some_and(|h| &h.hash == hash))
            };
            match held {
                Ok(true) | Err(_) => return,
                Ok(false) => {}
            }
        }
        let document = snapshot.document().clone();
        drop(snapshot);
        let Ok((json, hash)) = tokio::task::spawn_blocking(move || {
            let json = document.to_json();
            let hash = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(json.as_bytes()));
            (json, hash)
        })
        .await
        else {
            return;
        };
        let scopes = self
            .store
            .serving(environment)
            .map(|p| serde_json::json!(projects_list(&p)).to_string())
            .unwrap_or_else(|| "[]".into());
        let written = self
            .shared
            .write_snapshot(
                environment,
                (revision, &hash, &json),
                (&scopes, confirmed_at),
                &self.me,
            )
            .await;
        if let Ok(written) = written {
            match written {
                Written::Stored(version) => {
                    tracing::debug!(environment, version, "snapshot written to the shared store");
                }
                Written::Older => {
                    tracing::warn!(environment, revision, "the shared store holds a newer snapshot than this instance's; not overwritten");
                }
                Written::Same => {}
            }
            self.local
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(environment.to_string(), Local { revision, hash });
        }
    }

    /// Loads the environment's snapshot from Redis if it differs from this instance's; true if
    /// one was published.
    pub async fn pull(&self, environment: &str) -> bool {
        let Ok(Some(head)) = self.shared.head(environment).await else {
            return false;
        };
        self.set_confirmed(environment, head.confirmed_at);
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
        let age_ms = shared::now_ms().saturating_sub(head.confirmed_at);
        if age_ms > i64::try_from(self.max_age.as_millis()).unwrap_or(i64::MAX) {
            tracing::warn!(
                environment,
                age_seconds = age_ms / 1000,
                max_age_seconds = self.max_age.as_secs(),
                "the shared store's snapshot is older than store.max_age; not used"
            );
            return false;
        }
        if head.size > self.max_document {
            tracing::error!(
                environment,
                size = head.size,
                limit = self.max_document,
                "the shared store's snapshot is larger than upstream_max_body_size; not used"
            );
            return false;
        }
        let Ok(Some(record)) = self.shared.read(environment).await else {
            return false;
        };
        // What the poller serves narrows what this follower serves (a startup token upstream
        // refused there is not served here either); never beyond this instance's own tokens.
        let poller_serves: Option<Projects> = record
            .scopes
            .as_deref()
            .and_then(|s| serde_json::from_str::<Vec<String>>(s).ok())
            .map(|list| Projects::from_names(list.iter().map(String::as_str)));
        let own = self
            .own
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(environment)
            .cloned();
        if let (Some(poller), Some(own)) = (poller_serves, own) {
            self.store.serve(environment, &own.intersect(&poller));
        }
        let parsed = tokio::task::spawn_blocking(move || {
            let hash = format!(
                "{:016x}",
                xxhash_rust::xxh3::xxh3_64(record.document.as_bytes())
            );
            (hash == record.hash)
                .then(|| Document::parse(record.document.as_bytes()))
                .map(|d| (d, record.version, hash))
        })
        .await;
        let (mut document, version, hash) = match parsed {
            Ok(Some((Ok(d), version, hash))) => (d, version, hash),
            Ok(Some((Err(e), _, _))) => {
                tracing::error!(environment, error = %e, "the shared store's snapshot is not a features document; not used");
                self.metrics
                    .store_operations
                    .with_label_values(&["read", "bad_data"])
                    .inc();
                return false;
            }
            Ok(None) => {
                tracing::error!(
                    environment,
                    "the shared store's snapshot does not match its hash; not used"
                );
                self.metrics
                    .store_operations
                    .with_label_values(&["read", "bad_data"])
                    .inc();
                return false;
            }
            Err(_) => return false,
        };
        // The fleet's version is the event id, so streams agree across instances.
        document.revision = Some(version);
        self.publisher.publish(environment, document).await;
        let revision = self.publisher.revision(environment);
        self.local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(environment.to_string(), Local { revision, hash });
        tracing::debug!(
            environment,
            version,
            "snapshot loaded from the shared store"
        );
        true
    }

    /// Remembers what this instance's own startup tokens cover: a follower serves at most that,
    /// narrowed to what the poller serves.
    pub fn own_scopes(&self, usable: &[(Token, Scope)]) {
        let mut own: HashMap<String, Projects> = HashMap::new();
        for (_, scope) in usable {
            own.entry(scope.environment.clone())
                .or_insert_with(Projects::none)
                .extend(&scope.projects);
        }
        *self.own.lock().unwrap_or_else(|p| p.into_inner()) = own;
    }

    /// Records the validated scopes of the startup tokens, for instances that boot while
    /// upstream is down.
    pub async fn save_startup(&self, usable: &[(Token, Scope)]) {
        self.own_scopes(usable);
        let items: Vec<(String, String)> = usable
            .iter()
            .filter_map(|(t, s)| {
                Some((
                    digest(t.expose()),
                    serde_json::to_string(&StoredScope::of(s)).ok()?,
                ))
            })
            .collect();
        let _ = self.shared.save_startup(&items).await;
    }

    /// The scopes of `tokens` recorded by the fleet, each no wider than what the token itself
    /// states: what this instance may serve while upstream is down.
    pub async fn startup_scopes(&self, tokens: &[Token]) -> Vec<(Token, Scope)> {
        let digests: Vec<String> = tokens.iter().map(|t| digest(t.expose())).collect();
        let Ok(found) = self.shared.startup(&digests).await else {
            return Vec::new();
        };
        tokens
            .iter()
            .zip(&digests)
            .filter_map(|(t, d)| {
                let stored: StoredScope = serde_json::from_str(found.get(d)?).ok()?;
                let scope = stored.scope();
                let fits = within_token(t, &scope);
                if !fits {
                    tracing::error!(token = %t, "the shared store holds a scope for this startup token wider than the token states; ignored");
                }
                fits.then(|| (t.clone(), scope))
            })
            .collect()
    }

    /// Shared verdicts for these raw tokens (those the fleet has).
    pub async fn verdicts(&self, raws: &[String]) -> HashMap<String, SharedVerdict> {
        let digests: Vec<String> = raws.iter().map(|r| digest(r)).collect();
        let Ok(found) = self.shared.verdicts(&digests).await else {
            return HashMap::new();
        };
        let now = shared::now_ms();
        raws.iter()
            .zip(&digests)
            .filter_map(|(raw, d)| {
                let v: StoredVerdict = serde_json::from_str(found.get(d)?).ok()?;
                if v.expires_at <= now {
                    return None;
                }
                let verdict = match (v.kind, v.scope, v.refused.as_deref()) {
                    (Some(kind), Some(scope), None) => SharedVerdict::Valid(kind, scope.scope()),
                    (_, _, Some("wrong_type")) => SharedVerdict::WrongType,
                    (_, _, Some(_)) => SharedVerdict::Invalid,
                    _ => return None,
                };
                Some((raw.clone(), verdict))
            })
            .collect()
    }

    /// Claims the right to ask upstream about each raw token; true where this instance asks.
    pub async fn claim(&self, raws: &[String]) -> Vec<bool> {
        let digests: Vec<String> = raws.iter().map(|r| digest(r)).collect();
        self.shared
            .claim(&digests, self.ttl.2, &self.me)
            .await
            // Redis away: everyone asks for themselves.
            .unwrap_or_else(|_| vec![true; raws.len()])
    }

    /// How long a claim lasts: how long to wait for another instance's verdict.
    pub fn claim_ttl(&self) -> Duration {
        self.ttl.2
    }

    /// Shares verdicts; announces the tokens that were valid and now are not.
    pub async fn share(&self, verdicts: &[(String, SharedVerdict)], revoked: &[String]) {
        let now = shared::now_ms();
        let items: Vec<(String, String, Duration)> = verdicts
            .iter()
            .filter_map(|(raw, v)| {
                let ttl = match v {
                    SharedVerdict::Valid(..) => self.ttl.0,
                    _ => self.ttl.1,
                };
                let stored = StoredVerdict {
                    kind: match v {
                        SharedVerdict::Valid(kind, _) => Some(*kind),
                        _ => None,
                    },
                    scope: match v {
                        SharedVerdict::Valid(_, scope) => Some(StoredScope::of(scope)),
                        _ => None,
                    },
                    refused: match v {
                        SharedVerdict::Valid(..) => None,
                        SharedVerdict::WrongType => Some("wrong_type".into()),
                        SharedVerdict::Invalid => Some("invalid".into()),
                    },
                    expires_at: now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2),
                };
                Some((digest(raw), serde_json::to_string(&stored).ok()?, ttl))
            })
            .collect();
        let _ = self.shared.put_verdicts(&items).await;
        for raw in revoked {
            let _ = self
                .shared
                .announce(&format!("revoked {}", digest(raw)))
                .await;
        }
    }

    /// Sets the snapshot-age gauge of the environments this follower serves from Redis.
    pub fn observe(&self) {
        if self.role() != Role::Follower {
            return;
        }
        let now = shared::now_ms();
        for (env, at) in self
            .confirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            if *at > 0 {
                let age = (now - at).max(0) as f64 / 1000.0;
                self.metrics.snapshot_age.with_label_values(&[env]).set(age);
                self.metrics
                    .last_sync
                    .with_label_values(&[env])
                    .set(*at as f64 / 1000.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_scope_never_widens_what_the_token_states() {
        let scope = |env: &str, projects: &[&str]| {
            Scope::new(env, Projects::from_names(projects.iter().copied()))
        };
        let token = |raw: &str| Token::parse(raw).unwrap();
        let default = token("default:development.abcdef123456");
        assert!(within_token(&default, &scope("development", &["default"])));
        assert!(!within_token(&default, &scope("development", &["*"])));
        assert!(!within_token(
            &default,
            &scope("development", &["default", "checkout"])
        ));
        assert!(!within_token(&default, &scope("production", &["default"])));
        let all = token("*:development.abcdef123456");
        assert!(within_token(&all, &scope("development", &["*"])));
        assert!(!within_token(&all, &scope("production", &["*"])));
        let listed = token("[]:development.abcdef123456");
        assert!(within_token(&listed, &scope("development", &["a", "b"])));
        assert!(!within_token(&listed, &scope("production", &["a"])));
    }

    #[test]
    fn stored_scopes_and_verdicts_round_trip() {
        let s = Scope::new("development", Projects::from_names(["b", "a"]));
        let text = serde_json::to_string(&StoredScope::of(&s)).unwrap();
        assert_eq!(
            text,
            r#"{"environment":"development","projects":["a","b"]}"#
        );
        let back: StoredScope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.scope(), s);
        let all = StoredScope::of(&Scope::new("production", Projects::All));
        assert_eq!(all.scope().projects, Projects::All);
        let v = StoredVerdict {
            kind: Some(TokenKind::Frontend),
            scope: Some(StoredScope::of(&s)),
            refused: None,
            expires_at: 5,
        };
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"kind":"frontend","scope":{"environment":"development","projects":["a","b"]},"expires_at":5}"#
        );
    }
}
