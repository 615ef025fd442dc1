//! The mode sections: offline (a features file and configured tokens) and edge (an upstream
//! and startup tokens), each merged from its three layers and validated.

use std::time::Duration;

use super::check::{
    check_offline_tokens, client_key, configured_token, edge_token, normalize_upstream_url,
};
use super::cli;
use super::file::{self, RawToken};
use super::layer::Layers;
use super::merge::MIN_PERIOD;
use super::{invalid, ConfigError, EdgeConfig, OfflineConfig, RedisUrl, StoreConfig};
use crate::token::{Token, TokenKind};

pub(super) fn offline(
    args: &cli::OfflineArgs,
    l: &Layers<'_>,
    raw: Option<file::RawOffline>,
) -> Result<OfflineConfig, ConfigError> {
    let raw = raw.unwrap_or_default();
    let features_file = l
        .path("bootstrap_file", &args.bootstrap_file, &raw.features_file)
        .ok_or_else(|| {
            invalid(
                "offline.features_file (--bootstrap-file / BOOTSTRAP_FILE)",
                "offline mode needs a features file",
            )
        })?;
    let reload = l.duration(
        "reload_interval",
        "offline.reload_interval",
        args.reload_interval,
        raw.reload_interval.as_ref(),
        Duration::ZERO,
    )?;
    // The command line gives plain tokens; the file may give `[]` tokens with their projects.
    let tokens_of = |id: &str, cli: &[String], file: Option<Vec<RawToken>>| {
        if l.explicit(id) {
            l.list(id, cli, None)
                .into_iter()
                .map(RawToken::Plain)
                .collect()
        } else {
            file.unwrap_or_default()
        }
    };
    let client: Vec<RawToken> = tokens_of("client_tokens", &args.client_tokens, raw.client_tokens);
    let frontend: Vec<RawToken> = tokens_of(
        "frontend_tokens",
        &args.frontend_tokens,
        raw.frontend_tokens,
    );
    let keys = l.client_keys(&args.client_keys, raw.client_keys)?;

    let mut tokens = Vec::new();
    for (i, entry) in client.iter().enumerate() {
        let key = format!("offline.client_tokens[{i}] (--client-tokens / CLIENT_TOKENS)");
        tokens.push(configured_token(&key, entry, TokenKind::Client)?);
    }
    for (i, entry) in frontend.iter().enumerate() {
        let key = format!("offline.frontend_tokens[{i}] (--frontend-tokens / FRONTEND_TOKENS)");
        tokens.push(configured_token(&key, entry, TokenKind::Frontend)?);
    }
    for (i, entry) in keys.iter().enumerate() {
        tokens.push(client_key(&format!("offline.client_keys[{i}]"), entry)?);
    }
    check_offline_tokens(&tokens)?;
    Ok(OfflineConfig {
        features_file,
        reload_interval: (!reload.is_zero()).then_some(reload),
        tokens,
    })
}

pub(super) fn edge(
    args: &cli::EdgeArgs,
    l: &Layers<'_>,
    raw: Option<file::RawEdge>,
    raw_store: Option<file::RawStore>,
) -> Result<EdgeConfig, ConfigError> {
    let raw = raw.unwrap_or_default();
    let (upstream_url, mut notes) = upstream_url(args, l, &raw)?;
    let tokens = startup_tokens(args, l, &raw)?;
    let (store, store_notes) = store(
        args,
        l,
        raw_store.unwrap_or_default(),
        &upstream_url,
        &tokens,
    )?;
    notes.extend(store_notes);
    let period =
        |id: &str, key: &str, cli: Duration, file| l.duration(id, key, cli, file, MIN_PERIOD);
    let custom_client_headers = custom_headers(args, l, &raw)?;
    let client_identity = client_identity(args, l, &raw)?;
    let mut client_keys = edge_client_keys(args, l, raw.client_keys)?;
    client_keys.extend(pretrusted(&l.list(
        "pretrusted_tokens",
        &args.pretrusted_tokens,
        raw.pretrusted_tokens.as_ref(),
    ))?);
    Ok(EdgeConfig {
        upstream_url,
        tokens,
        refresh_interval: period(
            "features_refresh_interval_seconds",
            "edge.refresh_interval",
            args.features_refresh_interval_seconds,
            raw.refresh_interval.as_ref(),
        )?,
        token_revalidation_interval: period(
            "token_revalidation_interval_seconds",
            "edge.token_revalidation_interval",
            args.token_revalidation_interval_seconds,
            raw.token_revalidation_interval.as_ref(),
        )?,
        invalid_token_ttl: l.duration(
            "invalid_token_ttl",
            "edge.invalid_token_ttl",
            args.invalid_token_ttl,
            raw.invalid_token_ttl.as_ref(),
            Duration::ZERO,
        )?,
        token_cache_size: l.count(
            "token_cache_size",
            "edge.token_cache_size",
            args.token_cache_size,
            raw.token_cache_size,
        )?,
        custom_client_headers,
        upstream_certificate_file: l.path(
            "upstream_certificate_file",
            &args.upstream_certificate_file,
            &raw.upstream_certificate_file,
        ),
        skip_ssl_verification: l.pick(
            "skip_ssl_verification",
            args.skip_ssl_verification,
            raw.skip_ssl_verification,
        ),
        upstream_request_timeout: period(
            "upstream_request_timeout",
            "edge.upstream_request_timeout",
            args.upstream_request_timeout,
            raw.upstream_request_timeout.as_ref(),
        )?,
        upstream_connect_timeout: period(
            "upstream_socket_timeout",
            "edge.upstream_connect_timeout",
            args.upstream_socket_timeout,
            raw.upstream_connect_timeout.as_ref(),
        )?,
        upstream_max_body_size: l.size(
            "upstream_max_body_size",
            "edge.upstream_max_body_size",
            args.upstream_max_body_size,
            raw.upstream_max_body_size.as_ref(),
        )?,
        validate_caller_budget: l.count(
            "validate_caller_budget",
            "edge.validate_caller_budget",
            args.validate_caller_budget,
            raw.validate_caller_budget,
        )?,
        validate_total_budget: l.count(
            "validate_total_budget",
            "edge.validate_total_budget",
            args.validate_total_budget,
            raw.validate_total_budget,
        )?,
        client_identity,
        backup_folder: l.path("backup_folder", &args.backup_folder, &raw.backup_folder),
        streaming: l.pick("streaming", args.streaming, raw.streaming),
        store,
        client_keys,
        upstream_auth_header: super::merge::header_name(
            "edge.upstream_auth_header (--upstream-auth-header / UPSTREAM_AUTH_HEADER, \
             --token-header / TOKEN_HEADER)",
            raw.upstream_auth_header.clone(),
        )?,
        notes,
    })
}

/// `[store]`: the fleet's Redis, when a URL is given.
fn store(
    args: &cli::EdgeArgs,
    l: &Layers<'_>,
    raw: file::RawStore,
    upstream_url: &str,
    tokens: &[Token],
) -> Result<(Option<StoreConfig>, Vec<String>), ConfigError> {
    let url_key = "store.redis_url (--redis-url / REDIS_URL)";
    let given = l.pick("redis_url", args.redis_url.clone(), raw.redis_url.map(Some));
    let (url, notes) = redis_address(args, given)?;
    let Some(url) = url else {
        return Ok((None, notes));
    };
    let url = url.trim().to_string();
    let shown = RedisUrl::new(url.clone()).redacted();
    let host = url
        .split_once("://")
        .map(|(_, rest)| rest.rsplit('@').next().unwrap_or(""));
    if !(url.starts_with("redis://") || url.starts_with("rediss://"))
        || host.is_none_or(|h| h.is_empty() || h.starts_with('/'))
    {
        return Err(invalid(
            url_key,
            format!("{shown:?} is not a Redis URL like \"redis://host:6379\" or \"rediss://user:password@host:6380/0\""),
        ));
    }
    let mode = l.pick("redis_mode", args.redis_mode.clone(), raw.mode);
    match mode.as_str() {
        "single" => {}
        "cluster" => {
            return Err(invalid(
                "store.mode (--redis-mode / REDIS_MODE)",
                "Redis Cluster is not supported yet; use \"single\" (a single server, or a primary behind a proxy)",
            ))
        }
        other => {
            return Err(invalid(
                "store.mode (--redis-mode / REDIS_MODE)",
                format!("{other:?} is not a Redis mode: use \"single\""),
            ))
        }
    }
    let namespace = match l.pick(
        "store_namespace",
        args.store_namespace.clone(),
        raw.namespace.map(Some),
    ) {
        Some(ns) => {
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
            ns
        }
        None => default_namespace(upstream_url, tokens),
    };
    let duration = |id: &str, key: &str, cli: Duration, file: Option<&file::RawDuration>, min| {
        l.duration(id, key, cli, file, min)
    };
    let lease = duration(
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
        _ => duration(
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
    Ok((
        Some(StoreConfig {
            redis_url: RedisUrl::new(url),
            namespace,
            max_age: duration(
                "store_max_age",
                "store.max_age",
                args.store_max_age,
                raw.max_age.as_ref(),
                Duration::from_secs(1),
            )?,
            lease,
            timeout,
        }),
        notes,
    ))
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
    let port = match args.redis_port.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(p) if kubernetes_service_link("REDIS_PORT", p) => None,
        Some(p) => Some(p.parse::<u16>().map_err(|_| {
            invalid(
                "REDIS_PORT (--redis-port)",
                format!("{p:?} is not a port number"),
            )
        })?),
    };
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
        (None, Some(host)) if !host.is_empty() => {
            let scheme = match args.redis_scheme.as_deref().map(str::trim) {
                None | Some("redis") | Some("tcp") => "redis",
                Some("rediss") | Some("tls") => "rediss",
                Some(other) => {
                    return Err(invalid(
                        "REDIS_SCHEME (--redis-scheme)",
                        format!("{other:?}: flagpost connects to Redis over TCP, as redis (tcp) or rediss (tls)"),
                    ))
                }
            };
            url::Url::parse(&format!("{scheme}://{host}")).map_err(|_| {
                invalid(
                    "REDIS_HOST (--redis-host)",
                    format!("{host:?} is not a host name"),
                )
            })?
        }
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

/// A namespace two fleets share only when they have the same upstream and startup tokens.
fn default_namespace(upstream_url: &str, tokens: &[Token]) -> String {
    use sha2::{Digest, Sha256};
    let mut digests: Vec<String> = tokens
        .iter()
        .map(|t| crate::persist::digest(t.expose()))
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

/// The startup tokens: each a client token, none twice, at least one.
fn startup_tokens(
    args: &cli::EdgeArgs,
    l: &Layers<'_>,
    raw: &file::RawEdge,
) -> Result<Vec<Token>, ConfigError> {
    let mut tokens: Vec<Token> = Vec::new();
    for (i, text) in l
        .list("tokens", &args.tokens, raw.tokens.as_ref())
        .iter()
        .enumerate()
    {
        let key = format!("edge.tokens[{i}] (--tokens / TOKENS)");
        let token = edge_token(&key, text)?;
        if tokens.iter().any(|t| t.ct_eq(token.expose())) {
            return Err(invalid(key, format!("{token} is given twice")));
        }
        tokens.push(token);
    }
    if tokens.is_empty() {
        return Err(invalid(
            "edge.tokens (--tokens / TOKENS)",
            "edge mode needs at least one client token: flagpost serves only within the scope \
             of its startup client tokens",
        ));
    }
    Ok(tokens)
}

/// `Name: value` headers sent with every upstream request.
fn custom_headers(
    args: &cli::EdgeArgs,
    l: &Layers<'_>,
    raw: &file::RawEdge,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut custom_client_headers = Vec::new();
    for (i, text) in l
        .list(
            "custom_client_headers",
            &args.custom_client_headers,
            raw.custom_client_headers.as_ref(),
        )
        .iter()
        .enumerate()
    {
        let key = format!(
            "edge.custom_client_headers[{i}] (--custom-client-headers / CUSTOM_CLIENT_HEADERS)"
        );
        let Some((name, value)) = text.split_once(':') else {
            return Err(invalid(key, "write each header as `Name: value`"));
        };
        let (name, value) = (name.trim(), value.trim());
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(invalid(key, format!("{name:?} is not a header name")));
        }
        if http::HeaderValue::from_str(value).is_err() {
            return Err(invalid(
                key,
                "the value has characters a header cannot carry",
            ));
        }
        custom_client_headers.push((name.to_string(), value.to_string()));
    }
    Ok(custom_client_headers)
}

/// The client certificate and key for mutual TLS with the upstream: both or neither.
fn client_identity(
    args: &cli::EdgeArgs,
    l: &Layers<'_>,
    raw: &file::RawEdge,
) -> Result<Option<(std::path::PathBuf, std::path::PathBuf)>, ConfigError> {
    Ok(
        match (
            l.path(
                "pkcs8_client_certificate_file",
                &args.pkcs8_client_certificate_file,
                &raw.client_certificate_file,
            ),
            l.path(
                "pkcs8_client_key_file",
                &args.pkcs8_client_key_file,
                &raw.client_key_file,
            ),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "edge.client_certificate_file / edge.client_key_file",
                    "mutual TLS needs both the client certificate and its key",
                ))
            }
        },
    )
}

/// The upstream URL, normalized, and a note when a trailing `/api` was removed.
fn upstream_url(
    args: &cli::EdgeArgs,
    l: &Layers<'_>,
    raw: &file::RawEdge,
) -> Result<(String, Vec<String>), ConfigError> {
    let url = l
        .pick(
            "upstream_url",
            args.upstream_url.clone(),
            raw.upstream_url.clone().map(Some),
        )
        .ok_or_else(|| {
            invalid(
                "edge.upstream_url (--upstream-url / UPSTREAM_URL)",
                "edge mode needs the Unleash server's URL",
            )
        })?;
    let upstream_url = normalize_upstream_url(&url)?;
    let mut notes = Vec::new();
    if url.trim().trim_end_matches('/').ends_with("/api") {
        notes.push(format!(
            "upstream_url {:?} ends in /api; flagpost adds the API paths itself, so it uses {upstream_url:?}",
            url.trim()
        ));
    }
    Ok((upstream_url, notes))
}

/// Unleash Edge's pretrusted tokens: frontend tokens served without asking upstream. An
/// Unleash token keeps the scope it states (a `[]` one states none: refused); `secret@env` is
/// a client key for every project of that environment. The scope rule applies to them at
/// every request, as to any token.
fn pretrusted(list: &[String]) -> Result<Vec<crate::config::ConfiguredToken>, ConfigError> {
    list.iter()
        .enumerate()
        .map(|(i, text)| {
            let key =
                format!("edge.pretrusted_tokens[{i}] (--pretrusted-tokens / PRETRUSTED_TOKENS)");
            match text.rsplit_once('@') {
                Some((secret, environment)) => client_key(
                    &key,
                    &file::RawClientKey {
                        key: secret.to_string(),
                        environment: environment.to_string(),
                        projects: vec!["*".to_string()],
                    },
                ),
                None => configured_token(
                    &key,
                    &file::RawToken::Plain(text.clone()),
                    crate::token::TokenKind::Frontend,
                ),
            }
        })
        .collect()
}

/// Edge mode's locally configured client keys.
fn edge_client_keys(
    args: &cli::EdgeArgs,
    l: &Layers<'_>,
    raw: Option<Vec<file::RawClientKey>>,
) -> Result<Vec<crate::config::ConfiguredToken>, ConfigError> {
    l.client_keys(&args.client_keys, raw)?
        .iter()
        .enumerate()
        .map(|(i, entry)| client_key(&format!("edge.client_keys[{i}]"), entry))
        .collect()
}
