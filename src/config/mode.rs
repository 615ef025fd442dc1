//! The mode sections: offline (a features file and configured tokens) and edge (an upstream
//! and startup tokens), each merged from its three layers and validated.

use std::time::Duration;

use super::check::{
    check_offline_tokens, client_key, configured_token, edge_token, normalize_upstream_url,
};
use super::cli;
use super::file::{self, RawToken};
use super::layer::Layers;
use super::store::store;
use super::unit::MIN_PERIOD;
use super::{invalid, ClientIdentity, ConfigError, EdgeConfig, OfflineConfig};
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
    let client_identity = client_identity(args, l, &raw, &mut notes)?;
    let (backup_folder, s3_bucket) = backup(args, l, &raw)?;
    let (invalid_token_ttl, token_cache_size) = token_cache(args, l, &raw)?;
    let (validate_caller_budget, validate_total_budget) = validate_budgets(args, l, &raw)?;
    let client_keys = edge_client_keys(args, l, &raw)?;
    let (upstream_request_timeout, upstream_connect_timeout) = upstream_timeouts(args, l, &raw)?;
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
        invalid_token_ttl,
        token_cache_size,
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
        upstream_request_timeout,
        upstream_connect_timeout,
        upstream_max_body_size: l.size(
            "upstream_max_body_size",
            "edge.upstream_max_body_size",
            args.upstream_max_body_size,
            raw.upstream_max_body_size.as_ref(),
        )?,
        validate_caller_budget,
        validate_total_budget,
        client_identity,
        backup_folder,
        s3_bucket,
        streaming: l.pick("streaming", args.streaming, raw.streaming),
        store,
        client_keys,
        upstream_auth_header: super::server::header_name(
            "edge.upstream_auth_header (--upstream-auth-header / UPSTREAM_AUTH_HEADER, \
             --token-header / TOKEN_HEADER)",
            raw.upstream_auth_header.clone(),
        )?,
        notes,
    })
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

/// The S3 bucket for the backup, if any.
fn s3_bucket(
    args: &cli::EdgeArgs,
    l: &Layers<'_>,
    raw: &file::RawEdge,
) -> Result<Option<super::Bucket>, ConfigError> {
    let name = l.pick(
        "s3_bucket_name",
        args.s3_bucket_name.clone(),
        raw.s3_bucket_name.clone().map(Some),
    );
    let force_path_style = l.pick(
        "s3_force_path_style",
        args.s3_force_path_style,
        raw.s3_force_path_style,
    );
    match name.map(|n| n.trim().to_string()) {
        None => Ok(None),
        Some(n) if n.is_empty() || n.contains('/') => Err(invalid(
            "edge.s3_bucket_name (--s3-bucket-name / S3_BUCKET_NAME)",
            "not a bucket name (a name, without s3:// or a path)",
        )),
        Some(name) => Ok(Some(super::Bucket {
            name,
            force_path_style,
        })),
    }
}

/// The client identity for mutual TLS with the upstream, in Unleash Edge's order when more
/// than one is given (PKCS#12, then the PEM pair, then the single PEM file; the others get a
/// note). The PEM pair needs both files; the PKCS#12 archive needs its passphrase.
fn client_identity(
    args: &cli::EdgeArgs,
    l: &Layers<'_>,
    raw: &file::RawEdge,
    notes: &mut Vec<String>,
) -> Result<Option<ClientIdentity>, ConfigError> {
    let pkcs12 = l.path(
        "pkcs12_identity_file",
        &args.pkcs12_identity_file,
        &raw.pkcs12_identity_file,
    );
    let passphrase = l.pick(
        "pkcs12_passphrase",
        args.pkcs12_passphrase.clone(),
        raw.pkcs12_passphrase.clone().map(Some),
    );
    let certificate = l.path(
        "pkcs8_client_certificate_file",
        &args.pkcs8_client_certificate_file,
        &raw.client_certificate_file,
    );
    let key = l.path(
        "pkcs8_client_key_file",
        &args.pkcs8_client_key_file,
        &raw.client_key_file,
    );
    let pem = l.path("pem_cert_file", &args.pem_cert_file, &raw.pem_cert_file);
    let pkcs8 = match (certificate, key) {
        (Some(certificate), Some(key)) => Some(ClientIdentity::Pkcs8 { certificate, key }),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "edge.client_certificate_file / edge.client_key_file",
                "mutual TLS needs both the client certificate and its key",
            ))
        }
    };
    let pkcs12 = match (pkcs12, passphrase) {
        (Some(file), Some(passphrase)) => Some(ClientIdentity::Pkcs12 {
            file,
            passphrase: crate::token::Secret::new(passphrase),
        }),
        (None, None) => None,
        (Some(_), None) => {
            return Err(invalid(
                "edge.pkcs12_passphrase (--pkcs12-passphrase / PKCS12_PASSPHRASE)",
                "the PKCS#12 identity file needs its passphrase (an empty one is \"\")",
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "edge.pkcs12_identity_file (--pkcs12-identity-file / PKCS12_IDENTITY_FILE)",
                "a PKCS#12 passphrase is given without the file",
            ))
        }
    };
    let mut given = [pkcs12, pkcs8, pem.map(ClientIdentity::Pem)]
        .into_iter()
        .flatten();
    let chosen = given.next();
    for unused in given {
        notes.push(format!(
            "more than one upstream client identity is given: {} is not used (the PKCS#12 \
             file comes first, then the PEM certificate and key, then the PEM file)",
            unused.describe()
        ));
    }
    Ok(chosen)
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

/// Edge mode's locally configured client keys, then its pretrusted tokens.
fn edge_client_keys(
    args: &cli::EdgeArgs,
    l: &Layers<'_>,
    raw: &file::RawEdge,
) -> Result<Vec<crate::config::ConfiguredToken>, ConfigError> {
    let mut keys = l
        .client_keys(&args.client_keys, raw.client_keys.clone())?
        .iter()
        .enumerate()
        .map(|(i, entry)| client_key(&format!("edge.client_keys[{i}]"), entry))
        .collect::<Result<Vec<_>, _>>()?;
    keys.extend(pretrusted(&l.list(
        "pretrusted_tokens",
        &args.pretrusted_tokens,
        raw.pretrusted_tokens.as_ref(),
    ))?);
    Ok(keys)
}

/// The deadline of one upstream request, and of connecting to the upstream.
fn upstream_timeouts(
    args: &cli::EdgeArgs,
    l: &Layers<'_>,
    raw: &file::RawEdge,
) -> Result<(Duration, Duration), ConfigError> {
    let request = l.duration(
        "upstream_request_timeout",
        "edge.upstream_request_timeout",
        args.upstream_request_timeout,
        raw.upstream_request_timeout.as_ref(),
        MIN_PERIOD,
    )?;
    let connect = l.duration(
        "upstream_socket_timeout",
        "edge.upstream_connect_timeout",
        args.upstream_socket_timeout,
        raw.upstream_connect_timeout.as_ref(),
        MIN_PERIOD,
    )?;
    Ok((request, connect))
}

/// Where the backup goes: a folder or an S3 bucket, not both.
fn backup(
    args: &cli::EdgeArgs,
    l: &Layers<'_>,
    raw: &file::RawEdge,
) -> Result<(Option<std::path::PathBuf>, Option<super::Bucket>), ConfigError> {
    let folder = l.path("backup_folder", &args.backup_folder, &raw.backup_folder);
    let bucket = s3_bucket(args, l, raw)?;
    if folder.is_some() && bucket.is_some() {
        return Err(invalid(
            "edge.s3_bucket_name (--s3-bucket-name / S3_BUCKET_NAME)",
            "the backup goes to a folder or a bucket, not both: edge.backup_folder is given too",
        ));
    }
    Ok((folder, bucket))
}

/// How long a refused token is remembered, and how many tokens are remembered.
fn token_cache(
    args: &cli::EdgeArgs,
    l: &Layers<'_>,
    raw: &file::RawEdge,
) -> Result<(Duration, u64), ConfigError> {
    let ttl = l.duration(
        "invalid_token_ttl",
        "edge.invalid_token_ttl",
        args.invalid_token_ttl,
        raw.invalid_token_ttl.as_ref(),
        Duration::ZERO,
    )?;
    let size = l.count(
        "token_cache_size",
        "edge.token_cache_size",
        args.token_cache_size,
        raw.token_cache_size,
    )?;
    Ok((ttl, size))
}

/// Unknown tokens per minute one `/edge/validate` caller, and all callers together, may have
/// checked upstream.
fn validate_budgets(
    args: &cli::EdgeArgs,
    l: &Layers<'_>,
    raw: &file::RawEdge,
) -> Result<(u64, u64), ConfigError> {
    let caller = l.count(
        "validate_caller_budget",
        "edge.validate_caller_budget",
        args.validate_caller_budget,
        raw.validate_caller_budget,
    )?;
    let total = l.count(
        "validate_total_budget",
        "edge.validate_total_budget",
        args.validate_total_budget,
        raw.validate_total_budget,
    )?;
    Ok((caller, total))
}
