//! Edge mode's `[store]`: the Redis a fleet shares, given as a URL or, as Unleash Edge takes
//! it, in parts; its namespace, lease and timeouts.

use std::time::Duration;

use super::cli;
use super::file;
use super::layer::Layers;
use super::unit::MIN_PERIOD;
use super::{invalid, ConfigError};
use crate::token::Token;

/// `[store]`: the Redis a fleet of flagposts shares (edge mode).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// One server (single), the seed nodes (cluster) or the Sentinels (sentinel).
    pub redis_urls: Vec<RedisUrl>,
    pub mode: RedisMode,
    /// The prefix of this fleet's keys: `flagpost:{<namespace>}:` (one hash tag: one slot).
    pub namespace: String,
    pub max_age: Duration,
    pub lease: Duration,
    pub timeout: Duration,
    /// CA certificates (PEM) trusted for `rediss://` instead of the public roots.
    pub ca_certificate_file: Option<std::path::PathBuf>,
}

/// How the fleet's Redis is deployed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisMode {
    Single,
    /// Redis Cluster: the client library follows the slot map, `MOVED`/`ASK` and failovers.
    Cluster,
    /// A primary found through Sentinels, under `master`; `data` is how to reach the data
    /// nodes (the Sentinels' own credentials and TLS are in their URLs).
    Sentinel {
        master: String,
        data: DataNodes,
    },
}

impl RedisMode {
    pub fn name(&self) -> &'static str {
        match self {
            RedisMode::Single => "single",
            RedisMode::Cluster => "cluster",
            RedisMode::Sentinel { .. } => "sentinel",
        }
    }
}

/// The data nodes behind Sentinels: user, password (never shown) and TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataNodes {
    pub username: Option<String>,
    pub password: Option<crate::token::Secret>,
    pub tls: bool,
}

/// A Redis URL, which may hold a user and password: shown redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn new(url: String) -> RedisUrl {
        RedisUrl(url)
    }

    /// The URL with its password, to connect with. Never log this.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Scheme, host, port and database; any user and password replaced by `***`.
    pub fn redacted(&self) -> String {
        match self.0.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{host}"),
                None => self.0.clone(),
            },
            None => "<not a URL>".into(),
        }
    }
}

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// `[store]`: the fleet's Redis, when a URL is given.
pub(super) fn store(
    args: &cli::EdgeArgs,
    l: &Layers<'_>,
    raw: file::RawStore,
    upstream_url: &str,
    tokens: &[Token],
) -> Result<(Option<StoreConfig>, Vec<String>), ConfigError> {
    let (urls, mode, notes) = addresses(args, l, &raw)?;
    if urls.is_empty() {
        return Ok((None, notes));
    }
    for url in &urls {
        check_url(url, &mode)?;
    }
    let ca_certificate_file = l.path(
        "redis_ca_certificate_file",
        &args.redis_ca_certificate_file,
        &raw.ca_certificate_file,
    );
    let namespace = namespace(args, l, &raw, upstream_url, tokens)?;
    let (lease, timeout) = lease_and_timeout(args, l, &raw)?;
    Ok((
        Some(StoreConfig {
            redis_urls: urls.into_iter().map(RedisUrl::new).collect(),
            mode,
            namespace,
            max_age: l.duration(
                "store_max_age",
                "store.max_age",
                args.store_max_age,
                raw.max_age.as_ref(),
                Duration::from_secs(1),
            )?,
            lease,
            timeout,
            ca_certificate_file,
        }),
        notes,
    ))
}

/// The Redis mode and its addresses (none: no store), with notes on settings not used.
fn addresses(
    args: &cli::EdgeArgs,
    l: &Layers<'_>,
    raw: &file::RawStore,
) -> Result<(Vec<String>, RedisMode, Vec<String>), ConfigError> {
    let given = l.pick(
        "redis_url",
        args.redis_url.clone(),
        raw.redis_url.clone().map(Some),
    );
    let mode = l.pick("redis_mode", args.redis_mode.clone(), raw.mode.clone());
    match mode.trim() {
        "single" => {
            if split_urls(given.clone()).len() > 1 {
                return Err(invalid(
                    "store.redis_url (--redis-url / REDIS_URL)",
                    "a list of addresses is for --redis-mode cluster (its seed nodes) or sentinel \
                     (the Sentinels); single mode takes one",
                ));
            }
            let (url, notes) = redis_address(args, given)?;
            Ok((url.into_iter().collect(), RedisMode::Single, notes))
        }
        "cluster" => Ok((seed_list(args, given)?, RedisMode::Cluster, Vec::new())),
        "sentinel" => Ok((split_urls(given), sentinel(args, l, raw)?, Vec::new())),
        other => Err(invalid(
            "store.mode (--redis-mode / REDIS_MODE)",
            format!("{other:?} is not a Redis mode: use \"single\", \"sentinel\" or \"cluster\""),
        )),
    }
}

/// Sentinel mode: the monitored primary's name and how to reach the data nodes.
fn sentinel(
    args: &cli::EdgeArgs,
    l: &Layers<'_>,
    raw: &file::RawStore,
) -> Result<RedisMode, ConfigError> {
    let master = l.pick(
        "redis_sentinel_master",
        args.redis_sentinel_master.clone(),
        raw.sentinel_master.clone().map(Some),
    );
    let Some(master) = master
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
    else {
        return Err(invalid(
            "store.sentinel_master (--redis-sentinel-master / REDIS_SENTINEL_MASTER)",
            "Sentinel mode needs the name the Sentinels monitor the primary under",
        ));
    };
    let data = DataNodes {
        username: args.redis_username.clone().or(raw.data_username.clone()),
        password: args
            .redis_password
            .clone()
            .or(raw.data_password.clone())
            .map(crate::token::Secret::new),
        tls: args.redis_secure || raw.data_tls.unwrap_or(false),
    };
    Ok(RedisMode::Sentinel { master, data })
}

/// The key prefix: as given, or one made from the upstream and the startup tokens.
fn namespace(
    args: &cli::EdgeArgs,
    l: &Layers<'_>,
    raw: &file::RawStore,
    upstream_url: &str,
    tokens: &[Token],
) -> Result<String, ConfigError> {
    let given = l.pick(
        "store_namespace",
        args.store_namespace.clone(),
        raw.namespace.clone().map(Some),
    );
    let Some(ns) = given else {
        return Ok(default_namespace(upstream_url, tokens));
    };
    let ok = (1..=64).contains(&ns.len())
        && ns
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !ok {
        return Err(invalid(
            "store.namespace (--store-namespace / STORE_NAMESPACE)",
            "1 to 64 of A-Z a-z 0-9 - _ .",
        ));
    }
    Ok(ns)
}

/// The poller's lease and the deadline of one Redis call, at most a third of the lease.
fn lease_and_timeout(
    args: &cli::EdgeArgs,
    l: &Layers<'_>,
    raw: &file::RawStore,
) -> Result<(Duration, Duration), ConfigError> {
    let lease = l.duration(
        "store_lease",
        "store.lease",
        args.store_lease,
        raw.lease.as_ref(),
        Duration::from_secs(1),
    )?;
    let edge_timeout = args
        .redis_read_connection_timeout_milliseconds
        .max(args.redis_write_connection_timeout_milliseconds);
    let timeout = match edge_timeout {
        // Unleash Edge's two Redis timeouts, when flagpost's own is not given.
        Some(ms) if !l.explicit("store_timeout") && raw.timeout.is_none() => {
            Duration::from_millis(ms).max(MIN_PERIOD)
        }
        _ => l.duration(
            "store_timeout",
            "store.timeout",
            args.store_timeout,
            raw.timeout.as_ref(),
            MIN_PERIOD,
        )?,
    };
    if timeout * 3 > lease {
        return Err(invalid(
            "store.timeout (--store-timeout / STORE_TIMEOUT)",
            "must be at most a third of store.lease, so the lease is renewed in time",
        ));
    }
    Ok((lease, timeout))
}

/// Whether an environment variable holds Kubernetes' value rather than the operator's: with a
/// Service named `redis` in the namespace, Kubernetes sets `REDIS_PORT=tcp://10.0.0.5:6379` in
/// every pod (service links).
pub(super) fn kubernetes_service_link(name: &str, value: &str) -> bool {
    name.ends_with("_PORT") && (value.starts_with("tcp://") || value.starts_with("udp://"))
}

/// The Redis address: `--redis-url`, with Unleash Edge's parts (user, password, port, TLS)
/// applied to it as Edge does; or, without one, made from `--redis-host` and the parts. Also
/// the warnings for parts that are set but not used.
fn redis_address(
    args: &cli::EdgeArgs,
    given: Option<String>,
) -> Result<(Option<String>, Vec<String>), ConfigError> {
    let mut notes = Vec::new();
    let key =
        "REDIS_HOST / REDIS_PORT / REDIS_USERNAME / REDIS_PASSWORD / REDIS_SECURE / REDIS_SCHEME";
    let port = redis_port(args)?;
    let parts_given = port.is_some()
        || args.redis_username.is_some()
        || args.redis_password.is_some()
        || args.redis_secure
        || args.redis_scheme.is_some();
    let mut url = match (given, args.redis_host.as_deref().map(str::trim)) {
        (Some(url), host) => {
            if host.is_some_and(|h| !h.is_empty()) {
                notes.push(
                    "REDIS_HOST (--redis-host) is set but so is REDIS_URL (--redis-url): the URL's \
                     host is used"
                        .to_string(),
                );
            }
            if !parts_given {
                return Ok((Some(url), notes));
            }
            url::Url::parse(url.trim()).map_err(|_| {
                invalid(
                    "store.redis_url (--redis-url / REDIS_URL)",
                    "not a Redis URL like \"redis://host:6379\"",
                )
            })?
        }
        (None, Some(host)) if !host.is_empty() => host_url(args, host)?,
        _ => {
            if parts_given {
                notes.push(format!(
                    "{key} are set without REDIS_URL or REDIS_HOST: no Redis is used"
                ));
            }
            return Ok((None, notes));
        }
    };
    let bad = |what: &str| invalid(key, format!("cannot put the {what} in the Redis address"));
    if let Some(user) = &args.redis_username {
        url.set_username(user).map_err(|()| bad("user"))?;
    }
    if let Some(password) = &args.redis_password {
        url.set_password(Some(password))
            .map_err(|()| bad("password"))?;
    }
    if port.is_some() {
        url.set_port(port).map_err(|()| bad("port"))?;
    }
    if args.redis_secure {
        url.set_scheme("rediss").map_err(|()| bad("TLS scheme"))?;
    }
    Ok((Some(url.to_string()), notes))
}

/// Unleash Edge's REDIS_PORT, unless it is Kubernetes' service link.
fn redis_port(args: &cli::EdgeArgs) -> Result<Option<u16>, ConfigError> {
    match args.redis_port.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(p) if kubernetes_service_link("REDIS_PORT", p) => Ok(None),
        Some(p) => p.parse::<u16>().map(Some).map_err(|_| {
            invalid(
                "REDIS_PORT (--redis-port)",
                format!("{p:?} is not a port number"),
            )
        }),
    }
}

/// Unleash Edge's REDIS_HOST with its REDIS_SCHEME, as a URL.
fn host_url(args: &cli::EdgeArgs, host: &str) -> Result<url::Url, ConfigError> {
    let scheme = match args.redis_scheme.as_deref().map(str::trim) {
        None | Some("redis") | Some("tcp") => "redis",
        Some("rediss") | Some("tls") => "rediss",
        Some(other) => {
            return Err(invalid(
                "REDIS_SCHEME (--redis-scheme)",
                format!(
                    "{other:?}: flagpost connects to Redis over TCP, as redis (tcp) or rediss (tls)"
                ),
            ))
        }
    };
    url::Url::parse(&format!("{scheme}://{host}")).map_err(|_| {
        invalid(
            "REDIS_HOST (--redis-host)",
            format!("{host:?} is not a host name"),
        )
    })
}

/// A comma list of URLs, trimmed, empty items dropped.
fn split_urls(given: Option<String>) -> Vec<String> {
    given
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect()
}

/// Cluster seed nodes: the comma list, each with Edge's user, password and TLS parts applied.
fn seed_list(args: &cli::EdgeArgs, given: Option<String>) -> Result<Vec<String>, ConfigError> {
    if args
        .redis_port
        .as_deref()
        .is_some_and(|p| !p.trim().is_empty() && !kubernetes_service_link("REDIS_PORT", p))
    {
        return Err(invalid(
            "REDIS_PORT (--redis-port)",
            "a port is for a single server; give each cluster seed node with its port in --redis-url",
        ));
    }
    split_urls(given)
        .into_iter()
        .map(|u| match redis_address(args, Some(u))? {
            (Some(url), _) => Ok(url),
            (None, _) => Ok(String::new()),
        })
        .collect()
}

/// A Redis URL flagpost can use in `mode`: `redis://` or `rediss://` with a host; a Sentinel's
/// without a database number (Sentinels have none); a cluster node's database 0 at most.
fn check_url(url: &str, mode: &RedisMode) -> Result<(), ConfigError> {
    let url_key = "store.redis_url (--redis-url / REDIS_URL)";
    let shown = RedisUrl::new(url.to_string()).redacted();
    let parsed = url::Url::parse(url).ok().filter(|u| {
        matches!(u.scheme(), "redis" | "rediss") && u.host_str().is_some_and(|h| !h.is_empty())
    });
    let Some(parsed) = parsed else {
        return Err(invalid(
            url_key,
            format!("{shown:?} is not a Redis URL like \"redis://host:6379\" or \"rediss://user:password@host:6380/0\""),
        ));
    };
    let db = parsed.path().trim_matches('/');
    match mode {
        RedisMode::Sentinel { .. } if !db.is_empty() => Err(invalid(
            url_key,
            format!("{shown:?}: a Sentinel has no database; give it without one (\"redis://sentinel:26379\")"),
        )),
        RedisMode::Cluster if !db.is_empty() && db != "0" => Err(invalid(
            url_key,
            format!("{shown:?}: Redis Cluster has only database 0"),
        )),
        _ => Ok(()),
    }
}

/// A namespace two fleets share only when they have the same upstream and startup tokens.
fn default_namespace(upstream_url: &str, tokens: &[Token]) -> String {
    use sha2::{Digest, Sha256};
    let mut digests: Vec<String> = tokens
        .iter()
        .map(|t| crate::token::digest(t.expose()))
        .collect();
    digests.sort();
    let mut h = Sha256::new();
    h.update(upstream_url.as_bytes());
    for d in &digests {
        h.update(b"\n");
        h.update(d.as_bytes());
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}
