//! The fleet's Redis: every key this fleet uses, every call (each with a timeout, counted, its
//! failures logged once per change of state), and the scripts that make writes atomic.
//!
//! Keys, all under `flagpost:{<namespace>}:` (one hash tag, so every key of a fleet is in one
//! Redis Cluster slot and the scripts may touch several):
//!
//! | key | type | holds |
//! |---|---|---|
//! | `lease` | string, with expiry | the instance id of the poller |
//! | `env:<environment>` | hash | `version` (assigned by Redis), `hash` (xxh3 of `document`), `document` (Client API JSON), `written_at`, `confirmed_at` (Unix ms by Redis's clock), `scopes` (JSON: the poller's serving projects), `writer` |
//! | `startup` | hash | SHA-256 of a startup token → its validated scope (JSON) |
//! | `token:<sha256>` | string, with expiry | a request token's verdict (JSON: kind and scope, or refused; `expires_at`) |
//! | `claim:<sha256>` | string, with expiry | an instance is asking upstream about that token now |
//!
//! and the pub/sub channel `flagpost:{<namespace>}:events`: `snapshot <version> <environment>`
//! after a write, `verdicts` after verdicts were shared, `revoked <sha256>` when a token was
//! found revoked. No key or message holds a
//! token, only SHA-256 digests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::AsyncCommands as _;

use super::connect::{Conn, Connector};

use super::scripts::{CONFIRM, RELEASE, RENEW, WRITE};
use crate::config::StoreConfig;
use crate::metrics::Metrics;

/// A Redis call that did not work.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis: {0}")]
    Redis(String),
    #[error("bad data in Redis: {0}")]
    BadData(String),
}

impl StoreError {
    fn outcome(&self) -> &'static str {
        match self {
            StoreError::Timeout(_) => "timeout",
            StoreError::Redis(_) => "error",
            StoreError::BadData(_) => "bad_data",
        }
    }
}

/// One environment's record, as read.
#[derive(Debug, Clone)]
pub struct Record {
    pub version: u64,
    pub hash: String,
    pub document: String,
    pub confirmed_at: i64,
    /// The poller's serving projects (JSON list), if recorded.
    pub scopes: Option<String>,
}

/// The head of a record: enough to decide whether to read the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    pub version: u64,
    pub hash: String,
    /// When upstream last confirmed it, by Redis's clock (Unix ms; 0: never).
    pub confirmed_at: i64,
    /// How long ago that was, by Redis's clock when the head was read (no host's clock).
    pub age_ms: i64,
    pub size: usize,
}

/// When the content of a write was last confirmed upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    /// Just now (a poll answered): Redis stamps it with its own clock.
    Now,
    /// At this Redis time (Unix ms), as read from or written to Redis before; 0: unknown.
    At(i64),
}

/// What a snapshot write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Stored (with this version), and announced.
    Stored(u64),
    /// The store already had this content.
    Same,
    /// Refused: this instance does not hold the lease (whatever it believes).
    Fenced,
}

/// The fleet's Redis.
pub struct Shared {
    connector: Connector,
    prefix: String,
    timeout: Duration,
    metrics: Arc<Metrics>,
    /// The last failure logged (`None`: working), so each change of state is logged once.
    failing: Mutex<Option<String>>,
    write: redis::Script,
    renew: redis::Script,
    release: redis::Script,
    confirm: redis::Script,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Shared {
    /// Sets up the client; connects on first use (and again after a failure), so an instance
    /// starts while Redis is away.
    pub fn new(config: &StoreConfig, metrics: Arc<Metrics>) -> Result<Shared, StoreError> {
        let connector = Connector::new(config).map_err(StoreError::Redis)?;
        Ok(Shared {
            connector,
            prefix: format!("flagpost:{{{}}}:", config.namespace),
            timeout: config.timeout,
            metrics,
            failing: Mutex::new(None),
            write: redis::Script::new(WRITE),
            renew: redis::Script::new(RENEW),
            release: redis::Script::new(RELEASE),
            confirm: redis::Script::new(CONFIRM),
        })
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    pub fn channel(&self) -> String {
        self.key("events")
    }

    /// Runs one call with the timeout; counts it; logs a failure once per change of state.
    async fn call<T>(
        &self,
        op: &'static str,
        f: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        use tracing::Instrument as _;
        let span = crate::otel::store_span(op);
        let result = match tokio::time::timeout(self.timeout, f)
            .instrument(span.clone())
            .await
        {
            Err(_) => Err(StoreError::Timeout(self.timeout)),
            Ok(Err(e)) => Err(StoreError::Redis(e.to_string())),
            Ok(Ok(v)) => Ok(v),
        };
        if let Err(e) = &result {
            span.record("otel.status_code", "error");
            span.record("error.type", e.outcome());
        }
        if result.is_err() {
            // Behind Sentinels the primary may have moved: ask them again next time.
            self.connector.failed().await;
        }
        self.record(op, result.as_ref().err());
        result
    }

    fn record(&self, op: &'static str, error: Option<&StoreError>) {
        let outcome = error.map_or("ok", StoreError::outcome);
        self.metrics
            .store_operations
            .with_label_values(&[op, outcome])
            .inc();
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        match (error, failing.as_ref()) {
            (Some(e), None) => {
                tracing::warn!(operation = op, error = %e, "the shared store (Redis) fails; serving what this instance has");
                *failing = Some(e.to_string());
            }
            (None, Some(_)) => {
                tracing::info!("the shared store (Redis) works again");
                *failing = None;
            }
            _ => {}
        }
    }

    /// A connection for a call (made now, within the timeout, if there is none).
    async fn conn(&self) -> Result<Conn, StoreError> {
        self.call("connect", self.connector.conn()).await
    }

    /// Takes the lease if nobody holds it.
    pub async fn acquire_lease(&self, me: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let key = self.key("lease");
        let opts = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(millis(ttl)));
        let set: Option<String> = self.call("lease", c.set_options(&key, me, opts)).await?;
        Ok(set.is_some())
    }

    /// Renews the lease; false when this instance no longer holds it.
    pub async fn renew_lease(&self, me: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let mut invocation = self.renew.key(self.key("lease"));
        invocation.arg(me).arg(millis(ttl));
        let renewed: i64 = self.call("lease", invocation.invoke_async(&mut c)).await?;
        Ok(renewed == 1)
    }

    pub async fn release_lease(&self, me: &str) -> Result<bool, StoreError> {
        let mut c = self.conn().await?;
        let mut invocation = self.release.key(self.key("lease"));
        invocation.arg(me);
        let released: i64 = self.call("lease", invocation.invoke_async(&mut c)).await?;
        Ok(released == 1)
    }

    /// Writes (and announces) an environment's snapshot if `me` holds the lease; see
    /// `scripts.rs`. Returns what happened and Redis's time of the call (Unix ms).
    pub async fn write_snapshot(
        &self,
        environment: &str,
        (hash, document): (&str, &str),
        (scopes, confirmed): (&str, Confirmed),
        me: &str,
    ) -> Result<(Written, i64), StoreError> {
        let mut c = self.conn().await?;
        let mut invocation = self.write.key(self.key(&format!("env:{environment}")));
        let confirmed = match confirmed {
            Confirmed::Now => "now".to_string(),
            Confirmed::At(ms) => ms.max(0).to_string(),
        };
        invocation
            .key(self.key("lease"))
            .key(self.channel())
            .arg(hash)
            .arg(document)
            .arg(scopes)
            .arg(me)
            .arg(environment)
            .arg(confirmed);
        let (result, now): (i64, i64) = self.call("write", invocation.invoke_async(&mut c)).await?;
        let written = match result {
            -1 => Written::Same,
            -2 => Written::Fenced,
            v => Written::Stored(u64::try_from(v).unwrap_or(0)),
        };
        Ok((written, now))
    }

    /// Moves `confirmed_at` to Redis's now if the record still holds `hash` and `me` holds
    /// the lease; returns whether it did, and that time.
    pub async fn confirm(
        &self,
        environment: &str,
        hash: &str,
        me: &str,
    ) -> Result<(bool, i64), StoreError> {
        let mut c = self.conn().await?;
        let mut invocation = self.confirm.key(self.key(&format!("env:{environment}")));
        invocation.key(self.key("lease")).arg(hash).arg(me);
        let (done, now): (i64, i64) = self.call("write", invocation.invoke_async(&mut c)).await?;
        Ok((done == 1, now))
    }

    /// The version, content hash, confirmation time and document size of an environment's
    /// record, if there is one.
    pub async fn head(&self, environment: &str) -> Result<Option<Head>, StoreError> {
        let mut c = self.conn().await?;
        let key = self.key(&format!("env:{environment}"));
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(&key)
            .arg("version")
            .arg("hash")
            .arg("confirmed_at")
            .cmd("HSTRLEN")
            .arg(&key)
            .arg("document")
            .cmd("TIME");
        let ((version, hash, confirmed), size, (secs, micros)): (Fields3, usize, (i64, i64)) =
            self.call("read", pipe.query_async(&mut c)).await?;
        let redis_now = secs.saturating_mul(1000).saturating_add(micros / 1000);
        let (Some(version), Some(hash)) = (version, hash) else {
            return Ok(None);
        };
        let version = version
            .parse()
            .map_err(|_| self.bad(format!("version {version:?} in {key}")))?;
        let confirmed_at = confirmed.and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok(Some(Head {
            version,
            hash,
            confirmed_at,
            age_ms: if confirmed_at > 0 {
                redis_now.saturating_sub(confirmed_at).max(0)
            } else {
                i64::MAX
            },
            size,
        }))
    }

    /// An environment's whole record.
    pub async fn read(&self, environment: &str) -> Result<Option<Record>, StoreError> {
        let mut c = self.conn().await?;
        let key = self.key(&format!("env:{environment}"));
        let (version, hash, document, confirmed, scopes): Fields5 = self
            .call(
                "read",
                redis::cmd("HMGET")
                    .arg(&key)
                    .arg("version")
                    .arg("hash")
                    .arg("document")
                    .arg("confirmed_at")
                    .arg("scopes")
                    .query_async(&mut c),
            )
            .await?;
        let (Some(version), Some(hash), Some(document)) = (version, hash, document) else {
            return Ok(None);
        };
        Ok(Some(Record {
            version: version
                .parse()
                .map_err(|_| self.bad(format!("version {version:?} in {key}")))?,
            hash,
            document,
            confirmed_at: confirmed.and_then(|c| c.parse().ok()).unwrap_or(0),
            scopes,
        }))
    }

    fn bad(&self, what: String) -> StoreError {
        let e = StoreError::BadData(what);
        self.record("read", Some(&e));
        e
    }

    /// Records the validated scopes of startup tokens (token digest → scope JSON).
    pub async fn save_startup(&self, scopes: &[(String, String)]) -> Result<(), StoreError> {
        if scopes.is_empty() {
            return Ok(());
        }
        let mut c = self.conn().await?;
        let items: Vec<(&str, &str)> = scopes
            .iter()
            .map(|(d, s)| (d.as_str(), s.as_str()))
            .collect();
        self.call(
            "write",
            c.hset_multiple::<_, _, _, ()>(self.key("startup"), &items),
        )
        .await
    }

    /// The scopes recorded for these startup token digests.
    pub async fn startup(&self, digests: &[String]) -> Result<HashMap<String, String>, StoreError> {
        if digests.is_empty() {
            return Ok(HashMap::new());
        }
        let mut c = self.conn().await?;
        let values: Vec<Option<String>> = self
            .call(
                "read",
                redis::cmd("HMGET")
                    .arg(self.key("startup"))
                    .arg(digests)
                    .query_async(&mut c),
            )
            .await?;
        Ok(digests
            .iter()
            .zip(values)
            .filter_map(|(d, v)| Some((d.clone(), v?)))
            .collect())
    }

    /// Token verdicts by digest (those present).
    pub async fn verdicts(
        &self,
        digests: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        if digests.is_empty() {
            return Ok(HashMap::new());
        }
        let mut c = self.conn().await?;
        let keys: Vec<String> = digests
            .iter()
            .map(|d| self.key(&format!("token:{d}")))
            .collect();
        let values: Vec<Option<String>> = self
            .call("verdict", redis::cmd("MGET").arg(&keys).query_async(&mut c))
            .await?;
        Ok(digests
            .iter()
            .zip(values)
            .filter_map(|(d, v)| Some((d.clone(), v?)))
            .collect())
    }

    /// Stores verdicts (digest, JSON, time to live).
    pub async fn put_verdicts(
        &self,
        verdicts: &[(String, String, Duration)],
    ) -> Result<(), StoreError> {
        if verdicts.is_empty() {
            return Ok(());
        }
        let mut c = self.conn().await?;
        let mut pipe = redis::pipe();
        for (digest, json, ttl) in verdicts {
            pipe.cmd("SET")
                .arg(self.key(&format!("token:{digest}")))
                .arg(json)
                .arg("PX")
                .arg(millis(*ttl))
                .ignore();
        }
        self.call("verdict", pipe.query_async::<()>(&mut c)).await
    }

    /// Claims the right to ask upstream about each digest (for `ttl`); true where this
    /// instance got it.
    pub async fn claim(
        &self,
        digests: &[String],
        ttl: Duration,
        me: &str,
    ) -> Result<Vec<bool>, StoreError> {
        if digests.is_empty() {
            return Ok(Vec::new());
        }
        let mut c = self.conn().await?;
        let mut pipe = redis::pipe();
        for digest in digests {
            pipe.cmd("SET")
                .arg(self.key(&format!("claim:{digest}")))
                .arg(me)
                .arg("NX")
                .arg("PX")
                .arg(millis(ttl));
        }
        let results: Vec<Option<String>> = self.call("verdict", pipe.query_async(&mut c)).await?;
        Ok(results.into_iter().map(|r| r.is_some()).collect())
    }

    /// Announces on the fleet's channel.
    pub async fn announce(&self, message: &str) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        self.call("publish", c.publish::<_, _, ()>(self.channel(), message))
            .await
    }

    /// A subscription to the fleet's channel.
    pub async fn subscribe(&self) -> Result<redis::aio::PubSub, StoreError> {
        let channel = self.channel();
        self.call("subscribe", async move {
            let client = self.connector.pubsub_client().await?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(channel).await?;
            Ok(pubsub)
        })
        .await
    }
}

/// Three hash fields, each maybe absent.
type Fields3 = (Option<String>, Option<String>, Option<String>);
/// Five hash fields, each maybe absent.
type Fields5 = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
