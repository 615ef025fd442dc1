//! The effective configuration as a TOML table with every secret redacted, for
//! `check-config` and the start-up log line.

use std::time::Duration;

use toml::{Table, Value};

use super::unit::{format_duration, format_size};
use super::{AllowedOrigins, Config, LogFormat, Mode};
use crate::token::{Projects, Shape, TokenKind};

impl Config {
    pub(super) fn redacted(&self) -> Table {
        let mut root = Table::new();
        root.insert("mode".into(), string(self.mode.name()));
        root.insert("app_name".into(), string(&self.app_name));
        root.insert("instance_id".into(), string(&self.instance_id));
        for (key, table) in [
            ("server", self.server_table()),
            ("tls", self.tls_table()),
            ("cors", self.cors_table()),
            ("frontend", self.frontend_table()),
            ("usage", self.usage_table()),
            ("streaming", self.streaming_table()),
            ("backstage", self.backstage_table()),
        ] {
            root.insert(key.into(), Value::Table(table));
        }
        if let Some(rw) = &self.remote_write {
            root.insert("remote_write".into(), Value::Table(rw.table()));
        }
        if let Some(otel) = &self.otel {
            root.insert("otel".into(), Value::Table(otel.table()));
        }
        root.insert("log".into(), Value::Table(self.log_table()));
        match &self.mode {
            Mode::Offline(offline) => {
                root.insert("offline".into(), Value::Table(offline_table(offline)));
            }
            Mode::Edge(edge) => {
                root.insert("edge".into(), Value::Table(edge_table(edge)));
                if let Some(store) = &edge.store {
                    root.insert("store".into(), Value::Table(store_table(store)));
                }
            }
        }
        root
    }

    /// `[cors]`.
    fn cors_table(&self) -> Table {
        let mut cors = Table::new();
        let origins = match &self.cors.allowed_origins {
            AllowedOrigins::Any => vec![string("*")],
            AllowedOrigins::List(list) => list.iter().map(|o| string(o)).collect(),
        };
        cors.insert("allowed_origins".into(), Value::Array(origins));
        cors.insert("max_age".into(), duration(self.cors.max_age));
        for (key, value) in [
            ("allowed_headers", &self.cors.allowed_headers),
            ("exposed_headers", &self.cors.exposed_headers),
            ("methods", &self.cors.methods),
        ] {
            if let Some(v) = value.as_ref().and_then(|v| v.to_str().ok()) {
                cors.insert(key.into(), string(v));
            }
        }
        cors
    }

    /// `[frontend]`.
    fn frontend_table(&self) -> Table {
        let f = &self.frontend;
        let mut frontend = Table::new();
        frontend.insert("all_endpoint".into(), Value::Boolean(f.all_endpoint));
        frontend.insert("etag_cache_size".into(), integer(f.etag_cache_size));
        frontend.insert("etag_cache_ttl".into(), duration(f.etag_cache_ttl));
        frontend
    }

    /// `[usage]`.
    fn usage_table(&self) -> Table {
        let u = &self.usage;
        let mut usage = Table::new();
        usage.insert("interval".into(), duration(u.interval));
        usage.insert("max_entries".into(), integer(u.max_entries));
        usage.insert("max_bytes".into(), string(&format_size(u.max_bytes)));
        usage.insert(
            "per_flag_metrics".into(),
            Value::Boolean(u.per_flag_metrics),
        );
        usage
    }

    /// `[streaming]`.
    fn streaming_table(&self) -> Table {
        let st = &self.streaming;
        let mut streaming = Table::new();
        streaming.insert("max_streams".into(), integer(st.max_streams));
        streaming.insert("heartbeat_interval".into(), duration(st.heartbeat_interval));
        streaming.insert("history".into(), integer(st.history));
        streaming.insert("advertise".into(), Value::Boolean(st.advertise));
        streaming
    }

    /// `[backstage]`, its token redacted.
    fn backstage_table(&self) -> Table {
        let b = &self.backstage;
        let mut backstage = Table::new();
        if b.token.is_some() {
            backstage.insert("token".into(), string("<redacted>"));
        }
        for (key, on) in [
            ("metrics", b.metrics),
            ("tokens", b.tokens),
            ("features", b.features),
            ("metrics_batch", b.metrics_batch),
            ("instance_data", b.instance_data),
        ] {
            backstage.insert(key.into(), Value::Boolean(on));
        }
        backstage
    }

    /// `[log]`.
    fn log_table(&self) -> Table {
        let mut log = Table::new();
        let format = match self.log_format {
            LogFormat::Plain => "plain",
            LogFormat::Json => "json",
        };
        log.insert("format".into(), string(format));
        log.insert(
            "request_lines_per_minute".into(),
            integer(self.log_request_lines_per_minute),
        );
        log.insert(
            "summary_interval".into(),
            duration(self.log_summary_interval),
        );
        log
    }

    /// `[server]`, redacted form.
    fn server_table(&self) -> Table {
        let mut server = Table::new();
        let ip = self
            .server
            .listen
            .or(self.server.tls.as_ref().map(|t| t.listen))
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        server.insert("interface".into(), string(&ip));
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
            server.insert(key.into(), duration(d));
        }
        server.insert(
            "max_body_size".into(),
            string(&format_size(sv.max_body_size)),
        );
        server.insert(
            "max_metrics_body_size".into(),
            string(&format_size(sv.max_metrics_body_size)),
        );
        server.insert("max_connections".into(), integer(sv.max_connections));
        server.insert("max_in_flight".into(), integer(sv.max_in_flight));
        server.insert(
            "trusted_proxies".into(),
            Value::Array(
                sv.trusted_proxies
                    .iter()
                    .map(|p| string(&p.to_string()))
                    .collect(),
            ),
        );
        server.insert("base_path".into(), string(&sv.base_path));
        server.insert("token_header".into(), string(sv.token_header.as_str()));
        for (key, list) in [("allow_list", &sv.allow_list), ("deny_list", &sv.deny_list)] {
            server.insert(
                key.into(),
                Value::Array(list.iter().map(|p| string(&p.to_string())).collect()),
            );
        }
        server
    }

    /// `[tls]`, redacted form.
    fn tls_table(&self) -> Table {
        let sv = &self.server;
        let mut tls = Table::new();
        tls.insert("enabled".into(), Value::Boolean(sv.tls.is_some()));
        if let Some(t) = &sv.tls {
            tls.insert(
                "cert_file".into(),
                string(&t.cert_file.display().to_string()),
            );
            tls.insert("key_file".into(), string(&t.key_file.display().to_string()));
            tls.insert("port".into(), Value::Integer(i64::from(t.listen.port())));
            tls.insert("plain_http".into(), Value::Boolean(sv.listen.is_some()));
        }
        tls
    }
}

/// `[offline]`, redacted form: tokens and keys shown redacted.
fn offline_table(offline: &super::OfflineConfig) -> Table {
    let mut t = Table::new();
    t.insert(
        "features_file".into(),
        string(&offline.features_file.display().to_string()),
    );
    let reload = offline.reload_interval.unwrap_or(Duration::ZERO);
    t.insert("reload_interval".into(), duration(reload));
    let projects = projects_value;
    let mut client = Vec::new();
    let mut frontend = Vec::new();
    let mut keys = Vec::new();
    for c in &offline.tokens {
        let mut entry = Table::new();
        if *c.token.shape() == Shape::Opaque {
            entry.insert("key".into(), string(&c.token.redacted()));
            entry.insert("environment".into(), string(&c.scope.environment));
            entry.insert("projects".into(), projects(&c.scope.projects));
            keys.push(Value::Table(entry));
            continue;
        }
        entry.insert("token".into(), string(&c.token.redacted()));
        entry.insert("projects".into(), projects(&c.scope.projects));
        match c.kind {
            TokenKind::Client => client.push(Value::Table(entry)),
            TokenKind::Frontend => frontend.push(Value::Table(entry)),
        }
    }
    t.insert("client_tokens".into(), Value::Array(client));
    t.insert("frontend_tokens".into(), Value::Array(frontend));
    t.insert("client_keys".into(), Value::Array(keys));
    t
}

/// `[edge]`, redacted form: tokens redacted, custom header values never shown.
fn edge_table(edge: &super::EdgeConfig) -> Table {
    let mut t = Table::new();
    t.insert("upstream_url".into(), string(&edge.upstream_url));
    t.insert(
        "upstream_auth_header".into(),
        string(edge.upstream_auth_header.as_str()),
    );
    t.insert(
        "tokens".into(),
        Value::Array(
            edge.tokens
                .iter()
                .map(|tk| string(&tk.redacted()))
                .collect(),
        ),
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
        t.insert(key.into(), duration(d));
    }
    for (key, n) in [
        ("token_cache_size", edge.token_cache_size),
        ("validate_caller_budget", edge.validate_caller_budget),
        ("validate_total_budget", edge.validate_total_budget),
    ] {
        t.insert(key.into(), integer(n));
    }
    t.insert(
        "upstream_max_body_size".into(),
        string(&format_size(edge.upstream_max_body_size)),
    );
    t.insert(
        "custom_client_headers".into(),
        Value::Array(
            edge.custom_client_headers
                .iter()
                .map(|(name, _)| string(&format!("{name}: <redacted>")))
                .collect(),
        ),
    );
    if let Some(f) = &edge.upstream_certificate_file {
        t.insert(
            "upstream_certificate_file".into(),
            string(&f.display().to_string()),
        );
    }
    if let Some(id) = &edge.client_identity {
        t.insert("client_identity".into(), string(&id.describe()));
    }
    t.insert(
        "skip_ssl_verification".into(),
        Value::Boolean(edge.skip_ssl_verification),
    );
    t.insert("streaming".into(), Value::Boolean(edge.streaming));
    backup_entries(edge, &mut t);
    t.insert("client_keys".into(), client_keys_value(&edge.client_keys));
    t
}

/// Where `[edge]`'s backup goes.
fn backup_entries(edge: &super::EdgeConfig, t: &mut Table) {
    if let Some(dir) = &edge.backup_folder {
        t.insert("backup_folder".into(), string(&dir.display().to_string()));
    }
    if let Some(b) = &edge.s3_bucket {
        t.insert("s3_bucket_name".into(), string(&b.name));
        t.insert(
            "s3_force_path_style".into(),
            Value::Boolean(b.force_path_style),
        );
    }
}

/// Client keys, each key redacted.
fn client_keys_value(keys: &[super::ConfiguredToken]) -> Value {
    let entries = keys
        .iter()
        .map(|c| {
            let mut entry = Table::new();
            entry.insert("key".into(), string(&c.token.redacted()));
            entry.insert("environment".into(), string(&c.scope.environment));
            entry.insert("projects".into(), projects_value(&c.scope.projects));
            Value::Table(entry)
        })
        .collect();
    Value::Array(entries)
}

pub(super) fn string(v: &str) -> Value {
    Value::String(v.to_string())
}

fn integer<N: TryInto<i64>>(n: N) -> Value {
    Value::Integer(n.try_into().unwrap_or(i64::MAX))
}

pub(super) fn duration(d: Duration) -> Value {
    string(&format_duration(d))
}

fn projects_value(p: &Projects) -> Value {
    Value::Array(match p {
        Projects::All => vec![Value::String("*".into())],
        Projects::Some(set) => set.iter().map(|n| Value::String(n.clone())).collect(),
    })
}

/// `[store]`, redacted form.
fn store_table(store: &super::StoreConfig) -> Table {
    let mut st = Table::new();
    let urls: Vec<String> = store.redis_urls.iter().map(|u| u.redacted()).collect();
    st.insert("redis_url".into(), string(&urls.join(",")));
    st.insert("mode".into(), string(store.mode.name()));
    if let Some(ca) = &store.ca_certificate_file {
        st.insert(
            "ca_certificate_file".into(),
            string(&ca.display().to_string()),
        );
    }
    if let super::RedisMode::Sentinel { master, data } = &store.mode {
        st.insert("sentinel_master".into(), string(master));
        if let Some(user) = &data.username {
            st.insert("data_username".into(), string(user));
        }
        if data.password.is_some() {
            st.insert("data_password".into(), string("<redacted>"));
        }
        st.insert("data_tls".into(), Value::Boolean(data.tls));
    }
    st.insert("namespace".into(), string(&store.namespace));
    for (key, d) in [
        ("max_age", store.max_age),
        ("lease", store.lease),
        ("timeout", store.timeout),
    ] {
        st.insert(key.into(), duration(d));
    }
    st
}

/// A URL for the log and `check-config`: a user or password in it becomes `***` (as given when
/// it has none).
pub(super) fn url_without_credentials(text: &str) -> String {
    match url::Url::parse(text) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("***");
            let _ = u.set_password(None);
            u.to_string()
        }
        Ok(_) => text.to_string(),
        Err(_) => "<not a URL>".into(),
    }
}
