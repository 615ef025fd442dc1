//! Unleash Edge's settings as `check-config` shows them: each one flagpost reads is
//! taken, each it has no use for is warned about, and those that would change what an SDK gets
//! are refused.

use crate::cli::{flagpost, write_config};

pub fn check_config(env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), 0);
    let mut c = flagpost();
    c.args(args)
        .arg("check-config")
        .env("FLAGPOST_CONFIG", &path);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

#[test]
fn edge_settings_flagpost_does_not_use_are_warned_about_or_refused() {
    // No effect: accepted, with a warning naming it (environment or flag, before or after
    // the subcommand).
    let out = check_config(
        &[
            ("SENTRY_DSN", "https://k@sentry.example/1"),
            ("WORKERS", "4"),
        ],
        &["--datadog-url", "http://dd"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["SENTRY_DSN", "WORKERS", "DATADOG_URL"] {
        assert!(
            text.lines().any(|l| l.starts_with("# warning:")
                && l.contains(name)
                && l.contains("no effect")),
            "{name}: {text}"
        );
    }
    assert!(
        !text.contains("k@sentry"),
        "a value reached the output: {text}"
    );
    // Refused: exit 64 naming the setting and what to do instead.
    for (var, value, hint) in [
        ("DESIRED_ENVIRONMENTS", "production", "--tokens"),
        ("UNLEASH_CLIENT_SECRET", "secret", "--tokens"),
        ("REDIRECT_HTTP_TO_HTTPS", "true", "TLS"),
    ] {
        let out = check_config(&[(var, value)], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{var}: {err}");
        assert!(err.contains(var) && err.contains(hint), "{var}: {err}");
    }
    // Kubernetes' service link for a Service named `redis` is not Edge's REDIS_PORT.
    let out = check_config(&[("REDIS_PORT", "tcp://10.0.0.5:6379")], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("REDIS_PORT"), "{text}");
    // A switch set to false is not set.
    let out = check_config(&[("REDIRECT_HTTP_TO_HTTPS", "false")], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The other mode's variables get a warning; Edge's names for flagpost's settings are read.
#[test]
fn the_other_modes_settings_are_warned_about_and_edges_names_read() {
    // The other mode's variables: a warning.
    let out = check_config(
        &[
            ("UPSTREAM_URL", "http://unleash:4242"),
            ("REDIS_HOST", "redis"),
        ],
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for var in ["UPSTREAM_URL", "REDIS_HOST"] {
        assert!(
            text.contains(&format!("{var} is set but flagpost runs in offline mode")),
            "{text}"
        );
    }
    // Edge's names for flagpost's settings.
    let out = check_config(
        &[
            ("EDGE_REQUEST_TIMEOUT", "7"),
            ("BASE_PATH", "/unleash"),
            ("TOKEN_HEADER", "X-Token"),
        ],
        &[],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "request_timeout = \"7s\"",
        "base_path = \"/unleash\"",
        "token_header = \"x-token\"",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
}

/// `--help` lists Edge's flags, `--markdown-help` gives every command's help as Markdown.
#[test]
fn the_help_lists_edges_flags() {
    let help = flagpost().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--base-path",
        "--token-header",
        "--allow-list",
        "--deny-list",
        "--trust-proxy",
        "--sentry-dsn",
        "--redirect-http-to-https",
        "--cors-methods",
        "--prometheus-remote-write-url",
        "--prometheus-push-interval",
    ] {
        assert!(help.contains(flag), "{flag} not in --help");
    }
    // Edge's --markdown-help: every command's help, as Markdown.
    let md = flagpost().arg("--markdown-help").output().unwrap();
    let md = String::from_utf8_lossy(&md.stdout);
    assert!(md.starts_with("# Command-line help for `flagpost`"), "{md}");
    assert!(
        md.contains("## `flagpost edge`") && md.contains("--upstream-url"),
        "{md}"
    );
    let help = flagpost().args(["edge", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--redis-host",
        "--redis-password",
        "--pretrusted-tokens",
        "--upstream-auth-header",
        "--s3-bucket-name",
        "--s3-force-path-style",
        "--pkcs12-identity-file",
        "--pem-cert-file",
    ] {
        assert!(help.contains(flag), "{flag} not in edge --help");
    }
}
