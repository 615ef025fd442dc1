//! The command line, shaped like Unleash Edge's (`flagpost [--port 3063] offline
//! --bootstrap-file FILE --client-tokens T1,T2 ...`) with the same environment variable names.
//! clap reads flags and environment variables; `value_source` tells the merge in `config` which
//! values were given explicitly, so that `config.toml` sits below both.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::unit::{parse_duration, parse_size};

mod edge;
mod otel;
mod telemetry;
pub use edge::EdgeArgs;
pub use otel::OtelArgs;
pub use telemetry::RemoteWriteArgs;

pub const DEFAULT_PORT: u16 = 3063;
pub const DEFAULT_INTERFACE: &str = "0.0.0.0";
pub const DEFAULT_HEADER_READ_TIMEOUT: &str = "10s";
pub const DEFAULT_MAX_BODY_SIZE: &str = "64KiB";
pub const DEFAULT_MAX_METRICS_BODY_SIZE: &str = "1MiB";
pub const DEFAULT_SHUTDOWN_GRACE: &str = "15s";
pub const DEFAULT_SHUTDOWN_DELAY: &str = "5s";
pub const DEFAULT_IDLE_TIMEOUT: &str = "75s";
pub const DEFAULT_BODY_READ_TIMEOUT: &str = "10s";
pub const DEFAULT_REQUEST_TIMEOUT: &str = "15s";
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;
pub const DEFAULT_TLS_PORT: u16 = 3043;
pub const DEFAULT_CORS_MAX_AGE: &str = "1d";
pub const DEFAULT_RELOAD_INTERVAL: &str = "5s";
pub const DEFAULT_APP_NAME: &str = "flagpost";
pub const DEFAULT_REFRESH_INTERVAL: &str = "15s";
pub const DEFAULT_METRICS_INTERVAL: &str = "60s";
pub const DEFAULT_USAGE_MAX_ENTRIES: usize = 50_000;
pub const DEFAULT_USAGE_MAX_BYTES: &str = "8MiB";
pub const DEFAULT_TOKEN_REVALIDATION_INTERVAL: &str = "1h";
pub const DEFAULT_INVALID_TOKEN_TTL: &str = "60s";
pub const DEFAULT_TOKEN_CACHE_SIZE: u64 = 10_000;
pub const DEFAULT_UPSTREAM_REQUEST_TIMEOUT: &str = "10s";
pub const DEFAULT_UPSTREAM_CONNECT_TIMEOUT: &str = "5s";
pub const DEFAULT_UPSTREAM_MAX_BODY_SIZE: &str = "32MiB";
pub const DEFAULT_VALIDATE_CALLER_BUDGET: u64 = 100;
pub const DEFAULT_VALIDATE_TOTAL_BUDGET: u64 = 1000;
pub const DEFAULT_MAX_STREAMS: usize = 10_000;
pub const DEFAULT_ETAG_CACHE_SIZE: u64 = 100_000;
pub const DEFAULT_ETAG_CACHE_TTL: &str = "1h";
pub const DEFAULT_STORE_MAX_AGE: &str = "7d";
pub const DEFAULT_STORE_LEASE: &str = "10s";
pub const DEFAULT_STORE_TIMEOUT: &str = "2s";
pub const DEFAULT_STREAM_HEARTBEAT: &str = "20s";
pub const DEFAULT_STREAM_HISTORY: usize = 100;
/// Most log lines a minute client requests may cause (`log.request_lines_per_minute`).
pub const DEFAULT_LOG_LINES_PER_MINUTE: u64 = 60;

#[derive(Debug, Parser)]
#[command(
    name = "flagpost",
    version,
    about = "A validating edge proxy for Unleash: serves the Frontend and Client APIs from memory, \
             only within the scope of its own client tokens.",
    after_help = "With no subcommand, flagpost reads ./config.toml (or --config FILE) and runs the \
                  mode it names. Precedence: flags > environment variables > config file > defaults."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub remote_write: RemoteWriteArgs,

    #[command(flatten)]
    pub otel: OtelArgs,

    /// Print the help of every command as Markdown and exit (Unleash Edge's)
    #[arg(long, global = true, hide = true)]
    pub markdown_help: bool,

    /// Configuration file (TOML). Without it, ./config.toml is read when it exists
    #[arg(long, env = "FLAGPOST_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Validate the configuration, print it with secrets redacted, and exit
    #[arg(long, global = true)]
    pub check_config: bool,

    /// Port to listen on for HTTP traffic
    #[arg(long, env = "PORT", global = true, default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// --port, before the subcommand (after `edge`, -p is --pretrusted-tokens, as in Unleash Edge)
    #[arg(short = 'p', value_name = "PORT", conflicts_with = "port")]
    pub port_short: Option<u16>,

    /// Interface (IP address) to listen on; `::` listens on IPv6 and IPv4
    #[arg(short, long, env = "INTERFACE", global = true, default_value = DEFAULT_INTERFACE)]
    pub interface: String,

    /// Log format
    #[arg(short, long, env = "LOG_FORMAT", global = true, value_enum, default_value_t = LogFormatArg::Plain)]
    pub log_format: LogFormatArg,

    /// Most log lines a minute (info and above) that client requests may cause (refused tokens, failed requests); the rest are counted in the minute's summary
    #[arg(long, env = "LOG_REQUEST_LINES_PER_MINUTE", global = true, default_value_t = DEFAULT_LOG_LINES_PER_MINUTE)]
    pub log_request_lines_per_minute: u64,

    /// How often the summary of refused requests (and of the lines folded away) is written
    #[arg(long, env = "LOG_SUMMARY_INTERVAL", global = true, value_parser = duration_arg, default_value = "60s")]
    pub log_summary_interval: Duration,

    /// Origins allowed to call the Frontend API from a browser (comma separated; `*` for any)
    #[arg(
        long,
        env = "CORS_ORIGIN",
        global = true,
        value_delimiter = ',',
        default_value = "*"
    )]
    pub cors_origin: Vec<String>,

    /// How long browsers may cache a CORS preflight answer
    #[arg(long, env = "CORS_MAX_AGE", global = true, value_parser = duration_arg, default_value = DEFAULT_CORS_MAX_AGE)]
    pub cors_max_age: Duration,

    /// Headers browsers may send to the Frontend API (comma separated; default: whatever the preflight asks for)
    #[arg(
        long,
        env = "CORS_ALLOWED_HEADERS",
        global = true,
        value_delimiter = ','
    )]
    pub cors_allowed_headers: Vec<String>,

    /// Response headers browsers may read (comma separated; default: ETag)
    #[arg(
        long,
        env = "CORS_EXPOSED_HEADERS",
        global = true,
        value_delimiter = ','
    )]
    pub cors_exposed_headers: Vec<String>,

    /// Methods browsers may use on the Frontend API (comma separated; default: GET, HEAD, POST, OPTIONS)
    #[arg(long, env = "CORS_METHODS", global = true, value_delimiter = ',')]
    pub cors_methods: Vec<String>,

    /// Token that opens the /internal-backstage/ inspection endpoints (tokens, features,
    /// metricsbatch, instancedata); without one they are not served
    #[arg(long, env = "BACKSTAGE_TOKEN", global = true, value_name = "SECRET")]
    pub backstage_token: Option<String>,

    /// Do not serve /metrics and /internal-backstage/metrics
    #[arg(long, env = "DISABLE_METRICS_ENDPOINT", global = true)]
    pub disable_metrics_endpoint: bool,

    /// Do not serve /internal-backstage/tokens
    #[arg(long, env = "DISABLE_TOKENS_ENDPOINT", global = true)]
    pub disable_tokens_endpoint: bool,

    /// Do not serve /internal-backstage/features
    #[arg(long, env = "DISABLE_FEATURES_ENDPOINT", global = true)]
    pub disable_features_endpoint: bool,

    /// Do not serve /internal-backstage/metricsbatch
    #[arg(long, env = "DISABLE_METRICS_BATCH_ENDPOINT", global = true)]
    pub disable_metrics_batch_endpoint: bool,

    /// Do not serve /internal-backstage/instancedata
    #[arg(long, env = "DISABLE_INSTANCE_DATA_ENDPOINT", global = true)]
    pub disable_instance_data_endpoint: bool,

    /// Frontend API answers whose ETag is remembered, so a repeated conditional poll is answered
    /// 304 without evaluating (0: none)
    #[arg(long, env = "FRONTEND_ETAG_CACHE_SIZE", global = true, default_value_t = DEFAULT_ETAG_CACHE_SIZE)]
    pub frontend_etag_cache_size: u64,

    /// How long a remembered Frontend API ETag is kept
    #[arg(long, env = "FRONTEND_ETAG_CACHE_TTL", global = true, value_parser = duration_arg, default_value = DEFAULT_ETAG_CACHE_TTL)]
    pub frontend_etag_cache_ttl: Duration,

    /// Turn off /api/frontend/all and /api/proxy/all (they return disabled flags too)
    #[arg(long, env = "DISABLE_ALL_ENDPOINT", global = true)]
    pub disable_all_endpoint: bool,

    /// Close a connection whose request headers have not all arrived after this long
    #[arg(long, env = "HEADER_READ_TIMEOUT", global = true, value_parser = duration_arg, default_value = DEFAULT_HEADER_READ_TIMEOUT)]
    pub header_read_timeout: Duration,

    /// Close a keep-alive connection idle this long between requests (longer than load balancers')
    #[arg(long, env = "IDLE_TIMEOUT", global = true, value_parser = duration_arg, default_value = DEFAULT_IDLE_TIMEOUT)]
    pub idle_timeout: Duration,

    /// Give up on a request whose body has not all arrived after this long (408)
    #[arg(long, env = "BODY_READ_TIMEOUT", global = true, value_parser = duration_arg, default_value = DEFAULT_BODY_READ_TIMEOUT)]
    pub body_read_timeout: Duration,

    /// Answer 504 when a request could not be answered in this long
    #[arg(long, env = "REQUEST_TIMEOUT", global = true, value_parser = duration_arg, default_value = DEFAULT_REQUEST_TIMEOUT)]
    pub request_timeout: Duration,

    /// Largest Frontend API body (a context) accepted (larger: 413)
    #[arg(long, env = "MAX_BODY_SIZE", global = true, value_parser = size_arg, default_value = DEFAULT_MAX_BODY_SIZE)]
    pub max_body_size: usize,

    /// Largest usage-metrics, registration or /edge/validate body accepted (larger: 413)
    #[arg(long, env = "MAX_METRICS_BODY_SIZE", global = true, value_parser = size_arg, default_value = DEFAULT_MAX_METRICS_BODY_SIZE)]
    pub max_metrics_body_size: usize,

    /// Most client connections open at once; more are answered 503 and closed
    #[arg(long, env = "MAX_CONNECTIONS", global = true, default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Most requests being answered at once; more are answered 503 at once
    #[arg(long, env = "MAX_IN_FLIGHT", global = true, default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    pub max_in_flight: usize,

    /// Proxies (IPs or CIDRs, comma separated) whose X-Forwarded-For/Forwarded headers are trusted
    #[arg(
        long,
        env = "PROXY_TRUSTED_SERVERS",
        global = true,
        value_delimiter = ','
    )]
    pub proxy_trusted_servers: Vec<String>,

    /// Believe X-Forwarded-For/Forwarded from the proxies --proxy-trusted-servers names, or from any peer when it names none (Unleash Edge's --trust-proxy)
    #[arg(long, env = "TRUST_PROXY", global = true)]
    pub trust_proxy: bool,

    /// Serve every route under this path (e.g. /unleash), probes and metrics included; the paths without it are not served
    #[arg(
        long,
        env = "BASE_PATH",
        global = true,
        default_value = "",
        value_name = "PATH"
    )]
    pub base_path: String,

    /// The header SDKs send their token in, and flagpost sends tokens upstream in (default Authorization)
    #[arg(long, env = "TOKEN_HEADER", global = true, value_name = "HEADER")]
    pub token_header: Option<String>,

    /// The header SDKs send their token in (default Authorization)
    #[arg(
        long,
        env = "EDGE_AUTH_HEADER",
        global = true,
        value_name = "HEADER",
        conflicts_with = "token_header"
    )]
    pub edge_auth_header: Option<String>,

    /// The header flagpost sends tokens upstream in (default Authorization)
    #[arg(
        long,
        env = "UPSTREAM_AUTH_HEADER",
        global = true,
        value_name = "HEADER",
        conflicts_with = "token_header"
    )]
    pub upstream_auth_header: Option<String>,

    /// Answer only requests whose peer address is in these IPs or CIDRs (comma separated); others get 403
    #[arg(long, env = "ALLOW_LIST", global = true, value_delimiter = ',')]
    pub allow_list: Vec<String>,

    /// Answer 403 to requests whose peer address is in these IPs or CIDRs (comma separated)
    #[arg(long, env = "DENY_LIST", global = true, value_delimiter = ',')]
    pub deny_list: Vec<String>,

    /// Unleash Edge's name for --request-timeout (a bare number is seconds)
    #[arg(long, env = "EDGE_REQUEST_TIMEOUT", global = true, value_parser = duration_arg)]
    pub edge_request_timeout: Option<Duration>,

    /// On SIGTERM/SIGINT, keep serving (with /ready at 503) this long before closing the listener
    #[arg(long, env = "SHUTDOWN_DELAY", global = true, value_parser = duration_arg, default_value = DEFAULT_SHUTDOWN_DELAY)]
    pub shutdown_delay: Duration,

    /// On SIGTERM/SIGINT, how long in-flight requests may take to finish
    #[arg(long, env = "SHUTDOWN_GRACE", global = true, value_parser = duration_arg, default_value = DEFAULT_SHUTDOWN_GRACE)]
    pub shutdown_grace: Duration,

    /// Serve HTTPS (needs --tls-server-cert and --tls-server-key)
    #[arg(long, env = "TLS_ENABLE", global = true)]
    pub tls_enable: bool,

    /// Server certificate chain (PEM); reloaded when the file changes
    #[arg(long, env = "TLS_SERVER_CERT", global = true, value_name = "FILE")]
    pub tls_server_cert: Option<PathBuf>,

    /// Server private key (PEM); reloaded when the file changes
    #[arg(long, env = "TLS_SERVER_KEY", global = true, value_name = "FILE")]
    pub tls_server_key: Option<PathBuf>,

    /// Port for HTTPS (on the same interface)
    #[arg(long, env = "TLS_SERVER_PORT", global = true, default_value_t = DEFAULT_TLS_PORT)]
    pub tls_server_port: u16,

    /// With TLS on, answer plain-HTTP requests with 308 to the HTTPS port (probes are still answered)
    #[arg(long, env = "REDIRECT_HTTP_TO_HTTPS", global = true)]
    pub redirect_http_to_https: bool,

    /// With TLS on, do not serve plain HTTP on --port
    #[arg(long, env = "TLS_DISABLE_HTTP", global = true)]
    pub tls_disable_http: bool,

    /// Application name flagpost reports upstream
    #[arg(short, long, env = "APP_NAME", global = true, default_value = DEFAULT_APP_NAME)]
    pub app_name: String,

    /// How often SDK usage metrics are forwarded upstream (a number is seconds)
    #[arg(short, long, env = "METRICS_INTERVAL_SECONDS", global = true, value_parser = duration_arg, default_value = DEFAULT_METRICS_INTERVAL)]
    pub metrics_interval_seconds: Duration,

    /// Most usage rows and registrations buffered before new ones are dropped (and counted)
    #[arg(long, env = "USAGE_MAX_ENTRIES", global = true, default_value_t = DEFAULT_USAGE_MAX_ENTRIES)]
    pub usage_max_entries: usize,

    /// Most memory the usage buffer may take before new entries are dropped (and counted)
    #[arg(long, env = "USAGE_MAX_BYTES", global = true, value_parser = size_arg, default_value = DEFAULT_USAGE_MAX_BYTES)]
    pub usage_max_bytes: usize,

    /// Count reported evaluations per flag in Prometheus (one series per flag and environment)
    #[arg(long, env = "PER_FLAG_METRICS", global = true)]
    pub per_flag_metrics: bool,

    /// Most Server-Sent Events streams open at once (more: 429); 0 turns streaming off
    #[arg(long, env = "STREAMING_MAX_STREAMS", global = true, default_value_t = DEFAULT_MAX_STREAMS)]
    pub streaming_max_streams: usize,

    /// Time between heartbeat comments on an idle stream (keep it well under the SDKs' 60 s)
    #[arg(long, env = "STREAMING_HEARTBEAT_INTERVAL", global = true, value_parser = duration_arg, default_value = DEFAULT_STREAM_HEARTBEAT)]
    pub streaming_heartbeat_interval: Duration,

    /// Changes kept per environment for streams and delta clients that resume
    #[arg(long, env = "STREAMING_HISTORY", global = true, default_value_t = DEFAULT_STREAM_HISTORY)]
    pub streaming_history: usize,

    /// Answer `fetch-mode: streaming` on /api/client/features, so polling SDKs switch to streaming
    #[arg(long, env = "STREAMING_ADVERTISE", global = true)]
    pub streaming_advertise: bool,

    /// Instance id flagpost reports upstream [default: flagpost-<host>-<pid>]
    #[arg(long, env = "INSTANCE_ID", global = true)]
    pub instance_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Plain,
    Json,
    /// Unleash Edge's multi-line format: flagpost writes `plain` for it.
    Pretty,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve features from a local file, with tokens from configuration (no Unleash server)
    Offline(OfflineArgs),
    /// Serve features kept in sync with an Unleash server (or another flagpost or Unleash Edge)
    Edge(Box<EdgeArgs>),
    /// Validate the configuration, print it with secrets redacted, and exit
    CheckConfig,
    /// Check a running flagpost's /health (exit 0 when healthy, 1 otherwise), for containers
    /// without a shell
    Health(ProbeArgs),
    /// Check a running flagpost's /ready (exit 0 when ready, 1 otherwise)
    Ready(ProbeArgs),
    /// Ask a running flagpost why it serves or refuses a token (exit 0 when it serves it, 1 when
    /// it refuses it, 2 when it cannot be asked)
    Explain(ExplainArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// The token to explain (sent only to that flagpost)
    pub token: String,

    /// Where flagpost runs
    #[arg(
        long = "url",
        visible_alias = "edge-url",
        env = "EDGE_URL",
        default_value = "http://localhost:3063"
    )]
    pub url: String,

    /// CA certificate (PEM) to trust, for a flagpost serving a self-signed certificate
    #[arg(long, env = "CA_CERTIFICATE_FILE", value_name = "FILE")]
    pub ca_certificate_file: Option<PathBuf>,

    /// Print the JSON answer instead of the summary
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// Where flagpost runs
    #[arg(short, long, env = "EDGE_URL", default_value = "http://localhost:3063")]
    pub edge_url: String,

    /// CA certificate (PEM) to trust, for a flagpost serving a self-signed certificate
    #[arg(short, long, env = "CA_CERTIFICATE_FILE", value_name = "FILE")]
    pub ca_certificate_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct OfflineArgs {
    /// Features file: a Client API response (`{"version":2,"features":[...]}`) or Edge's simple
    /// format (`{"flag":{"enabled":true,"variant":"blue"}}`)
    #[arg(short, long, env = "BOOTSTRAP_FILE", value_name = "FILE")]
    pub bootstrap_file: Option<PathBuf>,

    /// --port (flagpost's `offline -p`; Unleash Edge reads -p only before the subcommand)
    #[arg(short = 'p', value_name = "PORT", hide = true)]
    pub port_short: Option<u16>,

    /// Client (backend) tokens, comma separated. Their scopes are what flagpost serves
    #[arg(short, long, env = "CLIENT_TOKENS", value_delimiter = ',')]
    pub client_tokens: Vec<String>,

    /// Frontend tokens, comma separated
    #[arg(short, long, env = "FRONTEND_TOKENS", value_delimiter = ',')]
    pub frontend_tokens: Vec<String>,

    /// Unleash-Proxy-style client keys, comma separated, each `key@environment` (all projects;
    /// use config.toml to give a project list)
    #[arg(long, env = "CLIENT_KEYS", value_delimiter = ',')]
    pub client_keys: Vec<String>,

    /// How often the features file is checked for changes (a number is seconds; 0 turns
    /// reloading off)
    #[arg(short, long, env = "RELOAD_INTERVAL", value_parser = duration_arg, default_value = DEFAULT_RELOAD_INTERVAL)]
    pub reload_interval: Duration,
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s, true)
}

fn size_arg(s: &str) -> Result<usize, String> {
    parse_size(s)
}
