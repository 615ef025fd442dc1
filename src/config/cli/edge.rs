//! The `edge` subcommand's flags, with Unleash Edge's names and environment variables.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::*;

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
    #[arg(short, long, env = "FEATURES_REFRESH_INTERVAL_SECONDS", value_parser = duration_arg, default_value = DEFAULT_REFRESH_INTERVAL)]
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
    #[arg(short, long, env = "SKIP_SSL_VERIFICATION")]
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

    /// Client identity for mutual TLS with the upstream as a PKCS#12 archive (.pfx, .p12)
    #[arg(long, env = "PKCS12_IDENTITY_FILE", value_name = "FILE")]
    pub pkcs12_identity_file: Option<PathBuf>,

    /// Passphrase of --pkcs12-identity-file (never printed)
    #[arg(long, env = "PKCS12_PASSPHRASE", value_name = "PASSPHRASE")]
    pub pkcs12_passphrase: Option<String>,

    /// Client identity for mutual TLS with the upstream as one PEM file: the private key and
    /// the certificate chain, leaf first
    #[arg(long, env = "PEM_CERT_FILE", value_name = "FILE")]
    pub pem_cert_file: Option<PathBuf>,

    /// Redis shared by a fleet of flagposts (`redis://` or `rediss://`, user and password in the
    /// URL): one instance polls upstream, the others follow; token verdicts are shared. With
    /// --redis-mode cluster, the seed nodes, comma separated; with sentinel, the Sentinels
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

    /// Redis deployment: `single` (one server, or a primary behind a proxy), `sentinel` (the
    /// primary named by --redis-sentinel-master, found through the Sentinels of --redis-url) or
    /// `cluster` (Redis Cluster, --redis-url its seed nodes)
    #[arg(long, env = "REDIS_MODE", default_value = "single")]
    pub redis_mode: String,

    /// CA certificates (PEM) to trust for `rediss://` Redis instead of the public roots (a
    /// private CA), in every mode (with Sentinel: for the Sentinels and the data nodes)
    #[arg(long, env = "REDIS_CA_CERTIFICATE_FILE", value_name = "FILE")]
    pub redis_ca_certificate_file: Option<PathBuf>,

    /// With --redis-mode sentinel: the name the Sentinels monitor the primary under
    #[arg(long, env = "REDIS_SENTINEL_MASTER", value_name = "NAME")]
    pub redis_sentinel_master: Option<String>,

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

    /// S3 bucket for the backup instead of a folder; credentials, region and endpoint from the
    /// standard AWS environment (AWS_ACCESS_KEY_ID, AWS_REGION, AWS_ENDPOINT_URL, …)
    #[arg(
        long,
        env = "S3_BUCKET_NAME",
        value_name = "BUCKET",
        conflicts_with = "backup_folder"
    )]
    pub s3_bucket_name: Option<String>,

    /// Path-style S3 requests (https://endpoint/bucket/key), for MinIO and other S3 servers
    #[arg(long, env = "S3_FORCE_PATH_STYLE", requires = "s3_bucket_name")]
    pub s3_force_path_style: bool,

    /// Unleash-Proxy-style client keys, comma separated, each `key@environment` (all projects)
    #[arg(long, env = "CLIENT_KEYS", value_delimiter = ',')]
    pub client_keys: Vec<String>,

    /// Frontend tokens served without asking upstream (Unleash Edge's): Unleash tokens with a
    /// stated scope, or `secret@environment`; the startup tokens must still cover their scope
    #[arg(short, long, env = "PRETRUSTED_TOKENS", value_delimiter = ',')]
    pub pretrusted_tokens: Vec<String>,
}
