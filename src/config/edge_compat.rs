//! Unleash Edge's settings that flagpost does not read as its own: every other flag and
//! environment variable of Edge 20's open-source command line (`unleash-edge-cli`) is read by
//! flagpost under the same name (`cli.rs`). None is silently ignored: each one here is accepted
//! with one warning at start saying it has no effect, or refused with a message saying what to
//! do instead. They are accepted before and after the subcommand, as Edge's global ones are, and
//! `--help` lists them. Also: an environment variable of the mode flagpost is not running (e.g.
//! `BOOTSTRAP_FILE` in edge mode) gets a warning.

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};

use super::{invalid, ConfigError};

/// What flagpost does with one of Edge's settings it does not read.
#[derive(Debug, Clone, Copy)]
pub enum Support {
    /// Accepted; one warning at start (and in `check-config`) says it has no effect, and why.
    NoEffect(&'static str),
    /// Refused at start: what it asks for is not in flagpost (yet); the message says what to
    /// do instead.
    Refused(&'static str),
}

/// One of Edge's settings: its long flag (also the id), environment variable, whether it is a
/// switch (no value), and what flagpost does with it.
#[derive(Debug, Clone, Copy)]
pub struct EdgeOnly {
    pub flag: &'static str,
    pub env: &'static str,
    pub switch: bool,
    pub short: Option<char>,
    pub support: Support,
}

const fn no_effect(flag: &'static str, env: &'static str, why: &'static str) -> EdgeOnly {
    EdgeOnly {
        flag,
        env,
        switch: false,
        short: None,
        support: Support::NoEffect(why),
    }
}

const fn refused(flag: &'static str, env: &'static str, why: &'static str) -> EdgeOnly {
    EdgeOnly {
        flag,
        env,
        switch: false,
        short: None,
        support: Support::Refused(why),
    }
}

const fn switch(mut e: EdgeOnly) -> EdgeOnly {
    e.switch = true;
    e
}

const SENTRY: &str = "flagpost does not report to Sentry; its errors are in its log and metrics";
/// Every open-source setting of Unleash Edge 20 that flagpost does not read as its own.
pub const EDGE_ONLY: &[EdgeOnly] = &[
    EdgeOnly {
        short: Some('w'),
        ..no_effect(
            "workers",
            "WORKERS",
            "Unleash Edge 20 ignores it too; flagpost runs one worker thread per CPU",
        )
    },
    no_effect("sentry-dsn", "SENTRY_DSN", SENTRY),
    no_effect("sentry-tracing-rate", "SENTRY_TRACING_RATE", SENTRY),
    switch(no_effect("sentry-debug", "SENTRY_DEBUG", SENTRY)),
    switch(no_effect(
        "sentry-enable-logs",
        "SENTRY_ENABLE_LOGS",
        SENTRY,
    )),
    no_effect(
        "datadog-url",
        "DATADOG_URL",
        "flagpost does not send to Datadog; scrape /metrics (Prometheus format) instead",
    ),
    no_effect(
        "client-id",
        "CLIENT_ID",
        "an Unleash Edge label for its own metrics",
    ),
    no_effect(
        "edge-hosting",
        "EDGE_HOSTING",
        "internal to Unleash's hosted Edge",
    ),
    no_effect(
        "ec2-instance-id",
        "EC2_INSTANCE_ID",
        "flagpost reports its own instance id (--instance-id)",
    ),
    switch(no_effect(
        "consumption",
        "CONSUMPTION",
        "an experimental Unleash Edge metric",
    )),
    no_effect(
        "client-keepalive-timeout",
        "CLIENT_KEEPALIVE_TIMEOUT",
        "flagpost keeps upstream connections open while they are reused (90 s idle at most)",
    ),
    no_effect(
        "edge-keepalive-timeout",
        "EDGE_KEEPALIVE_TIMEOUT",
        "flagpost closes idle keep-alive connections after --idle-timeout (IDLE_TIMEOUT, 75 s)",
    ),
    no_effect(
        "prometheus-user-id",
        "PROMETHEUS_USER_ID",
        "Unleash Edge reads it but sends it nowhere either; remote write authenticates with \
         PROMETHEUS_USERNAME and PROMETHEUS_PASSWORD",
    ),
    refused(
        "unleash-client-secret",
        "UNLEASH_CLIENT_SECRET",
        "flagpost does not ask Unleash for its own tokens: give client tokens with --tokens",
    ),
    refused(
        "desired-environments",
        "DESIRED_ENVIRONMENTS",
        "flagpost does not ask Unleash for its own tokens: give client tokens with --tokens",
    ),
    refused(
        "desired-projects",
        "DESIRED_PROJECTS",
        "flagpost does not ask Unleash for its own tokens: give client tokens with --tokens",
    ),
];

const HEADING: &str = "Unleash Edge settings flagpost does not use";

/// `command` with Edge's settings flagpost does not read, global, under their own heading.
pub fn augment(command: Command) -> Command {
    command.args(EDGE_ONLY.iter().map(|e| {
        let help = match e.support {
            Support::NoEffect(_) => "Unleash Edge's; accepted, with no effect in flagpost",
            Support::Refused(_) => "Unleash Edge's; not in flagpost: refused, with what to do",
        };
        let arg = Arg::new(e.flag)
            .long(e.flag)
            .env(e.env)
            .global(true)
            .help(help)
            .help_heading(HEADING);
        let arg = match e.short {
            Some(c) => arg.short(c),
            None => arg,
        };
        if e.switch {
            arg.action(ArgAction::SetTrue)
        } else {
            arg.num_args(1).value_name("VALUE")
        }
    }))
}

/// The warnings for Edge's settings given that have no effect; an error for the first one
/// given that flagpost refuses.
pub fn check(matches: &ArgMatches) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    for e in EDGE_ONLY {
        let source = matches.value_source(e.flag);
        let given = matches!(
            source,
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        ) && (!e.switch || matches.get_flag(e.flag));
        if !given {
            continue;
        }
        let name = format!("{} (--{})", e.env, e.flag);
        match e.support {
            Support::NoEffect(why) => warnings.push(format!(
                "Unleash Edge's {name} is set: it has no effect in flagpost ({why})"
            )),
            Support::Refused(why) => {
                return Err(invalid(
                    name,
                    format!("Unleash Edge's setting is not in flagpost: {why}"),
                ))
            }
        }
    }
    Ok(warnings)
}

/// Warnings for the environment variables of the mode flagpost is not running that are set
/// (and not read by the mode it runs too), given `env` to look them up.
pub fn other_mode(command: &Command, running: &str, env: impl Fn(&str) -> bool) -> Vec<String> {
    let other = if running == "edge" { "offline" } else { "edge" };
    let vars = |name: &str| -> Vec<String> {
        command
            .find_subcommand(name)
            .map(|s| {
                s.get_arguments()
                    .filter(|a| !a.is_global_set())
                    .filter_map(|a| a.get_env())
                    .map(|v| v.to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let read = vars(running);
    vars(other)
        .into_iter()
        .filter(|v| !read.contains(v) && env(v))
        .map(|v| format!("{v} is set but flagpost runs in {running} mode: it has no effect"))
        .collect()
}

/// The help of the command and of each subcommand, as Markdown (Unleash Edge's
/// `--markdown-help`, used to write its documentation).
pub(super) fn markdown_help(mut command: clap::Command) -> String {
    let mut out = String::from("# Command-line help for `flagpost`\n");
    let mut section = |title: String, help: clap::builder::StyledStr| {
        out.push_str(&format!(
            "\n## `{title}`\n\n```text\n{}\n```\n",
            help.to_string().trim_end()
        ));
    };
    section("flagpost".into(), command.render_long_help());
    for sub in command.get_subcommands_mut() {
        let title = format!("flagpost {}", sub.get_name());
        section(title, sub.render_long_help());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_edge_only_setting_is_named_once_and_not_read_by_flagpost() {
        use clap::CommandFactory;
        let ours = super::super::cli::Cli::command();
        let mut seen = std::collections::HashSet::new();
        for e in EDGE_ONLY {
            assert!(seen.insert(e.env), "{} twice", e.env);
            let clash = ours
                .get_arguments()
                .chain(ours.get_subcommands().flat_map(|s| s.get_arguments()))
                .any(|a| {
                    a.get_long() == Some(e.flag)
                        || a.get_env()
                            .is_some_and(|v| v == std::ffi::OsStr::new(e.env))
                });
            assert!(!clash, "{} is read by flagpost itself", e.env);
        }
    }

    #[test]
    fn no_effect_settings_warn_and_refused_ones_stop_with_a_message() {
        let cmd = augment(Command::new("t").subcommand(Command::new("edge")));
        let m = cmd
            .clone()
            .try_get_matches_from(["t", "--sentry-dsn", "x", "edge", "-w", "4"])
            .unwrap();
        let warnings = check(&m).unwrap();
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings.iter().any(|w| w.contains("SENTRY_DSN")));
        assert!(warnings.iter().any(|w| w.contains("WORKERS")));
        let m = cmd
            .try_get_matches_from(["t", "edge", "--unleash-client-secret", "b"])
            .unwrap();
        let e = check(&m).unwrap_err().to_string();
        assert!(
            e.contains("UNLEASH_CLIENT_SECRET") && e.contains("--tokens"),
            "{e}"
        );
    }
}
