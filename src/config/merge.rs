//! The three layers merged, section by section, into a validated [`Config`].

use std::time::Duration;

use super::cli::{Cli, Command, LogFormatArg};
use super::file::RawFile;
use super::layer::Layers;
use super::mode::{edge, offline};
use super::server::{header_list, header_name, server};
use super::unit::MIN_PERIOD;
use super::{
    invalid, AllowedOrigins, BackstageConfig, Config, ConfigError, CorsConfig, FrontendConfig,
    LogFormat, Mode, StreamingSettings, UsageSettings,
};

pub(super) fn merge(cli: &Cli, layers: &Layers<'_>, raw: RawFile) -> Result<Config, ConfigError> {
    let l = layers;
    let server = server(cli, l, &raw)?;
    let (cors, frontend) = cors_and_frontend(cli, l, &raw)?;
    let log_format = log_format(cli, l, &raw)?;
    let log_request_lines_per_minute = l.pick(
        "log_request_lines_per_minute",
        cli.log_request_lines_per_minute,
        raw.log.request_lines_per_minute,
    );
    let log_summary_interval = l.duration(
        "log_summary_interval",
        "log.summary_interval",
        cli.log_summary_interval,
        raw.log.summary_interval.as_ref(),
        Duration::from_secs(1),
    )?;
    let app_name = l.pick("app_name", cli.app_name.clone(), raw.app_name.clone());
    if app_name.trim().is_empty() {
        return Err(invalid("app_name", "must not be empty"));
    }
    let instance_id = cli
        .instance_id
        .clone()
        .or(raw.instance_id.clone())
        .unwrap_or_else(default_instance_id);

    let usage = usage(cli, l, &raw)?;
    let streaming = streaming(cli, l, &raw)?;
    let backstage = backstage(cli, l, &raw)?;
    let remote_write = super::telemetry::remote_write(&cli.remote_write, l, &raw.remote_write)?;
    let otel = super::otel::otel(&cli.otel, l, &raw.otel)?;
    let mode = mode(cli, l, raw.offline, raw.edge, raw.store)?;

    Ok(Config {
        server,
        cors,
        frontend,
        log_format,
        log_request_lines_per_minute,
        log_summary_interval,
        app_name,
        instance_id,
        usage,
        streaming,
        backstage,
        remote_write,
        otel,
        mode,
        notes: Vec::new(),
    })
}

/// The mode section: offline or edge (with its store).
fn mode(
    cli: &Cli,
    l: &Layers<'_>,
    raw_offline: Option<super::file::RawOffline>,
    raw_edge: Option<super::file::RawEdge>,
    raw_store: Option<super::file::RawStore>,
) -> Result<Mode, ConfigError> {
    let mode = match &cli.command {
        Some(Command::Offline(args)) => {
            if raw_store.as_ref().is_some_and(|s| s.redis_url.is_some()) {
                return Err(invalid(
                    "store.redis_url",
                    "a shared store is for edge mode only (offline instances have nothing to share)",
                ));
            }
            Mode::Offline(offline(args, &l.sub(), raw_offline)?)
        }
        Some(Command::Edge(args)) => {
            let mut edge = Box::new(edge(args, &l.sub(), raw_edge, raw_store)?);
            if let Some(given) = cli
                .token_header
                .clone()
                .or(cli.upstream_auth_header.clone())
            {
                edge.upstream_auth_header = header_name(
                    "edge.upstream_auth_header (--upstream-auth-header / UPSTREAM_AUTH_HEADER, \
                     --token-header / TOKEN_HEADER)",
                    Some(given),
                )?;
            }
            Mode::Edge(edge)
        }
        Some(
            Command::CheckConfig | Command::Health(_) | Command::Ready(_) | Command::Explain(_),
        )
        | None => {
            return Err(invalid("mode", "no mode given (offline or edge)"));
        }
    };
    Ok(mode)
}

/// `[cors]` and `[frontend]`.
fn cors_and_frontend(
    cli: &Cli,
    l: &Layers<'_>,
    raw: &RawFile,
) -> Result<(CorsConfig, FrontendConfig), ConfigError> {
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
    let rc = &raw.cors;
    let allowed_headers = header_list(
        "cors.allowed_headers (--cors-allowed-headers / CORS_ALLOWED_HEADERS)",
        l.list(
            "cors_allowed_headers",
            &cli.cors_allowed_headers,
            rc.allowed_headers.as_ref(),
        ),
        |h| http::HeaderName::from_bytes(h.as_bytes()).is_ok(),
    )?;
    let exposed_headers = header_list(
        "cors.exposed_headers (--cors-exposed-headers / CORS_EXPOSED_HEADERS)",
        l.list(
            "cors_exposed_headers",
            &cli.cors_exposed_headers,
            rc.exposed_headers.as_ref(),
        ),
        |h| http::HeaderName::from_bytes(h.as_bytes()).is_ok(),
    )?;
    let methods = header_list(
        "cors.methods (--cors-methods / CORS_METHODS)",
        l.list("cors_methods", &cli.cors_methods, rc.methods.as_ref()),
        |m| http::Method::from_bytes(m.as_bytes()).is_ok(),
    )?;
    Ok((
        CorsConfig {
            allowed_origins,
            max_age,
            allowed_headers,
            exposed_headers,
            methods,
        },
        FrontendConfig {
            all_endpoint,
            etag_cache_size: l.pick(
                "frontend_etag_cache_size",
                cli.frontend_etag_cache_size,
                raw.frontend.etag_cache_size,
            ),
            etag_cache_ttl: l.duration(
                "frontend_etag_cache_ttl",
                "frontend.etag_cache_ttl",
                cli.frontend_etag_cache_ttl,
                raw.frontend.etag_cache_ttl.as_ref(),
                Duration::from_secs(1),
            )?,
        },
    ))
}

/// `[log] format`.
fn log_format(cli: &Cli, l: &Layers<'_>, raw: &RawFile) -> Result<LogFormat, ConfigError> {
    let cli_format = match cli.log_format {
        LogFormatArg::Plain | LogFormatArg::Pretty => "plain",
        LogFormatArg::Json => "json",
    };
    Ok(
        match l
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
        },
    )
}

/// `[usage]`.
fn usage(cli: &Cli, l: &Layers<'_>, raw: &RawFile) -> Result<UsageSettings, ConfigError> {
    let period =
        |id: &str, key: &str, cli: Duration, file| l.duration(id, key, cli, file, MIN_PERIOD);
    let ru = &raw.usage;
    Ok(UsageSettings {
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
    })
}

/// `[backstage]`; Edge's `--disable-*-endpoint` flags turn endpoints off.
fn backstage(cli: &Cli, l: &Layers<'_>, raw: &RawFile) -> Result<BackstageConfig, ConfigError> {
    let rb = &raw.backstage;
    let token = l.pick(
        "backstage_token",
        cli.backstage_token.clone(),
        rb.token.clone().map(Some),
    );
    let token = match token.map(|t| t.trim().to_string()) {
        None => None,
        Some(t) if t.len() < 16 || !t.bytes().all(|b| b.is_ascii_graphic()) => {
            return Err(invalid(
                "backstage.token (--backstage-token / BACKSTAGE_TOKEN)",
                "must be at least 16 printable characters (no spaces)",
            ))
        }
        Some(t) => Some(crate::token::Secret::new(t)),
    };
    let on = |id: &str, flag: bool, file: Option<bool>| !l.pick(id, flag, file.map(|on| !on));
    Ok(BackstageConfig {
        token,
        metrics: on(
            "disable_metrics_endpoint",
            cli.disable_metrics_endpoint,
            rb.metrics,
        ),
        tokens: on(
            "disable_tokens_endpoint",
            cli.disable_tokens_endpoint,
            rb.tokens,
        ),
        features: on(
            "disable_features_endpoint",
            cli.disable_features_endpoint,
            rb.features,
        ),
        metrics_batch: on(
            "disable_metrics_batch_endpoint",
            cli.disable_metrics_batch_endpoint,
            rb.metrics_batch,
        ),
        instance_data: on(
            "disable_instance_data_endpoint",
            cli.disable_instance_data_endpoint,
            rb.instance_data,
        ),
    })
}

/// `[streaming]`.
fn streaming(cli: &Cli, l: &Layers<'_>, raw: &RawFile) -> Result<StreamingSettings, ConfigError> {
    let rs = &raw.streaming;
    let heartbeat_interval = l.duration(
        "streaming_heartbeat_interval",
        "streaming.heartbeat_interval",
        cli.streaming_heartbeat_interval,
        rs.heartbeat_interval.as_ref(),
        MIN_PERIOD,
    )?;
    if heartbeat_interval > Duration::from_secs(50) {
        return Err(invalid(
            "streaming.heartbeat_interval (--streaming-heartbeat-interval / STREAMING_HEARTBEAT_INTERVAL)",
            "must be at most 50s: SDKs drop a stream after 60 s without a byte",
        ));
    }
    let history = l.count(
        "streaming_history",
        "streaming.history",
        cli.streaming_history,
        rs.history,
    )?;
    if history > 100_000 {
        return Err(invalid(
            "streaming.history (--streaming-history / STREAMING_HISTORY)",
            "must be at most 100000",
        ));
    }
    Ok(StreamingSettings {
        max_streams: l.pick(
            "streaming_max_streams",
            cli.streaming_max_streams,
            rs.max_streams,
        ),
        heartbeat_interval,
        history,
        advertise: l.pick("streaming_advertise", cli.streaming_advertise, rs.advertise),
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
