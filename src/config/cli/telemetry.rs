//! Unleash Edge's Prometheus remote-write flags, global as flagpost's other server settings.

use std::time::Duration;

use clap::Args;

use super::*;

#[derive(Debug, Args)]
pub struct RemoteWriteArgs {
    /// Push the metrics to this Prometheus remote-write URL (e.g.
    /// http://prometheus:9090/api/v1/write) every --prometheus-push-interval
    #[arg(
        long,
        env = "PROMETHEUS_REMOTE_WRITE_URL",
        global = true,
        value_name = "URL"
    )]
    pub prometheus_remote_write_url: Option<String>,

    /// How often the metrics are pushed (a number is seconds)
    #[arg(long, env = "PROMETHEUS_PUSH_INTERVAL", global = true, value_parser = duration_arg, default_value = "60")]
    pub prometheus_push_interval: Duration,

    /// User for basic authentication with the remote-write URL
    #[arg(long, env = "PROMETHEUS_USERNAME", global = true, value_name = "USER")]
    pub prometheus_username: Option<String>,

    /// Password for basic authentication with the remote-write URL (never printed)
    #[arg(
        long,
        env = "PROMETHEUS_PASSWORD",
        global = true,
        value_name = "PASSWORD"
    )]
    pub prometheus_password: Option<String>,

    /// The `hostname` label on pushed series (Unleash Edge's; containers set HOSTNAME)
    #[arg(
        long,
        env = "HOSTNAME",
        global = true,
        hide = true,
        value_name = "NAME"
    )]
    pub hostname: Option<String>,
}
