//! Configuration in three layers, `config.toml` < environment variables < command-line flags,
//! merged into one validated [`Config`]. Bad configuration is one [`ConfigError`] naming the key
//! and the problem (the binary exits with code 64).

mod cli;
mod file;
pub mod unit;

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches};

use crate::token::{Projects, Scope, Shape, Token, TokenKind};
pub use cli::{Cli, Command, LogFormatArg, ProbeArgs};
use file::{RawClientKey, RawDuration, RawFile, RawSize, RawToken};
use unit::{format_duration, format_size, parse_duration, parse_size};

/// Everything flagpost needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub cors: CorsConfig,
    pub frontend: FrontendConfig,
    pub log_format: LogFormat,
    pub app_name: String,
    pub instance_id: String,
    pub usage: UsageSettings,
    pub mode: Mode,
}

/// SDK usage metrics: how often they are forwarded and how much may wait.
#[derive(Debug, Clone)]
pub struct UsageSettings {
    pub interval: Duration,
    pub max_entries: usize,
    pub max_bytes: usize,
    pub per_flag_metrics: bool,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Plain HTTP; `None` when TLS is on without plain HTTP.
    pub listen: Option<SocketAddr>,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub body_read_timeout: Duration,
    pub request_timeout: Duration,
    /// Frontend API bodies (contexts).
    pub max_body_size: usize,
    /// Usage metrics, registrations, `/edge/validate`.
    pub max_metrics_body_size: usize,
    pub max_connections: usize,
    pub max_in_flight: usize,
    pub trusted_proxies: Vec<ipnet::IpNet>,
    pub shutdown_delay: Duration,
    pub shutdown_grace: Duration,
    pub tls: Option<TlsConfig>,
}

/// HTTPS serving.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub listen: SocketAddr,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct CorsConfig {
    pub allowed_origins: AllowedOrigins,
    pub max_age: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    Any,
    List(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct FrontendConfig {
    /// Whether `/api/frontend/all` (every flag, disabled ones too) is served.
    pub all_endpoint: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Plain,
    Json,
}

#[derive(Debug, Clone)]
pub enum Mode {
    Offline(OfflineConfig),
    Edge(Box<EdgeConfig>),
}

/// Edge mode: features and token verdicts from an upstream Unleash server (or another
/// flagpost, or an Unleash Edge).
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// The server root, without a trailing `/` or `/api`.
    pub upstream_url: String,
    /// The startup (client) tokens. Their validated scopes, together, are what flagpost serves.
    pub tokens: Vec<Token>,
    pub refresh_interval: Duration,
    pub token_revalidation_interval: Duration,
    pub invalid_token_ttl: Duration,
    pub token_cache_size: u64,
    /// Sent on every upstream request. Values may be secrets: never printed.
    pub custom_client_headers: Vec<(String, String)>,
    pub upstream_certificate_file: Option<PathBuf>,
    pub skip_ssl_verification: bool,
    pub upstream_request_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    /// Client certificate and key (PEM) for mutual TLS with the upstream.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// Where features and token scopes are backed up, to start from when upstream is down.
    pub backup_folder: Option<PathBuf>,
    /// Locally configured client keys (frontend kind).
    pub client_keys: Vec<ConfiguredToken>,
    /// Things worth a line in the log at start (e.g. a `/api` removed from the URL).
    pub notes: Vec<String>,
}

impl Mode {
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Offline(_) => "offline",
            Mode::Edge(_) => "edge",
        }
    }
}

#[derive(Debug, Clone)]
pub struct OfflineConfig {
    pub features_file: PathBuf,
    /// `None`: the file is read once.
    pub reload_interval: Option<Duration>,
    pub tokens: Vec<ConfiguredToken>,
}

/// A token (or client key) from configuration, with what it may do.
#[derive(Debug, Clone)]
pub struct ConfiguredToken {
    pub token: Token,
    pub kind: TokenKind,
    pub scope: Scope,
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Invocation {
    Serve(Config),
    CheckConfig(Config),
    /// `flagpost health` / `flagpost ready`: ask a running flagpost.
    Probe {
        path: &'static str,
        args: cli::ProbeArgs,
    },
}

/// Bad configuration: the key (or flag) and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
    /// A command-line problem, or `--help`/`--version` (which clap prints).
    #[error("{0}")]
    Cli(#[from] clap::Error),
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

impl Config {
    /// Reads the command line (`args` includes the program name), the environment (through
    /// clap) and the configuration file it points at.
    pub fn from_args<I, T>(args: I) -> Result<Invocation, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let mut args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let matches = Cli::command().try_get_matches_from(&args)?;
        let cli = Cli::from_arg_matches(&matches)?;
        match &cli.command {
            Some(Command::Health(probe)) => {
                return Ok(Invocation::Probe {
                    path: "/health",
                    args: probe.clone(),
                })
            }
            Some(Command::Ready(probe)) => {
                return Ok(Invocation::Probe {
                    path: "/ready",
                    args: probe.clone(),
                })
            }
            _ => {}
        }
        let (path, explicit_path) = match &cli.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from("config.toml"), false),
        };
        let raw = read_file(&path, explicit_path)?;
        let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();

        let check_only = cli.check_config || matches!(cli.command, Some(Command::CheckConfig));
        if matches!(cli.command, None | Some(Command::CheckConfig)) {
            // No mode on the command line: take it from the file, and parse again with it so
            // that the mode's environment variables (CLIENT_TOKENS, ...) are read too.
            let mode = file_mode(raw.as_ref())?;
            if let Some(pos) = args.iter().position(|a| a == "check-config") {
                args.remove(pos);
            }
            args.push(mode.into());
            let matches = Cli::command().try_get_matches_from(&args)?;
            let cli = Cli::from_arg_matches(&matches)?;
            let config = merge(&cli, &matches, raw.unwrap_or_default(), &base_dir)?;
            return Ok(wrap(config, check_only));
        }
        let config = merge(&cli, &matches, raw.unwrap_or_default(), &base_dir)?;
        Ok(wrap(config, check_only))
    }

    /// The effective configuration as TOML, with every secret redacted.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(&self.redacted())
            .unwrap_or_else(|e| format!("# cannot print: {e}\n"))
    }

    /// The effective configuration as one line of JSON, with every secret redacted (for logs).
    pub fn to_redacted_json(&self) -> String {
        serde_json::to_string(&self.redacted()).unwrap_or_default()
    }

    fn redacted(&self) -> toml::Table {
        use toml::{Table, Value};
        let mut root = Table::new();
        let s = |v: &str| Value::String(v.to_string());
        root.insert("mode".into(), s(self.mode.name()));
        root.insert("app_name".into(), s(&self.app_name));
        root.insert("instance_id".into(), s(&self.instance_id));
        let mut server = Table::new();
        let ip = self
            .server
            .listen
            .or(self.server.tls.as_ref().map(|t| t.listen))
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        server.insert("interface".into(), s(&ip));
        if let Some(listen) = self.server.listen {
            server.insert("port".into(), Value::Integer(i64::from(listen.port())));
        }
        let sv = &self.server;
        for (key, d) in [
            ("header_read_timeout", sv.header_read_timeout),
            ("idle_timeout", sv.idle_timeout),
            ("body_read_timeout", sv.body_read_timeout),
            ("request_timeout", sv.request_timeout),
            ("shutdown_delay", sv.shutdown_delay),
            ("shutdown_grace", sv.shutdown_grace),
        ] {
            server.insert(key.into(), s(&format_duration(d)));
        }
        server.insert("max_body_size".into(), s(&format_size(sv.max_body_size)));
        server.insert(
            "max_metrics_body_size".into(),
            s(&format_size(sv.max_metrics_body_size)),
        );
        let int = |n: usize| Value::Integer(i64::try_from(n).unwrap_or(i64::MAX));
        server.insert("max_connections".into(), int(sv.max_connections));
        server.insert("max_in_flight".into(), int(sv.max_in_flight));
        server.insert(
            "trusted_proxies".into(),
            Value::Array(
                sv.trusted_proxies
                    .iter()
                    .map(|p| s(&p.to_string()))
                    .collect(),
            ),
        );
        root.insert("server".into(), Value::Table(server));
        let mut tls = Table::new();
        tls.insert("enabled".into(), Value::Boolean(sv.tls.is_some()));
        if let Some(t) = &sv.tls {
            tls.insert("cert_file".into(), s(&t.cert_file.display().to_string()));
            tls.insert("key_file".into(), s(&t.key_file.display().to_string()));
            tls.insert("port".into(), Value::Integer(i64::from(t.listen.port())));
            tls.insert("plain_http".into(), Value::Boolean(sv.listen.is_some()));
        }
        root.insert("tls".into(), Value::Table(tls));
        let mut cors = Table::new();
        let origins = match &self.cors.allowed_origins {
            AllowedOrigins::Any => vec![s("*")],
            AllowedOrigins::List(list) => list.iter().map(|o| s(o)).collect(),
        };
        cors.insert("allowed_origins".into(), Value::Array(origins));
        cors.insert("max_age".into(), s(&format_duration(self.cors.max_age)));
        root.insert("cors".into(), Value::Table(cors));
        let mut frontend = Table::new();
        frontend.insert(
            "all_endpoint".into(),
            Value::Boolean(self.frontend.all_endpoint),
        );
        root.insert("frontend".into(), Value::Table(frontend));
        let mut usage = Table::new();
        usage.insert("interval".into(), s(&format_duration(self.usage.interval)));
        usage.insert(
            "max_entries".into(),
            Value::Integer(i64::try_from(self.usage.max_entries).unwrap_or(i64::MAX)),
        );
        usage.insert("max_bytes".into(), s(&format_size(self.usage.max_bytes)));
        usage.insert(
            "per_flag_metrics".into(),
            Value::Boolean(self.usage.per_flag_metrics),
        );
        root.insert("usage".into(), Value::Table(usage));
        let mut log = Table::new();
        let format = match self.log_format {
            LogFormat::Plain => "plain",
            LogFormat::Json => "json",
        };
        log.insert("format".into(), s(format));
        root.insert("log".into(), Value::Table(log));
        match &self.mode {
            Mode::Offline(offline) => {
                let mut t = Table::new();
                t.insert(
                    "features_file".into(),
                    s(&offline.features_file.display().to_string()),
                );
                let reload = offline.reload_interval.unwrap_or(Duration::ZERO);
                t.insert("reload_interval".into(), s(&format_duration(reload)));
                let projects = projects_value;
                let mut client = Vec::new();
                let mut frontend = Vec::new();
                let mut keys = Vec::new();
                for c in &offline.tokens {
                    let mut entry = Table::new();
                    if *c.token.shape() == Shape::Opaque {
                        entry.insert("key".into(), s(&c.token.redacted()));
                        entry.insert("environment".into(), s(&c.scope.environment));
                        entry.insert("projects".into(), projects(&c.scope.projects));
                        keys.push(Value::Table(entry));
                        continue;
                    }
                    entry.insert("token".into(), s(&c.token.redacted()));
                    entry.insert("projects".into(), projects(&c.scope.projects));
                    match c.kind {
                        TokenKind::Client => client.push(Value::Table(entry)),
                        TokenKind::Frontend => frontend.push(Value::Table(entry)),
                    }
                }
                t.insert("client_tokens".into(), Value::Array(client));
                t.insert("frontend_tokens".into(), Value::Array(frontend));
                t.insert("client_keys".into(), Value::Array(keys));
                root.insert("offline".into(), Value::Table(t));
            }
            Mode::Edge(edge) => {
                let mut t = Table::new();
                t.insert("upstream_url".into(), s(&edge.upstream_url));
                t.insert(
                    "tokens".into(),
                    Value::Array(edge.tokens.iter().map(|tk| s(&tk.redacted())).collect()),
                );
                for (key, d) in [
                    ("refresh_interval", edge.refresh_interval),
                    (
                        "token_revalidation_interval",
                        edge.token_revalidation_interval,
                    ),
                    ("invalid_token_ttl", edge.invalid_token_ttl),
                    ("upstream_request_timeout", edge.upstream_request_timeout),
                    ("upstream_connect_timeout", edge.upstream_connect_timeout),
                ] {
                    t.insert(key.into(), s(&format_duration(d)));
                }
                t.insert(
                    "token_cache_size".into(),
                    Value::Integer(i64::try_from(edge.token_cache_size).unwrap_or(i64::MAX)),
                );
                t.insert(
                    "custom_client_headers".into(),
                    Value::Array(
                        edge.custom_client_headers
                            .iter()
                            .map(|(name, _)| s(&format!("{name}: <redacted>")))
                            .collect(),
                    ),
                );
                if let Some(f) = &edge.upstream_certificate_file {
                    t.insert(
                        "upstream_certificate_file".into(),
                        s(&f.display().to_string()),
                    );
                }
                t.insert(
                    "skip_ssl_verification".into(),
                    Value::Boolean(edge.skip_ssl_verification),
                );
                let keys = edge
                    .client_keys
                    .iter()
                    .map(|c| {
                        let mut entry = Table::new();
                        entry.insert("key".into(), s(&c.token.redacted()));
                        entry.insert("environment".into(), s(&c.scope.environment));
                        entry.insert("projects".into(), projects_value(&c.scope.projects));
                        Value::Table(entry)
                    })
                    .collect();
                t.insert("client_keys".into(), Value::Array(keys));
                root.insert("edge".into(), Value::Table(t));
            }
        }
        root
    }
}

fn projects_value(p: &Projects) -> toml::Value {
    toml::Value::Array(match p {
        Projects::All => vec![toml::Value::String("*".into())],
        Projects::Some(set) => set.iter().map(|n| toml::Value::String(n.clone())).collect(),
    })
}

fn wrap(config: Config, check_only: bool) -> Invocation {
    if check_only {
        Invocation::CheckConfig(config)
    } else {
        Invocation::Serve(config)
    }
}

fn read_file(path: &Path, explicit: bool) -> Result<Option<RawFile>, ConfigError> {
    let key = format!("config file {}", path.display());
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(None),
        Err(e) => return Err(invalid(key, format!("cannot read it: {e}"))),
    };
    RawFile::parse(&text)
        .map(Some)
        .map_err(|(name, problem)| match name {
            Some(name) => invalid(name, format!("{problem} (in {})", path.display())),
            None => invalid(key, problem),
        })
}

fn file_mode(raw: Option<&RawFile>) -> Result<&'static str, ConfigError> {
    let Some(raw) = raw else {
        return Err(invalid(
            "mode",
            "no subcommand and no config.toml: run `flagpost offline --bootstrap-file FILE \
             --client-tokens ...`, or write a config.toml (see `flagpost --help`)",
        ));
    };
    match raw.mode.as_deref() {
        Some("offline") => Ok("offline"),
        Some("edge") => Ok("edge"),
        Some(other) => Err(invalid(
            "mode",
            format!("unknown mode {other:?}: use \"offline\" or \"edge\""),
        )),
        None if raw.edge.is_some() && raw.offline.is_none() => Ok("edge"),
        None if raw.offline.is_some() && raw.edge.is_none() => Ok("offline"),
        None => Err(invalid(
            "mode",
            "the config file names no mode: add `mode = \"offline\"` (with an [offline] \
             section) or `mode = \"edge\"` (with an [edge] section)",
        )),
    }
}

/// Whether the value of `id` was given by a flag or an environment variable (not a default).
fn explicit(matches: &ArgMatches, id: &str) -> bool {
    match matches.try_get_raw(id) {
        Ok(Some(_)) => matches!(
            matches.value_source(id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ),
        _ => false,
    }
}

fn layered<T>(matches: &ArgMatches, id: &str, cli_value: T, file_value: Option<T>) -> T {
    if explicit(matches, id) {
        cli_value
    } else {
        file_value.unwrap_or(cli_value)
    }
}

fn file_size(key: &str, v: Option<&RawSize>) -> Result<Option<usize>, ConfigError> {
    match v {
        None => Ok(None),
        Some(RawSize::Text(t)) => parse_size(t).map(Some).map_err(|e| invalid(key, e)),
        Some(RawSize::Number(n)) => usize::try_from(*n)
            .map(Some)
            .map_err(|_| invalid(key, "too large")),
    }
}

fn file_duration(key: &str, v: Option<&RawDuration>) -> Result<Option<Duration>, ConfigError> {
    match v {
        None => Ok(None),
        Some(RawDuration::Text(s)) => parse_duration(s, false)
            .map(Some)
            .map_err(|e| invalid(key, e)),
        Some(RawDuration::Number(n)) => Err(invalid(
            key,
            format!("write durations as a string with a unit, e.g. \"{n}s\""),
        )),
    }
}

fn merge(
    cli: &Cli,
    matches: &ArgMatches,
    raw: RawFile,
    base_dir: &Path,
) -> Result<Config, ConfigError> {
    let interface_text = layered(
        matches,
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
    let port = layered(matches, "port", cli.port, raw.server.port);
    let header_read_timeout = layered(
        matches,
        "header_read_timeout",
        cli.header_read_timeout,
        file_duration(
            "server.header_read_timeout",
            raw.server.header_read_timeout.as_ref(),
        )?,
    );
    if header_read_timeout.is_zero() {
        return Err(invalid(
            "server.header_read_timeout",
            "must be more than 0s",
        ));
    }
    let max_body_size = layered(
        matches,
        "max_body_size",
        cli.max_body_size,
        raw.server
            .max_body_size
            .as_ref()
            .map(|s| match s {
                RawSize::Text(t) => parse_size(t).map_err(|e| invalid("server.max_body_size", e)),
                RawSize::Number(n) => {
                    usize::try_from(*n).map_err(|_| invalid("server.max_body_size", "too large"))
                }
            })
            .transpose()?,
    );
    if max_body_size == 0 {
        return Err(invalid("server.max_body_size", "must be more than 0B"));
    }
    let shutdown_grace = layered(
        matches,
        "shutdown_grace",
        cli.shutdown_grace,
        file_duration("server.shutdown_grace", raw.server.shutdown_grace.as_ref())?,
    );
    let shutdown_delay = layered(
        matches,
        "shutdown_delay",
        cli.shutdown_delay,
        file_duration("server.shutdown_delay", raw.server.shutdown_delay.as_ref())?,
    );
    let timeout = |id: &str, key: &str, cli: Duration, file: Option<&RawDuration>| {
        let d = layered(matches, id, cli, file_duration(key, file)?);
        if d < Duration::from_millis(10) {
            return Err(invalid(key, "must be at least 10ms"));
        }
        Ok::<_, ConfigError>(d)
    };
    let idle_timeout = timeout(
        "idle_timeout",
        "server.idle_timeout",
        cli.idle_timeout,
        raw.server.idle_timeout.as_ref(),
    )?;
    let body_read_timeout = timeout(
        "body_read_timeout",
        "server.body_read_timeout",
        cli.body_read_timeout,
        raw.server.body_read_timeout.as_ref(),
    )?;
    let request_timeout = timeout(
        "request_timeout",
        "server.request_timeout",
        cli.request_timeout,
        raw.server.request_timeout.as_ref(),
    )?;
    let max_metrics_body_size = layered(
        matches,
        "max_metrics_body_size",
        cli.max_metrics_body_size,
        file_size(
            "server.max_metrics_body_size",
            raw.server.max_metrics_body_size.as_ref(),
        )?,
    );
    let max_connections = layered(
        matches,
        "max_connections",
        cli.max_connections,
        raw.server.max_connections,
    );
    let max_in_flight = layered(
        matches,
        "max_in_flight",
        cli.max_in_flight,
        raw.server.max_in_flight,
    );
    for (key, n) in [
        ("server.max_connections", max_connections),
        ("server.max_in_flight", max_in_flight),
        ("server.max_metrics_body_size", max_metrics_body_size),
    ] {
        if n == 0 {
            return Err(invalid(key, "must be more than 0"));
        }
    }
    let proxy_texts = if explicit(matches, "proxy_trusted_servers") {
        cli.proxy_trusted_servers.clone()
    } else {
        raw.server.trusted_proxies.clone().unwrap_or_default()
    };
    let trusted_proxies = proxy_texts
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
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
    let tls_enabled = if explicit(matches, "tls_enable") {
        cli.tls_enable
    } else {
        raw.tls.enabled.unwrap_or(cli.tls_enable)
    };
    let tls = if tls_enabled {
        let file = |id: &str, cli: &Option<PathBuf>, raw: &Option<String>, key: &str| {
            if explicit(matches, id) {
                cli.clone()
            } else {
                raw.as_ref().map(|f| base_dir.join(f))
            }
            .ok_or_else(|| {
                invalid(
                    key,
                    "TLS is enabled: give the certificate and the key (PEM files)",
                )
            })
        };
        let cert_file = file(
            "tls_server_cert",
            &cli.tls_server_cert,
            &raw.tls.cert_file,
            "tls.cert_file (--tls-server-cert / TLS_SERVER_CERT)",
        )?;
        let key_file = file(
            "tls_server_key",
            &cli.tls_server_key,
            &raw.tls.key_file,
            "tls.key_file (--tls-server-key / TLS_SERVER_KEY)",
        )?;
        let port = layered(
            matches,
            "tls_server_port",
            cli.tls_server_port,
            raw.tls.port,
        );
        Some(TlsConfig {
            listen: SocketAddr::new(interface, port),
            cert_file,
            key_file,
        })
    } else {
        None
    };
    let plain_http = if explicit(matches, "tls_disable_http") {
        !cli.tls_disable_http
    } else {
        raw.tls.plain_http.unwrap_or(!cli.tls_disable_http)
    };
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

    let origins = layered(
        matches,
        "cors_origin",
        cli.cors_origin.clone(),
        raw.cors.allowed_origins.clone(),
    );
    let allowed_origins = cors_origins(origins)?;
    let max_age = layered(
        matches,
        "cors_max_age",
        cli.cors_max_age,
        file_duration("cors.max_age", raw.cors.max_age.as_ref())?,
    );
    let all_endpoint = if explicit(matches, "disable_all_endpoint") {
        !cli.disable_all_endpoint
    } else {
        raw.frontend
            .all_endpoint
            .unwrap_or(!cli.disable_all_endpoint)
    };
    let log_format = match layered(
        matches,
        "log_format",
        match cli.log_format {
            LogFormatArg::Plain => "plain".to_string(),
            LogFormatArg::Json => "json".to_string(),
        },
        raw.log.format.clone(),
    )
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
    let app_name = layered(
        matches,
        "app_name",
        cli.app_name.clone(),
        raw.app_name.clone(),
    );
    if app_name.trim().is_empty() {
        return Err(invalid("app_name", "must not be empty"));
    }
    let instance_id = cli
        .instance_id
        .clone()
        .or(raw.instance_id.clone())
        .unwrap_or_else(default_instance_id);

    let usage = UsageSettings {
        interval: layered(
            matches,
            "metrics_interval_seconds",
            cli.metrics_interval_seconds,
            file_duration("usage.interval", raw.usage.interval.as_ref())?,
        ),
        max_entries: layered(
            matches,
            "usage_max_entries",
            cli.usage_max_entries,
            raw.usage.max_entries,
        ),
        max_bytes: layered(
            matches,
            "usage_max_bytes",
            cli.usage_max_bytes,
            raw.usage
                .max_bytes
                .as_ref()
                .map(|s| match s {
                    RawSize::Text(t) => parse_size(t).map_err(|e| invalid("usage.max_bytes", e)),
                    RawSize::Number(n) => {
                        usize::try_from(*n).map_err(|_| invalid("usage.max_bytes", "too large"))
                    }
                })
                .transpose()?,
        ),
        per_flag_metrics: if explicit(matches, "per_flag_metrics") {
            cli.per_flag_metrics
        } else {
            raw.usage.per_flag_metrics.unwrap_or(cli.per_flag_metrics)
        },
    };
    if usage.interval < Duration::from_millis(10) {
        return Err(invalid("usage.interval", "must be at least 10ms"));
    }
    let mode = match &cli.command {
        Some(Command::Offline(args)) => {
            Mode::Offline(offline(args, sub_matches(matches), raw.offline, base_dir)?)
        }
        Some(Command::Edge(args)) => Mode::Edge(Box::new(edge(
            args,
            sub_matches(matches),
            raw.edge,
            base_dir,
        )?)),
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

fn sub_matches(matches: &ArgMatches) -> &ArgMatches {
    matches.subcommand().map(|(_, m)| m).unwrap_or(matches)
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
    matches: &ArgMatches,
    raw: Option<file::RawOffline>,
    base_dir: &Path,
) -> Result<OfflineConfig, ConfigError> {
    let raw = raw.unwrap_or_default();
    let features_file = if explicit(matches, "bootstrap_file") {
        args.bootstrap_file.clone()
    } else {
        raw.features_file.as_ref().map(|f| base_dir.join(f))
    }
    .ok_or_else(|| {
        invalid(
            "offline.features_file (--bootstrap-file / BOOTSTRAP_FILE)",
            "offline mode needs a features file",
        )
    })?;
    let reload = layered(
        matches,
        "reload_interval",
        args.reload_interval,
        file_duration("offline.reload_interval", raw.reload_interval.as_ref())?,
    );

    let from_cli = |id: &str, list: &[String]| -> Option<Vec<RawToken>> {
        explicit(matches, id).then(|| {
            list.iter()
                .filter(|t| !t.trim().is_empty())
                .map(|t| RawToken::Plain(t.trim().to_string()))
                .collect()
        })
    };
    let client = from_cli("client_tokens", &args.client_tokens)
        .or(raw.client_tokens)
        .unwrap_or_default();
    let frontend = from_cli("frontend_tokens", &args.frontend_tokens)
        .or(raw.frontend_tokens)
        .unwrap_or_default();
    let keys = if explicit(matches, "client_keys") {
        args.client_keys
            .iter()
            .filter(|k| !k.trim().is_empty())
            .enumerate()
            .map(|(i, k)| key_at_environment(i, k.trim()))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        raw.client_keys.unwrap_or_default()
    };

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
    matches: &ArgMatches,
    raw: Option<file::RawEdge>,
    base_dir: &Path,
) -> Result<EdgeConfig, ConfigError> {
    let raw = raw.unwrap_or_default();
    let url = if explicit(matches, "upstream_url") {
        args.upstream_url.clone()
    } else {
        raw.upstream_url.clone()
    }
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
    let token_texts: Vec<String> = if explicit(matches, "tokens") {
        args.tokens.clone()
    } else {
        raw.tokens.clone().unwrap_or_default()
    };
    let mut tokens = Vec::new();
    for (i, text) in token_texts
        .iter()
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        .enumerate()
    {
        let key = format!("edge.tokens[{i}] (--tokens / TOKENS)");
        let token = Token::parse(text).map_err(|e| invalid(&key, format!("not a token: {e}")))?;
        match token.shape() {
            Shape::Scoped { .. } | Shape::Legacy => {}
            Shape::Admin | Shape::PersonalAccess => {
                return Err(invalid(
                    key,
                    format!(
                        "{token} is an admin or personal access token; flagpost fetches features \
                         with client (backend) tokens only, and never needs admin rights"
                    ),
                ))
            }
            Shape::Opaque => {
                return Err(invalid(
                    key,
                    format!("{token} is not an Unleash token (`<project>:<environment>.<secret>`)"),
                ))
            }
        }
        if tokens.iter().any(|t: &Token| t.ct_eq(token.expose())) {
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
    let duration = |id: &str, key: &str, cli: Duration, file: Option<&RawDuration>| {
        file_duration(key, file).map(|f| layered(matches, id, cli, f))
    };
    let refresh_interval = duration(
        "features_refresh_interval_seconds",
        "edge.refresh_interval",
        args.features_refresh_interval_seconds,
        raw.refresh_interval.as_ref(),
    )?;
    let token_revalidation_interval = duration(
        "token_revalidation_interval_seconds",
        "edge.token_revalidation_interval",
        args.token_revalidation_interval_seconds,
        raw.token_revalidation_interval.as_ref(),
    )?;
    let invalid_token_ttl = duration(
        "invalid_token_ttl",
        "edge.invalid_token_ttl",
        args.invalid_token_ttl,
        raw.invalid_token_ttl.as_ref(),
    )?;
    let upstream_request_timeout = duration(
        "upstream_request_timeout",
        "edge.upstream_request_timeout",
        args.upstream_request_timeout,
        raw.upstream_request_timeout.as_ref(),
    )?;
    let upstream_connect_timeout = duration(
        "upstream_socket_timeout",
        "edge.upstream_connect_timeout",
        args.upstream_socket_timeout,
        raw.upstream_connect_timeout.as_ref(),
    )?;
    for (key, d) in [
        ("edge.refresh_interval", refresh_interval),
        (
            "edge.token_revalidation_interval",
            token_revalidation_interval,
        ),
        ("edge.upstream_request_timeout", upstream_request_timeout),
        ("edge.upstream_connect_timeout", upstream_connect_timeout),
    ] {
        if d < Duration::from_millis(10) {
            return Err(invalid(key, "must be at least 10ms"));
        }
    }
    let token_cache_size = layered(
        matches,
        "token_cache_size",
        args.token_cache_size,
        raw.token_cache_size,
    );
    if token_cache_size == 0 {
        return Err(invalid("edge.token_cache_size", "must be at least 1"));
    }
    let header_texts = if explicit(matches, "custom_client_headers") {
        args.custom_client_headers.clone()
    } else {
        raw.custom_client_headers.clone().unwrap_or_default()
    };
    let mut custom_client_headers = Vec::new();
    for (i, text) in header_texts
        .iter()
        .filter(|h| !h.trim().is_empty())
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
    let upstream_certificate_file = if explicit(matches, "upstream_certificate_file") {
        args.upstream_certificate_file.clone()
    } else {
        raw.upstream_certificate_file
            .as_ref()
            .map(|f| base_dir.join(f))
    };
    let skip_ssl_verification = if explicit(matches, "skip_ssl_verification") {
        args.skip_ssl_verification
    } else {
        raw.skip_ssl_verification.unwrap_or(false)
    };
    let path = |id: &str, cli: &Option<PathBuf>, raw: &Option<String>| {
        if explicit(matches, id) {
            cli.clone()
        } else {
            raw.as_ref().map(|f| base_dir.join(f))
        }
    };
    let client_identity = match (
        path(
            "pkcs8_client_certificate_file",
            &args.pkcs8_client_certificate_file,
            &raw.client_certificate_file,
        ),
        path(
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
    let backup_folder = path("backup_folder", &args.backup_folder, &raw.backup_folder);
    let key_entries = if explicit(matches, "client_keys") {
        args.client_keys
            .iter()
            .filter(|k| !k.trim().is_empty())
            .enumerate()
            .map(|(i, k)| key_at_environment(i, k.trim()))
            .collect::<Result<Vec<_>, _>>()?
    } else {
        raw.client_keys.unwrap_or_default()
    };
    let client_keys = key_entries
        .iter()
        .enumerate()
        .map(|(i, entry)| client_key(&format!("edge.client_keys[{i}]"), entry))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(EdgeConfig {
        upstream_url,
        tokens,
        refresh_interval,
        token_revalidation_interval,
        invalid_token_ttl,
        token_cache_size,
        custom_client_headers,
        upstream_certificate_file,
        skip_ssl_verification,
        upstream_request_timeout,
        upstream_connect_timeout,
        client_identity,
        backup_folder,
        client_keys,
        notes,
    })
}

/// The upstream URL as flagpost uses it: `http(s)://host[:port][/path]` without a trailing `/`
/// or `/api` (flagpost adds the API paths itself).
fn normalize_upstream_url(url: &str) -> Result<String, ConfigError> {
    let key = "edge.upstream_url (--upstream-url / UPSTREAM_URL)";
    let url = url.trim();
    let parsed =
        reqwest::Url::parse(url).map_err(|e| invalid(key, format!("{url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid(
            key,
            format!("{url:?} must be an http:// or https:// URL"),
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            key,
            "credentials in the URL would be logged; use custom_client_headers instead",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid(key, "the URL must not have a query or a fragment"));
    }
    let mut text = parsed.as_str().trim_end_matches('/').to_string();
    if let Some(stripped) = text.strip_suffix("/api") {
        text = stripped.to_string();
    }
    Ok(text)
}

fn key_at_environment(i: usize, text: &str) -> Result<RawClientKey, ConfigError> {
    match text.rsplit_once('@') {
        Some((key, env)) if !key.is_empty() && !env.is_empty() => Ok(RawClientKey {
            key: key.to_string(),
            environment: env.to_string(),
            projects: vec!["*".to_string()],
        }),
        _ => Err(invalid(
            format!("client key #{} (--client-keys / CLIENT_KEYS)", i + 1),
            "write each client key as `key@environment`",
        )),
    }
}

fn configured_token(
    key: &str,
    entry: &RawToken,
    kind: TokenKind,
) -> Result<ConfiguredToken, ConfigError> {
    let (text, projects) = match entry {
        RawToken::Plain(t) => (t.as_str(), None),
        RawToken::WithProjects(t) => (t.token.as_str(), Some(&t.projects)),
    };
    // The error never repeats the token: it may be a secret with a typo.
    let token = Token::parse(text).map_err(|e| invalid(key, format!("not a token: {e}")))?;
    let scope = match (token.shape(), projects) {
        (Shape::Scoped { .. }, None) => token.stated_scope().ok_or_else(|| {
            invalid(
                key,
                format!(
                    "{token} is a `[]` token: its project list is not in the token, so give it \
                     in config.toml as {{ token = \"[]:...\", projects = [\"a\", \"b\"] }}"
                ),
            )
        })?,
        (Shape::Scoped { environment, .. }, Some(list)) => {
            let listed = project_list(key, list)?;
            if let Some(stated) = token.stated_scope() {
                if !stated.projects.covers(&listed) || !listed.covers(&stated.projects) {
                    return Err(invalid(
                        key,
                        format!("{token} names its projects itself; `projects` disagrees with it"),
                    ));
                }
            }
            Scope::new(environment.clone(), listed)
        }
        (Shape::Admin | Shape::PersonalAccess, _) => {
            return Err(invalid(
                key,
                format!(
                    "{token} is an admin or personal access token; flagpost only serves SDK \
                     tokens (client and frontend)"
                ),
            ))
        }
        (Shape::Legacy | Shape::Opaque, _) => {
            return Err(invalid(
                key,
                format!(
                    "{token} does not name its environment (`<project>:<environment>.<secret>`); \
                     an arbitrary string is a client key: list it under [[offline.client_keys]] \
                     with its environment and projects"
                ),
            ))
        }
    };
    Ok(ConfiguredToken { token, kind, scope })
}

fn client_key(key: &str, entry: &RawClientKey) -> Result<ConfiguredToken, ConfigError> {
    let token =
        Token::parse(&entry.key).map_err(|e| invalid(key, format!("not a usable key: {e}")))?;
    if entry.environment.trim().is_empty() || entry.environment == "*" {
        return Err(invalid(key, "`environment` must name one environment"));
    }
    let projects = project_list(key, &entry.projects)?;
    Ok(ConfiguredToken {
        token,
        kind: TokenKind::Frontend,
        scope: Scope::new(entry.environment.trim(), projects),
    })
}

fn project_list(key: &str, list: &[String]) -> Result<Projects, ConfigError> {
    if list.is_empty() {
        return Err(invalid(
            key,
            "`projects` is empty; list projects, or [\"*\"] for all",
        ));
    }
    if let Some(bad) = list.iter().find(|p| p.trim().is_empty()) {
        return Err(invalid(
            key,
            format!("`projects` has an empty name ({bad:?})"),
        ));
    }
    Ok(Projects::from_names(list.iter().map(|p| p.trim())))
}

/// Offline mode needs at least one client token, and each token at most once.
fn check_offline_tokens(tokens: &[ConfiguredToken]) -> Result<(), ConfigError> {
    if !tokens.iter().any(|t| t.kind == TokenKind::Client) {
        return Err(invalid(
            "offline.client_tokens (--client-tokens / CLIENT_TOKENS)",
            "no client token: flagpost serves only within the scope of its client tokens, so \
             give at least one (e.g. \"*:development.some-secret\")",
        ));
    }
    for (i, t) in tokens.iter().enumerate() {
        let duplicate = tokens
            .iter()
            .take(i)
            .any(|earlier| earlier.token.ct_eq(t.token.expose()));
        if duplicate {
            return Err(invalid(
                "offline tokens",
                format!("{} is configured twice", t.token),
            ));
        }
    }
    Ok(())
}

impl Config {
    /// Things that are valid but almost certainly not meant: offline frontend tokens or client
    /// keys whose scope the client tokens do not cover (PROTOCOL.md §2: they will get 403).
    pub fn warnings(&self) -> Vec<String> {
        let offline = match &self.mode {
            Mode::Offline(offline) => offline,
            Mode::Edge(edge) => {
                let mut warnings = edge.notes.clone();
                if edge.skip_ssl_verification {
                    warnings.push(
                        "skip_ssl_verification is on: the upstream's TLS certificate is NOT \
                         verified, so anyone on the network path can impersonate it"
                            .into(),
                    );
                }
                return warnings;
            }
        };
        let tokens = &offline.tokens;
        let mut warnings = Vec::new();
        for t in tokens.iter().filter(|t| t.kind == TokenKind::Frontend) {
            let mut union = Projects::none();
            for c in tokens.iter().filter(|c| {
                c.kind == TokenKind::Client && c.scope.environment == t.scope.environment
            }) {
                union.extend(&c.scope.projects);
            }
            if !union.covers(&t.scope.projects) {
                warnings.push(format!(
                    "{} ({}) will be refused (403 scope_not_covered): no client token covers \
                     environment {:?} for {}. Add a client token for that scope",
                    t.token,
                    t.scope,
                    t.scope.environment,
                    union.missing_from(&t.scope.projects)
                ));
            }
        }
        warnings
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LogFormat::Plain => "plain",
            LogFormat::Json => "json",
        })
    }
}

#[cfg(test)]
mod tests;
