//! Connections to the fleet's Redis in each of its shapes: one server (a connection manager that
//! reconnects by itself), Redis Cluster (the library's cluster connection: slot map, `MOVED`,
//! `ASK` and failovers are its work) and a primary behind Sentinels (found through them, checked
//! with `ROLE`, found again after any connection failure, because a failover closes every
//! connection to the promoted node and Sentinels name the dead address for a while).
//!
//! Subscriptions live on one node: the server, the current primary, or one cluster node (a
//! `PUBLISH` reaches subscribers on every node of a cluster); the follower re-makes them when
//! they end, and keeps its periodic check beside them.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::config::{RedisMode, StoreConfig};

/// A connection of any shape, used the same way by every call.
#[derive(Clone)]
pub(super) enum Conn {
    Manager(ConnectionManager),
    Cluster(ClusterConnection),
    Plain(MultiplexedConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Manager(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Plain(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Manager(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Plain(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Manager(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Plain(c) => c.get_db(),
        }
    }
}

/// How connections are made for the configured shape.
pub(super) enum Connector {
    Single {
        conn: ConnectionManager,
        client: redis::Client,
    },
    Cluster {
        client: redis::cluster::ClusterClient,
        /// One client per seed node, for subscriptions (tried in turn).
        seeds: Vec<redis::Client>,
        current: tokio::sync::Mutex<Option<ClusterConnection>>,
    },
    Sentinel {
        sentinel: tokio::sync::Mutex<redis::sentinel::SentinelClient>,
        /// The current primary's client and connection; `None` after a failure, so the next
        /// call asks the Sentinels again.
        current: tokio::sync::Mutex<Option<(redis::Client, MultiplexedConnection)>>,
    },
}

/// The private CA for Redis's TLS, if one is given.
struct Ca(Option<Vec<u8>>);

impl Ca {
    fn certs(&self) -> Option<redis::TlsCertificates> {
        self.0.as_ref().map(|root| redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root.clone()),
        })
    }

    fn open(&self, url: &crate::config::RedisUrl) -> Result<redis::Client, String> {
        let opened = match self.certs() {
            Some(certs) => redis::Client::build_with_tls(url.expose(), certs),
            None => redis::Client::open(url.expose()),
        };
        opened.map_err(|e| format!("{}: {e}", url.redacted()))
    }
}

/// A Sentinel client: the Sentinels' addresses, TLS, user and password from their URLs; the
/// data nodes' from `data`; a private CA for both.
fn sentinel_client(
    config: &StoreConfig,
    master: &str,
    data: &crate::config::DataNodes,
    ca: &Ca,
) -> Result<redis::sentinel::SentinelClient, String> {
    let mut sentinels = Vec::new();
    let (mut user, mut password, mut tls) = (None, None, false);
    for url in &config.redis_urls {
        let info = redis::IntoConnectionInfo::into_connection_info(url.expose())
            .map_err(|e| format!("{}: {e}", url.redacted()))?;
        tls |= matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
        let settings = info.redis_settings();
        user = user.or(settings.username().map(str::to_string));
        password = password.or(settings.password().map(str::to_string));
        sentinels.push(info.addr().clone());
    }
    let server = redis::sentinel::SentinelServerType::Master;
    let mut b = redis::sentinel::SentinelClientBuilder::new(sentinels, master, server)
        .map_err(|e| e.to_string())?;
    if let Some(user) = user {
        b = b.set_client_to_sentinel_username(user);
    }
    if let Some(password) = password {
        b = b.set_client_to_sentinel_password(password);
    }
    if tls {
        b = b.set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
    }
    if let Some(user) = &data.username {
        b = b.set_client_to_redis_username(user);
    }
    if let Some(password) = &data.password {
        b = b.set_client_to_redis_password(password.expose());
    }
    if data.tls {
        b = b.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
    }
    if let (Some(to_sentinels), Some(to_redis)) = (ca.certs(), ca.certs()) {
        b = b
            .set_client_to_sentinel_certificates(to_sentinels)
            .set_client_to_redis_certificates(to_redis);
    }
    b.build().map_err(|e| e.to_string())
}

impl Connector {
    /// Sets up the clients; nothing connects until first used, so an instance starts while
    /// Redis is away.
    pub fn new(config: &StoreConfig) -> Result<Connector, String> {
        let ca = match &config.ca_certificate_file {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| format!("the Redis CA file {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let ca = Ca(ca);
        match &config.mode {
            RedisMode::Single => {
                let url = config.redis_urls.first().ok_or("no Redis URL")?;
                let client = ca.open(url)?;
                let manager = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.timeout))
                    .set_response_timeout(Some(config.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_secs(1));
                let conn = ConnectionManager::new_lazy_with_config(client.clone(), manager)
                    .map_err(|e| e.to_string())?;
                Ok(Connector::Single { conn, client })
            }
            RedisMode::Cluster => Connector::cluster(config, &ca),
            RedisMode::Sentinel { master, data } => {
                let sentinel = sentinel_client(config, master, data, &ca)?;
                Ok(Connector::Sentinel {
                    sentinel: tokio::sync::Mutex::new(sentinel),
                    current: tokio::sync::Mutex::new(None),
                })
            }
        }
    }

    /// A Cluster client over the seed nodes, and one client per seed for subscriptions.
    fn cluster(config: &StoreConfig, ca: &Ca) -> Result<Connector, String> {
        let seeds = config
            .redis_urls
            .iter()
            .map(|url| ca.open(url))
            .collect::<Result<Vec<_>, _>>()?;
        let mut builder = redis::cluster::ClusterClientBuilder::new(
            config.redis_urls.iter().map(|u| u.expose().to_string()),
        );
        if let Some(certs) = ca.certs() {
            builder = builder.certs(certs);
        }
        let client = builder
            .connection_timeout(config.timeout)
            .response_timeout(config.timeout)
            // A master's failover makes its slots answer CLUSTERDOWN for about a second and
            // unreachable for about two: retries cover that within the lease.
            .retries(6)
            .min_retry_wait(50)
            .max_retry_wait(1000)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Connector::Cluster {
            client,
            seeds,
            current: tokio::sync::Mutex::new(None),
        })
    }

    /// A connection for one call (made now if there is none).
    pub async fn conn(&self) -> redis::RedisResult<Conn> {
        match self {
            Connector::Single { conn, .. } => Ok(Conn::Manager(conn.clone())),
            Connector::Cluster {
                client, current, ..
            } => {
                let mut current = current.lock().await;
                if let Some(c) = current.as_ref() {
                    return Ok(Conn::Cluster(c.clone()));
                }
                let c = client.get_async_connection().await?;
                *current = Some(c.clone());
                Ok(Conn::Cluster(c))
            }
            Connector::Sentinel { sentinel, current } => {
                let mut current = current.lock().await;
                if let Some((_, c)) = current.as_ref() {
                    return Ok(Conn::Plain(c.clone()));
                }
                // The Sentinels name the primary; it is asked with ROLE whether it is one (for
                // a moment after a failover they still name the old one).
                let client = sentinel.lock().await.async_get_client().await?;
                let mut c = client.get_multiplexed_async_connection().await?;
                let role: redis::Value = redis::cmd("ROLE").query_async(&mut c).await?;
                if !is_primary(&role) {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "the node the Sentinels name is not a primary (yet)",
                    )));
                }
                *current = Some((client, c.clone()));
                Ok(Conn::Plain(c))
            }
        }
    }

    /// A call failed: a Sentinel setup asks the Sentinels again next time (the primary may
    /// have moved); a cluster connection is made again from the seeds, with a fresh slot map
    /// (after a master's failover the old connection can keep asking the dead node); a single
    /// server's connection manager reconnects by itself.
    pub async fn failed(&self) {
        match self {
            Connector::Sentinel { current, .. } => *current.lock().await = None,
            Connector::Cluster { current, .. } => *current.lock().await = None,
            Connector::Single { .. } => {}
        }
    }

    /// A client for a subscription: the server, the current primary, or a reachable seed node.
    pub async fn pubsub_client(&self) -> redis::RedisResult<redis::Client> {
        match self {
            Connector::Single { client, .. } => Ok(client.clone()),
            Connector::Cluster { seeds, .. } => {
                let mut last = None;
                for seed in seeds {
                    match seed.get_multiplexed_async_connection().await {
                        Ok(_) => return Ok(seed.clone()),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.unwrap_or_else(|| {
                    redis::RedisError::from((redis::ErrorKind::Io, "no seed node"))
                }))
            }
            Connector::Sentinel { current, .. } => {
                self.conn().await?;
                match current.lock().await.as_ref() {
                    Some((client, _)) => Ok(client.clone()),
                    None => Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "no primary known",
                    ))),
                }
            }
        }
    }
}

/// Whether a `ROLE` answer says `master`.
fn is_primary(role: &Value) -> bool {
    match role {
        Value::Array(items) => match items.first() {
            Some(Value::BulkString(b)) => b == b"master",
            Some(Value::SimpleString(s)) => s == "master",
            _ => false,
        },
        _ => false,
    }
}
