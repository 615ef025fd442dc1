//! `[remote_write]`: pushing the metrics to a Prometheus remote-write URL, Unleash Edge's
//! `--prometheus-remote-write-url` and its companions.

use std::time::Duration;

use super::cli::RemoteWriteArgs;
use super::file::RawRemoteWrite;
use super::layer::Layers;
use super::unit::format_duration;
use super::{invalid, ConfigError};
use crate::token::Secret;

/// Where and how often the metrics are pushed.
#[derive(Debug, Clone)]
pub struct RemoteWriteConfig {
    /// The receiver's URL, with any user and password in it.
    pub url: String,
    pub interval: Duration,
    /// Longest one push may take: the interval, at most 30 s.
    pub timeout: Duration,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// The `hostname` label on every series (`--hostname`, `HOSTNAME`), as Edge labels them.
    pub hostname: Option<String>,
}

impl RemoteWriteConfig {
    /// The URL without a user or password in it, for the log and `check-config`.
    pub fn redacted_url(&self) -> String {
        super::redact::url_without_credentials(&self.url)
    }

    pub(super) fn table(&self) -> toml::Table {
        use toml::Value;
        let mut t = toml::Table::new();
        t.insert("url".into(), Value::String(self.redacted_url()));
        t.insert(
            "interval".into(),
            Value::String(format_duration(self.interval)),
        );
        if let Some(user) = &self.username {
            t.insert("username".into(), Value::String(user.clone()));
        }
        if self.password.is_some() {
            t.insert("password".into(), Value::String("<redacted>".into()));
        }
        t
    }
}

/// `[remote_write]`, or `None` without a URL.
pub(super) fn remote_write(
    args: &RemoteWriteArgs,
    l: &Layers<'_>,
    raw: &RawRemoteWrite,
) -> Result<Option<RemoteWriteConfig>, ConfigError> {
    const URL_KEY: &str =
        "remote_write.url (--prometheus-remote-write-url / PROMETHEUS_REMOTE_WRITE_URL)";
    let url = l.pick(
        "prometheus_remote_write_url",
        args.prometheus_remote_write_url.clone(),
        raw.url.clone().map(Some),
    );
    let interval = l.duration(
        "prometheus_push_interval",
        "remote_write.interval",
        args.prometheus_push_interval,
        raw.interval.as_ref(),
        Duration::from_secs(1),
    )?;
    let username = l.pick(
        "prometheus_username",
        args.prometheus_username.clone(),
        raw.username.clone().map(Some),
    );
    let password = l.pick(
        "prometheus_password",
        args.prometheus_password.clone(),
        raw.password.clone().map(Some),
    );
    let Some(url) = url.map(|u| u.trim().to_string()).filter(|u| !u.is_empty()) else {
        if username.is_some() || password.is_some() {
            return Err(invalid(
                URL_KEY,
                "a user or password is given without the URL",
            ));
        }
        return Ok(None);
    };
    match url::Url::parse(&url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
        _ => {
            return Err(invalid(
                URL_KEY,
                "not an http:// or https:// URL (e.g. http://prometheus:9090/api/v1/write)",
            ))
        }
    }
    if password.is_some() && username.is_none() {
        return Err(invalid(
            "remote_write.username (--prometheus-username / PROMETHEUS_USERNAME)",
            "a password is given without the user",
        ));
    }
    Ok(Some(RemoteWriteConfig {
        url,
        interval,
        timeout: interval.min(Duration::from_secs(30)),
        username,
        password: password.map(Secret::new),
        hostname: args.hostname.clone().filter(|h| !h.trim().is_empty()),
    }))
}
