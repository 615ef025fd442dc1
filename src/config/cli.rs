//! The command line, shaped like Unleash Edge's (`flagpost [--port 3063] offline
//! --bootstrap-file FILE --client-tokens T1,T2 ...`) with the same environment variable names.
//! clap reads flags and environment variables; `value_source` tells the merge in `config` which
//! values were given explicitly, so that `config.toml` sits below both.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use super::unit::{parse_duration, parse_size};

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

    /// Configuration file (TOML). Without it, ./config.toml is read when it exists
    #[arg(long, env = "FLAGPOST_CONFIG", global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Validate the configuration, print it with secrets redacted, and exit
    #[arg(long, global = true)]
    pub check_config: bool,

    /// Port to listen on for HTTP traffic
    #[arg(short, long, env = "PORT", global = true, default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Interface (IP address) to listen on; `::` listens on IPv6 and IPv4
    #[arg(short, long, env = "INTERFACE", global = true, default_value = DEFAULT_INTERFACE)]
    pub interface: String,

    /// Log format
    #[arg(short, long, env = "LOG_FORMAT", global = true, value_enum, default_value_t = LogFormatArg::Plain)]
    pub log_format: LogFormatArg,

    /// Most log lines a minute (info and above) that client requests may cause (refused tokens, failed requests); the rest are counted in the minute's summary
    #[arg(long, env = "LOG_REQUEST_LINES_PER_MINUTE", global = true, default_value_t = crate::server::refusal::DEFAULT_LINES_PER_MINUTE)]
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
    #[arg(long, env = "METRICS_INTERVAL_SECONDS", global = true, value_parser = duration_arg, default_value = DEFAULT_METRICS_INTERVAL)]
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

#[derive(Debug, Args)]
pub struct EdgeArgs {
    /// The Unleash server's URL, without /api (e.g. https://unleash.example.com)
    #[arg(short, long, env = "UPSTREAM_URL", value_name = "URL")]
    pub upstream_url: Option<String>,

    /// Client (backend) tokens flagpost fetches features with, comma separated. Their scopes,
    /// together, are what flagpost serves
    #[arg(short, long, env = "TOKENS", value_delimiter = ',')]
    pub tokens: Vec<String>,

    /// How often features are fetched from upstream (a number is seconds)
    #[arg(long, env = "FEATURES_REFRESH_INTERVAL_SECONDS", value_parser = duration_arg, default_value = DEFAULT_REFRESH_INTERVAL)]
    pub features_refresh_interval_seconds: Duration,

    /// How often known request tokens are validated again upstream (a number is seconds)
    #[arg(long, env = "TOKEN_REVALIDATION_INTERVAL_SECONDS", value_parser = duration_arg, default_value = DEFAULT_TOKEN_REVALIDATION_INTERVAL)]
    pub token_revalidation_interval_seconds: Duration,

    /// How long a token upstream refused is remembered as invalid
    #[arg(long, env = "INVALID_TOKEN_TTL", value_parser = duration_arg, default_value = DEFAULT_INVALID_TOKEN_TTL)]
    pub invalid_token_ttl: Duration,

    /// Most request tokens remembered (valid and invalid each)
    #[arg(long, env = "TOKEN_CACHE_SIZE", default_value_t = DEFAULT_TOKEN_CACHE_SIZE)]
    pub token_cache_size: u64,

    /// Extra headers on every upstream request, `Name: value`, comma separated
    #[arg(
        short = 'H',
        long,
        env = "CUSTOM_CLIENT_HEADERS",
        value_delimiter = ','
    )]
    pub custom_client_headers: Vec<String>,

    /// Extra CA certificates (PEM) to trust for the upstream connection
    #[arg(long, env = "UPSTREAM_CERTIFICATE_FILE", value_name = "FILE")]
    pub upstream_certificate_file: Option<PathBuf>,

    /// Do not verify the upstream's TLS certificate (dangerous; logged at every start)
    #[arg(long, env = "SKIP_SSL_VERIFICATION")]
    pub skip_ssl_verification: bool,

    /// Longest time one upstream request may take (a number is seconds)
    #[arg(long, env = "UPSTREAM_REQUEST_TIMEOUT", value_parser = duration_arg, default_value = DEFAULT_UPSTREAM_REQUEST_TIMEOUT)]
    pub upstream_request_timeout: Duration,

    /// Longest time connecting to upstream may take (a number is seconds)
    #[arg(long, env = "UPSTREAM_SOCKET_TIMEOUT", value_parser = duration_arg, default_value = DEFAULT_UPSTREAM_CONNECT_TIMEOUT)]
    pub upstream_socket_timeout: Duration,

    /// Largest upstream response body accepted, counted decompressed (larger: refused, the last
    /// good features are kept)
    #[arg(long, env = "UPSTREAM_MAX_BODY_SIZE", value_parser = size_arg, default_value = DEFAULT_UPSTREAM_MAX_BODY_SIZE)]
    pub upstream_max_body_size: usize,

    /// Unknown tokens one caller of /edge/validate may have checked upstream per minute (more: 429)
    #[arg(long, env = "VALIDATE_CALLER_BUDGET", default_value_t = DEFAULT_VALIDATE_CALLER_BUDGET)]
    pub validate_caller_budget: u64,

    /// Unknown tokens all callers of /edge/validate together may have checked upstream per minute
    #[arg(long, env = "VALIDATE_TOTAL_BUDGET", default_value_t = DEFAULT_VALIDATE_TOTAL_BUDGET)]
    pub validate_total_budget: u64,

    /// Client certificate (PEM) for mutual TLS with the upstream
    #[arg(long, env = "PKCS8_CLIENT_CERTIFICATE_FILE", value_name = "FILE")]
    pub pkcs8_client_certificate_file: Option<PathBuf>,

    /// Private key (PEM, PKCS#8) of the client certificate
    #[arg(long, env = "PKCS8_CLIENT_KEY_FILE", value_name = "FILE")]
    pub pkcs8_client_key_file: Option<PathBuf>,

    /// Redis shared by a fleet of flagposts (`redis://` or `rediss://`, user and password in the
    /// URL): one instance polls upstream, the others follow; token verdicts are shared
    #[arg(long, env = "REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,

    /// Unleash Edge's Redis address in parts, when there is no --redis-url: the host
    #[arg(long, env = "REDIS_HOST", value_name = "HOST")]
    pub redis_host: Option<String>,

    /// The Redis port (with --redis-host, or replacing --redis-url's)
    #[arg(long, env = "REDIS_PORT", value_name = "PORT")]
    pub redis_port: Option<String>,

    /// The Redis user (an ACL user; with --redis-host, or replacing --redis-url's)
    #[arg(long, env = "REDIS_USERNAME", value_name = "USER")]
    pub redis_username: Option<String>,

    /// The Redis password (with --redis-host, or replacing --redis-url's; never printed)
    #[arg(long, env = "REDIS_PASSWORD", value_name = "PASSWORD")]
    pub redis_password: Option<String>,

    /// Connect to Redis over TLS (rediss://)
    #[arg(long, env = "REDIS_SECURE")]
    pub redis_secure: bool,

    /// The scheme of a Redis address given in parts: redis (or tcp), rediss (or tls)
    #[arg(long, env = "REDIS_SCHEME", value_name = "SCHEME")]
    pub redis_scheme: Option<String>,

    /// Unleash Edge's Redis timeouts (ms): the longer of the two is flagpost's --store-timeout, unless that is given
    #[arg(
        long,
        env = "REDIS_READ_CONNECTION_TIMEOUT_MILLISECONDS",
        value_name = "MS"
    )]
    pub redis_read_connection_timeout_milliseconds: Option<u64>,

    /// See --redis-read-connection-timeout-milliseconds
    #[arg(
        long,
        env = "REDIS_WRITE_CONNECTION_TIMEOUT_MILLISECONDS",
        value_name = "MS"
    )]
    pub redis_write_connection_timeout_milliseconds: Option<u64>,

    /// Redis deployment: `single` (a single server or a primary behind a proxy)
    #[arg(long, env = "REDIS_MODE", default_value = "single")]
    pub redis_mode: String,

    /// Key prefix of this fleet in Redis [default: derived from the upstream URL and the startup tokens]
    #[arg(long, env = "STORE_NAMESPACE")]
    pub store_namespace: Option<String>,

    /// A snapshot in Redis older than this is not used
    #[arg(long, env = "STORE_MAX_AGE", value_parser = duration_arg, default_value = DEFAULT_STORE_MAX_AGE)]
    pub store_max_age: Duration,

    /// How long the poller's lease lasts without renewal (another instance takes over after it)
    #[arg(long, env = "STORE_LEASE", value_parser = duration_arg, default_value = DEFAULT_STORE_LEASE)]
    pub store_lease: Duration,

    /// Longest a Redis call may take
    #[arg(long, env = "STORE_TIMEOUT", value_parser = duration_arg, default_value = DEFAULT_STORE_TIMEOUT)]
    pub store_timeout: Duration,

    /// Follow the upstream's /api/client/streaming instead of polling (falls back to polling
    /// when the upstream does not stream)
    #[arg(long, env = "STREAMING")]
    pub streaming: bool,

    /// Folder for a backup of the features and token scopes, to start from when upstream is down
    #[arg(short, long, env = "BACKUP_FOLDER", value_name = "DIR")]
    pub backup_folder: Option<PathBuf>,

    /// Unleash-Proxy-style client keys, comma separated, each `key@environment` (all projects)
    #[arg(long, env = "CLIENT_KEYS", value_delimiter = ',')]
    pub client_keys: Vec<String>,

    /// Frontend tokens served without asking upstream (Unleash Edge's): Unleash tokens with a
    /// stated scope, or `secret@environment`; the startup tokens must still cover their scope
    #[arg(long, env = "PRETRUSTED_TOKENS", value_delimiter = ',')]
    pub pretrusted_tokens: Vec<String>,
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s, true)
}

fn size_arg(s: &str) -> Result<usize, String> {
    parse_size(s)
}
