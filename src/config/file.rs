//! The configuration file (`config.toml`) as written: `Raw*` types that serde fills, with unknown
//! keys rejected so that a typo is an error, not a silently ignored setting.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    pub mode: Option<String>,
    pub app_name: Option<String>,
    pub instance_id: Option<String>,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub tls: RawTls,
    #[serde(default)]
    pub cors: RawCors,
    #[serde(default)]
    pub frontend: RawFrontend,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default)]
    pub usage: RawUsage,
    #[serde(default)]
    pub streaming: RawStreaming,
    pub store: Option<RawStore>,
    #[serde(default)]
    pub backstage: RawBackstage,
    #[serde(default)]
    pub remote_write: RawRemoteWrite,
    #[serde(default)]
    pub otel: RawOtel,
    pub offline: Option<RawOffline>,
    pub edge: Option<RawEdge>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemoteWrite {
    pub url: Option<String>,
    pub interval: Option<RawDuration>,
    pub username: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOtel {
    pub endpoint: Option<String>,
    pub protocol: Option<String>,
    pub headers: Option<std::collections::BTreeMap<String, String>>,
    pub timeout: Option<String>,
    pub compression: Option<String>,
    pub service_name: Option<String>,
    pub resource_attributes: Option<std::collections::BTreeMap<String, String>>,
    pub sampler: Option<String>,
    pub sampler_arg: Option<f64>,
    pub disabled: Option<bool>,
    pub record_query: Option<bool>,
    pub record_context: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub interface: Option<String>,
    pub port: Option<u16>,
    pub header_read_timeout: Option<RawDuration>,
    pub max_body_size: Option<RawSize>,
    pub max_metrics_body_size: Option<RawSize>,
    pub shutdown_grace: Option<RawDuration>,
    pub shutdown_delay: Option<RawDuration>,
    pub idle_timeout: Option<RawDuration>,
    pub body_read_timeout: Option<RawDuration>,
    pub request_timeout: Option<RawDuration>,
    pub max_connections: Option<usize>,
    pub max_in_flight: Option<usize>,
    pub trusted_proxies: Option<Vec<String>>,
    pub trust_proxy: Option<bool>,
    pub base_path: Option<String>,
    pub token_header: Option<String>,
    pub allow_list: Option<Vec<String>>,
    pub deny_list: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub enabled: Option<bool>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
    pub port: Option<u16>,
    pub plain_http: Option<bool>,
    pub redirect_http: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCors {
    pub allowed_origins: Option<Vec<String>>,
    pub max_age: Option<RawDuration>,
    pub allowed_headers: Option<Vec<String>>,
    pub exposed_headers: Option<Vec<String>>,
    pub methods: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFrontend {
    pub all_endpoint: Option<bool>,
    pub etag_cache_size: Option<u64>,
    pub etag_cache_ttl: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUsage {
    pub interval: Option<RawDuration>,
    pub max_entries: Option<usize>,
    pub max_bytes: Option<RawSize>,
    pub per_flag_metrics: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStreaming {
    pub max_streams: Option<usize>,
    pub heartbeat_interval: Option<RawDuration>,
    pub history: Option<usize>,
    pub advertise: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackstage {
    pub token: Option<String>,
    pub metrics: Option<bool>,
    pub tokens: Option<bool>,
    pub features: Option<bool>,
    pub metrics_batch: Option<bool>,
    pub instance_data: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub redis_url: Option<String>,
    pub mode: Option<String>,
    pub sentinel_master: Option<String>,
    /// Sentinel mode: the data nodes' user, password and TLS (flags and environment: Edge's
    /// REDIS_USERNAME, REDIS_PASSWORD, REDIS_SECURE).
    pub data_username: Option<String>,
    pub data_password: Option<String>,
    pub data_tls: Option<bool>,
    pub ca_certificate_file: Option<String>,
    pub namespace: Option<String>,
    pub max_age: Option<RawDuration>,
    pub lease: Option<RawDuration>,
    pub timeout: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    pub format: Option<String>,
    pub request_lines_per_minute: Option<u64>,
    pub summary_interval: Option<RawDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOffline {
    pub features_file: Option<String>,
    pub reload_interval: Option<RawDuration>,
    pub client_tokens: Option<Vec<RawToken>>,
    pub frontend_tokens: Option<Vec<RawToken>>,
    pub client_keys: Option<Vec<RawClientKey>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEdge {
    pub upstream_url: Option<String>,
    pub tokens: Option<Vec<String>>,
    pub refresh_interval: Option<RawDuration>,
    pub token_revalidation_interval: Option<RawDuration>,
    pub invalid_token_ttl: Option<RawDuration>,
    pub token_cache_size: Option<u64>,
    pub custom_client_headers: Option<Vec<String>>,
    pub upstream_certificate_file: Option<String>,
    pub skip_ssl_verification: Option<bool>,
    pub upstream_request_timeout: Option<RawDuration>,
    pub upstream_connect_timeout: Option<RawDuration>,
    pub upstream_max_body_size: Option<RawSize>,
    pub validate_caller_budget: Option<u64>,
    pub validate_total_budget: Option<u64>,
    pub client_certificate_file: Option<String>,
    pub client_key_file: Option<String>,
    pub pkcs12_identity_file: Option<String>,
    pub pkcs12_passphrase: Option<String>,
    pub pem_cert_file: Option<String>,
    pub backup_folder: Option<String>,
    pub s3_bucket_name: Option<String>,
    pub s3_force_path_style: Option<bool>,
    pub streaming: Option<bool>,
    pub client_keys: Option<Vec<RawClientKey>>,
    pub upstream_auth_header: Option<String>,
    pub pretrusted_tokens: Option<Vec<String>>,
}

/// A token as configured: the bare string, or a table giving the project list of a `[]` token.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawToken {
    Plain(String),
    WithProjects(RawTokenWithProjects),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTokenWithProjects {
    pub token: String,
    pub projects: Vec<String>,
}

/// An Unleash-Proxy-style client key: any string, with the scope it may see.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawClientKey {
    pub key: String,
    pub environment: String,
    pub projects: Vec<String>,
}

/// A duration as written: `"15s"`. A bare number is kept to say that it needs a unit.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawDuration {
    Text(String),
    Number(i64),
}

/// A size as written: `"1MiB"`, or a number of bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RawSize {
    Text(String),
    Number(u64),
}

impl RawFile {
    /// Parses the file; an error is one line naming the key (`section.key`) when it can.
    pub fn parse(text: &str) -> Result<RawFile, (Option<String>, String)> {
        toml::from_str(text).map_err(|e| {
            let key = e.span().and_then(|span| key_at(text, span.start));
            let mut problem = e.message().trim().replace('\n', " ");
            if let Some(span) = e.span() {
                let line = text
                    .get(..span.start)
                    .map_or(0, |t| t.matches('\n').count() + 1);
                problem = format!("line {line}: {problem}");
            }
            (key, problem)
        })
    }
}

/// The dotted key (`section.key`) of the line holding byte `offset`, without its value (which
/// may be a secret).
fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text.get(line_start..)?.lines().next()?;
    let key = line.split_once('=')?.0.trim();
    if key.is_empty() || key.starts_with('[') {
        return None;
    }
    let section = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    Some(match section {
        Some(s) => format!("{s}.{key}"),
        None => key.to_string(),
    })
}
