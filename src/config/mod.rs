//! Configuration in three layers, `config.toml` < environment variables < command-line flags,
//! merged into one validated [`Config`]. Bad configuration is one [`ConfigError`] naming the key
//! and the problem (the binary exits with code 64).

mod check;
mod cli;
mod edge_compat;
mod file;
mod identity;
mod layer;
mod merge;
mod mode;
mod otel;
mod redact;
mod server;
mod store;
mod telemetry;
pub mod unit;

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches};

use crate::token::{Projects, Scope, Token, TokenKind};
pub use cli::{Cli, Command, ExplainArgs, LogFormatArg, ProbeArgs, DEFAULT_LOG_LINES_PER_MINUTE};
use file::RawFile;
pub use identity::ClientIdentity;
use layer::Layers;
pub use otel::{OtelConfig, OtlpProtocol, ParentRoot, SamplerChoice};
pub use store::{DataNodes, RedisMode, RedisUrl, StoreConfig};
pub use telemetry::RemoteWriteConfig;

/// Everything flagpost needs to run, validated.
/// `[backstage]`: the inspection endpoints under `/internal-backstage/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackstageConfig {
    /// Opens `tokens`, `features`, `metricsbatch` and `instancedata`; without it they are not
    /// served.
    pub token: Option<crate::token::Secret>,
    pub metrics: bool,
    pub tokens: bool,
    pub features: bool,
    pub metrics_batch: bool,
    pub instance_data: bool,
}

/// `[streaming]`: Server-Sent Events and deltas to server SDKs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamingSettings {
    /// Streams open at once beyond which a new one is refused (429); 0: streaming is off.
    pub max_streams: usize,
    pub heartbeat_interval: Duration,
    /// Changes kept per environment for resuming clients.
    pub history: usize,
    /// `fetch-mode: streaming` on Client API answers.
    pub advertise: bool,
}

/// An S3 bucket as configured: its name, and whether requests use path-style addressing
/// (`https://endpoint/bucket/key`, for MinIO, Ceph and the like) instead of virtual-hosted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bucket {
    pub name: String,
    pub force_path_style: bool,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub cors: CorsConfig,
    pub frontend: FrontendConfig,
    pub log_format: LogFormat,
    /// Most log lines a minute client requests may cause (`log.request_lines_per_minute`).
    pub log_request_lines_per_minute: u64,
    /// How often the summary of refusals is written (`log.summary_interval`).
    pub log_summary_interval: Duration,
    pub app_name: String,
    pub instance_id: String,
    pub usage: UsageSettings,
    pub streaming: StreamingSettings,
    pub backstage: BackstageConfig,
    /// Prometheus remote write (`[remote_write]`), when a URL is given.
    pub remote_write: Option<RemoteWriteConfig>,
    /// OpenTelemetry trace export (`[otel]`), when an endpoint is given.
    pub otel: Option<OtelConfig>,
    pub mode: Mode,
    /// Worth a warning at start (and a line in `check-config`): Unleash Edge settings that
    /// have no effect, environment variables of the other mode.
    pub notes: Vec<String>,
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
    /// Every route is served under this prefix (`""`, or `/a/b` without a trailing slash).
    pub base_path: String,
    /// The header SDK tokens are read from (`Authorization` unless configured).
    pub token_header: http::HeaderName,
    /// Peers allowed (empty: all) and denied (Unleash Edge's allow and deny lists).
    pub allow_list: Vec<ipnet::IpNet>,
    pub deny_list: Vec<ipnet::IpNet>,
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
    /// Plain-HTTP requests get 308 to HTTPS (Unleash Edge's `--redirect-http-to-https`).
    pub redirect_http: bool,
}

#[derive(Debug, Clone)]
pub struct CorsConfig {
    pub allowed_origins: AllowedOrigins,
    pub max_age: Duration,
    /// Unleash Edge's CORS lists, each as one header value (`None`: flagpost's default).
    pub allowed_headers: Option<http::HeaderValue>,
    pub exposed_headers: Option<http::HeaderValue>,
    pub methods: Option<http::HeaderValue>,
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
    /// Remembered ETags of Frontend API answers (0: none), and how long each is kept.
    pub etag_cache_size: u64,
    pub etag_cache_ttl: Duration,
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
    /// Largest upstream response body read (decompressed).
    pub upstream_max_body_size: usize,
    /// Unknown tokens per minute one `/edge/validate` caller may have checked upstream.
    pub validate_caller_budget: u64,
    /// Unknown tokens per minute all `/edge/validate` callers together may have checked upstream.
    pub validate_total_budget: u64,
    /// The client identity shown to the upstream (mutual TLS).
    pub client_identity: Option<ClientIdentity>,
    /// Where features and token scopes are backed up, to start from when upstream is down.
    pub backup_folder: Option<PathBuf>,
    /// Where features and token scopes are backed up instead of a folder.
    pub s3_bucket: Option<Bucket>,
    /// Follow the upstream's stream instead of polling (`--streaming`).
    pub streaming: bool,
    /// The fleet's shared Redis, if any.
    pub store: Option<StoreConfig>,
    /// Locally configured client keys (frontend kind).
    pub client_keys: Vec<ConfiguredToken>,
    /// The header tokens are sent upstream in (`Authorization` unless configured).
    pub upstream_auth_header: http::HeaderName,
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
    /// `flagpost explain TOKEN`: ask a running flagpost about a token.
    Explain(cli::ExplainArgs),
    /// `--markdown-help` (Unleash Edge's): the help of every command, as Markdown.
    MarkdownHelp(String),
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
        let command = edge_compat::augment(Cli::command());
        let matches = command.clone().try_get_matches_from(&args)?;
        let cli = Cli::from_arg_matches(&matches)?;
        if cli.markdown_help {
            return Ok(Invocation::MarkdownHelp(edge_compat::markdown_help(
                command,
            )));
        }
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
            Some(Command::Explain(args)) => return Ok(Invocation::Explain(args.clone())),
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
            let matches = command.clone().try_get_matches_from(&args)?;
            let cli = Cli::from_arg_matches(&matches)?;
            let layers = Layers {
                matches: &matches,
                base_dir: &base_dir,
            };
            let config = merge::merge(&cli, &layers, raw.unwrap_or_default())?;
            return Ok(wrap(
                with_edge_notes(config, &command, &matches)?,
                check_only,
            ));
        }
        let layers = Layers {
            matches: &matches,
            base_dir: &base_dir,
        };
        let config = merge::merge(&cli, &layers, raw.unwrap_or_default())?;
        Ok(wrap(
            with_edge_notes(config, &command, &matches)?,
            check_only,
        ))
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
}

/// `config` with the warnings for Unleash Edge's settings that have no effect (and for the other
/// mode's environment variables); an error for one flagpost refuses.
fn with_edge_notes(
    mut config: Config,
    command: &clap::Command,
    matches: &clap::ArgMatches,
) -> Result<Config, ConfigError> {
    let mut notes = edge_compat::check(matches)?;
    notes.extend(edge_compat::other_mode(command, config.mode.name(), |v| {
        std::env::var(v).is_ok_and(|value| !store::kubernetes_service_link(v, &value))
    }));
    config.notes.extend(notes);
    Ok(config)
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

impl Config {
    /// Things that are valid but almost certainly not meant: offline frontend tokens or client
    /// keys whose scope the client tokens do not cover (PROTOCOL.md §2: they will get 403).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = self.notes.clone();
        let offline = match &self.mode {
            Mode::Offline(offline) => offline,
            Mode::Edge(edge) => {
                warnings.extend(edge.notes.iter().cloned());
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
