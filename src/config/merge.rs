//! The three layers merged, section by section, into a validated [`Config`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::check::{
    check_offline_tokens, client_key, configured_token, edge_token, normalize_upstream_url,
};
use super::cli::{self, Cli, Command, LogFormatArg};
use super::file::{self, RawFile, RawToken};
use super::layer::Layers;
use super::{
    invalid, AllowedOrigins, Config, ConfigError, CorsConfig, EdgeConfig, FrontendConfig,
    LogFormat, Mode, OfflineConfig, ServerConfig, TlsConfig, UsageSettings,
};
use crate::token::{Token, TokenKind};

/// The shortest timeout or interval accepted: below it, flagpost would spin.
const MIN_PERIOD: Duration = Duration::from_millis(10);

pub(super) fn merge(cli: &Cli, layers: &Layers<'_>, raw: RawFile) -> Result<Config, ConfigError> {
    let l = layers;
    let interface_text = l.pick(
        "interface",
        cli.interface.clone(),
        raw.server.interface.clone(),
    );
    let interface: IpAddr = interface_text.trim().parse().map_err(|_| {
        invalid(
            "server.interface (--interface / INTERFACE)",
            format!("{interface_text:?} is not an IP address (use e.g. 0.0.0.0, 127.0.0.1 or ::)"),
        )
    })?;
    let port = l.pick("port", cli.port, raw.server.port);
    let rs = &raw.server;
    let period =
        |id: &str, key: &str, cli: Duration, file| l.duration(id, key, cli, file, MIN_PERIOD);
    let header_read_timeout = period(
        "header_read_timeout",
        "server.header_read_timeout",
        cli.header_read_timeout,
        rs.header_read_timeout.as_ref(),
    )?;
    let idle_timeout = period(
        "idle_timeout",
        "server.idle_timeout",
        cli.idle_timeout,
        rs.idle_timeout.as_ref(),
    )?;
    let body_read_timeout = period(
        "body_read_timeout",
        "server.body_read_timeout",
        cli.body_read_timeout,
        rs.body_read_timeout.as_ref(),
    )?;
    let request_timeout = period(
        "request_timeout",
        "server.request_timeout",
        cli.request_timeout,
        rs.request_timeout.as_ref(),
    )?;
    let shutdown_grace = l.duration(
        "shutdown_grace",
        "server.shutdown_grace",
        cli.shutdown_grace,
        rs.shutdown_grace.as_ref(),
        Duration::ZERO,
    )?;
    let shutdown_delay = l.duration(
        "shutdown_delay",
        "server.shutdown_delay",
        cli.shutdown_delay,
        rs.shutdown_delay.as_ref(),
        Duration::ZERO,
    )?;
    let max_body_size = l.size(
        "max_body_size",
        "server.max_body_size",
        cli.max_body_size,
        rs.max_body_size.as_ref(),
    )?;
    let max_metrics_body_size = l.size(
        "max_metrics_body_size",
        "server.max_metrics_body_size",
        cli.max_metrics_body_size,
        rs.max_metrics_body_size.as_ref(),
    )?;
    let max_connections = l.count(
        "max_connections",
        "server.max_connections",
        cli.max_connections,
        rs.max_connections,
    )?;
    let max_in_flight = l.count(
        "max_in_flight",
        "server.max_in_flight",
        cli.max_in_flight,
        rs.max_in_flight,
    )?;
    let trusted_proxies = l
        .list(
            "proxy_trusted_servers",
            &cli.proxy_trusted_servers,
            rs.trusted_proxies.as_ref(),
        )
        .iter()
        .map(|t| {
            t.parse::<ipnet::IpNet>()
                .or_else(|_| t.parse::<IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    invalid(
                        "server.trusted_proxies (--proxy-trusted-servers / PROXY_TRUSTED_SERVERS)",
                        format!("{t:?} is not an IP address or CIDR (e.g. 10.0.0.0/8)"),
                    )
                })
        })
        .collect::<Result<Vec<_>, _>>()?;

    let tls = if l.pick("tls_enable", cli.tls_enable, raw.tls.enabled) {
        let needed = |key: &str, path: Option<std::path::PathBuf>| {
            path.ok_or_else(|| {
                invalid(
                    key,
                    "TLS is enabled: give the certificate and the key (PEM files)",
                )
            })
        };
        Some(TlsConfig {
            listen: SocketAddr::new(
                interface,
                l.pick("tls_server_port", cli.tls_server_port, raw.tls.port),
            ),
            cert_file: needed(
                "tls.cert_file (--tls-server-cert / TLS_SERVER_CERT)",
                l.path("tls_server_cert", &cli.tls_server_cert, &raw.tls.cert_file),
            )?,
            key_file: needed(
                "tls.key_file (--tls-server-key / TLS_SERVER_KEY)",
                l.path("tls_server_key", &cli.tls_server_key, &raw.tls.key_file),
            )?,
        })
    } else {
        None
    };
    let plain_http = !l.pick(
        "tls_disable_http",
        cli.tls_disable_http,
        raw.tls.plain_http.map(|p| !p),
    );
    if tls.is_none() && !plain_http {
        return Err(invalid(
            "tls.plain_http",
            "plain HTTP can only be turned off when TLS is on",
        ));
    }
    if let Some(t) = &tls {
        if plain_http && t.listen.port() == port && port != 0 {
            return Err(invalid("tls.port", "HTTPS and HTTP cannot share a port"));
        }
    }

    let allowed_origins = cors_origins(l.pick(
        "cors_origin",
        cli.cors_origin.clone(),
        raw.cors.allowed_origins.clone(),
    ))?;
    let max_age = l.duration(
        "cors_max_age",
        "cors.max_age",
        cli.cors_max_age,
        raw.cors.max_age.as_ref(),
        Duration::ZERO,
    )?;
    let all_endpoint = !l.pick(
        "disable_all_endpoint",
        cli.disable_all_endpoint,
        raw.frontend.all_endpoint.map(|on| !on),
    );
    let cli_format = match cli.log_format {
        LogFormatArg::Plain => "plain",
        LogFormatArg::Json => "json",
    };
    let log_format = match l
        .pick("log_format", cli_format.to_string(), raw.log.format.clone())
        .as_str()
    {
        "plain" => LogFormat::Plain,
        "json" => LogFormat::Json,
        other => {
            return Err(invalid(
                "log.format",
                format!("{other:?} is not a log format: use \"plain\" or \"json\""),
            ))
        }
    };
    let app_name = l.pick("app_name", cli.app_name.clone(), raw.app_name.clone());
    if app_name.trim().is_empty() {
        return Err(invalid("app_name", "must not be empty"));
    }
    let instance_id = cli
        .instance_id
        .clone()
        .or(raw.instance_id.clone())
        .unwrap_or_else(default_instance_id);

    let ru = &raw.usage;
    let usage = UsageSettings {
        interval: period(
            "metrics_interval_seconds",
            "usage.interval",
            cli.metrics_interval_seconds,
            ru.interval.as_ref(),
        )?,
        max_entries: l.count(
            "usage_max_entries",
            "usage.max_entries",
            cli.usage_max_entries,
            ru.max_entries,
        )?,
        max_bytes: l.size(
            "usage_max_bytes",
            "usage.max_bytes",
            cli.usage_max_bytes,
            ru.max_bytes.as_ref(),
        )?,
        per_flag_metrics: l.pick(
            "per_flag_metrics",
            cli.per_flag_metrics,
            ru.per_flag_metrics,
        ),
    };
    let mode = match &cli.command {
        Some(Command::Offline(args)) => Mode::Offline(offline(args, &l.sub(), raw.offline)?),
        Some(Command::Edge(args)) => Mode::Edge(Box::new(edge(args, &l.sub(), raw.edge)?)),
        Some(Command::CheckConfig | Command::Health(_) | Command::Ready(_)) | None => {
            return Err(invalid("mode", "no mode given (offline or edge)"));
        }
    };

    Ok(Config {
        server: ServerConfig {
            listen: plain_http.then(|| SocketAddr::new(interface, port)),
            header_read_timeout,
            idle_timeout,
            body_read_timeout,
            request_timeout,
            max_body_size,
            max_metrics_body_size,
            max_connections,
            max_in_flight,
            trusted_proxies,
            shutdown_delay,
            shutdown_grace,
            tls,
        },
        cors: CorsConfig {
            allowed_origins,
            max_age,
        },
        frontend: FrontendConfig { all_endpoint },
        log_format,
        app_name,
        instance_id,
        usage,
        mode,
    })
}

fn cors_origins(origins: Vec<String>) -> Result<AllowedOrigins, ConfigError> {
    let origins: Vec<String> = origins
        .into_iter()
        .map(|o| o.trim().trim_end_matches('/').to_string())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() || origins.iter().any(|o| o == "*") {
        return Ok(AllowedOrigins::Any);
    }
    for o in &origins {
        let ok = (o.starts_with("http://") || o.starts_with("https://"))
            && o.bytes().all(|b| b.is_ascii_graphic());
        if !ok {
            return Err(invalid(
                "cors.allowed_origins (--cors-origin / CORS_ORIGIN)",
                format!("{o:?} is not an origin like \"https://app.example.com\" (or \"*\")"),
            ));
        }
    }
    Ok(AllowedOrigins::List(origins))
}

fn default_instance_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_string());
    format!("flagpost-{host}-{}", std::process::id())
}

fn offline(
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

fn edge(
    args: &cli::EdgeArgs,
    l: &Layers<'_>,
    raw: Option<file::RawEdge>,
) -> Result<EdgeConfig, ConfigError> {
    let raw = raw.unwrap_or_default();
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
    let period =
        |id: &str, key: &str, cli: Duration, file| l.duration(id, key, cli, file, MIN_PERIOD);
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
    let client_identity = match (
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
    };
    let client_keys = l
        .client_keys(&args.client_keys, raw.client_keys)?
        .iter()
        .enumerate()
        .map(|(i, entry)| client_key(&format!("edge.client_keys[{i}]"), entry))
        .collect::<Result<Vec<_>, _>>()?;
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
        client_keys,
        notes,
    })
}
