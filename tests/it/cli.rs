//! The `flagpost` binary: command line, environment variables, exit codes, signals.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness::{client, Binary};
use crate::offline::{CLIENT_DEFAULT_DEV, FEATURES, FRONTEND_DEFAULT_DEV};

pub fn flagpost() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flagpost"));
    // Only what a test sets reaches the binary.
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

pub fn write_config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    std::fs::write(dir.join("features.json"), FEATURES).unwrap();
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "mode = \"offline\"\n[server]\ninterface = \"127.0.0.1\"\nport = {port}\n[offline]\n\
             features_file = \"features.json\"\nclient_tokens = [\"{CLIENT_DEFAULT_DEV}\"]\n\
             frontend_tokens = [\"{FRONTEND_DEFAULT_DEV}\"]\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn help_shows_every_flag_with_its_environment_variable_and_default() {
    let out = flagpost().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for needle in [
        "[env: PORT=]",
        "[default: 3063]",
        "[env: INTERFACE=]",
        "[env: LOG_FORMAT=]",
        "offline",
        "check-config",
    ] {
        assert!(text.contains(needle), "--help lacks {needle}:\n{text}");
    }
    let out = flagpost().args(["offline", "--help"]).output().unwrap();
    let text = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    for needle in [
        "[env: BOOTSTRAP_FILE=]",
        "[env: CLIENT_TOKENS=]",
        "[env: FRONTEND_TOKENS=]",
        "[env: RELOAD_INTERVAL=]",
        "[default: 5s]",
    ] {
        assert!(
            text.contains(needle),
            "offline --help lacks {needle}:\n{text}"
        );
    }
}

#[test]
fn bad_configuration_exits_64_with_one_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), 3063);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("[offline]", "[offline]\nreload_interval = 5");
    std::fs::write(&path, text).unwrap();
    let out = flagpost().arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("offline.reload_interval"), "{err}");
    assert!(err.contains("\"5s\""), "{err}");

    let out = flagpost()
        .args(["--port", "nope", "offline"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let out = flagpost()
        .arg("--config")
        .arg(&path)
        .env("PORT", "99999")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8(out.stderr).unwrap().contains("--port"));
}

fn effective(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn flags_beat_environment_variables_which_beat_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), 4000);
    let file = effective(flagpost().arg("check-config").env("FLAGPOST_CONFIG", &path));
    assert!(file.contains("port = 4000"), "{file}");
    let env = effective(
        flagpost()
            .arg("check-config")
            .env("FLAGPOST_CONFIG", &path)
            .env("PORT", "4100"),
    );
    assert!(env.contains("port = 4100"), "{env}");
    let flag = effective(
        flagpost()
            .args(["check-config", "--port", "4200"])
            .env("FLAGPOST_CONFIG", &path)
            .env("PORT", "4100"),
    );
    assert!(flag.contains("port = 4200"), "{flag}");
    // The mode's own variables apply even when the mode comes from the file.
    let tokens = effective(
        flagpost()
            .arg("check-config")
            .env("FLAGPOST_CONFIG", &path)
            .env(
                "CLIENT_TOKENS",
                "*:development.from-env-secret-1,*:production.from-env-secret-2",
            ),
    );
    assert!(tokens.contains("*:production.from…"), "{tokens}");
    assert!(
        !tokens.contains("from-env-secret"),
        "a secret was printed: {tokens}"
    );
    // With no arguments at all, flagpost reads ./config.toml.
    let cwd = effective(flagpost().arg("check-config").current_dir(dir.path()));
    assert!(cwd.contains("port = 4000"), "{cwd}");
}

#[test]
fn edge_style_offline_command_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.json"), r#"{"a":{"enabled":true}}"#).unwrap();
    let out = effective(
        flagpost()
            .current_dir(dir.path())
            .args(["--port", "3999", "offline", "--bootstrap-file", "f.json"])
            .args([
                "--client-tokens",
                "*:development.abc12345678",
                "--frontend-tokens",
                "*:development.def12345678",
            ])
            .args(["--reload-interval", "5", "--check-config"]),
    );
    assert!(
        out.contains("port = 3999") && out.contains("reload_interval = \"5s\""),
        "{out}"
    );
}

#[test]
fn edge_mode_reads_edge_variables() {
    let out = effective(
        flagpost()
            .args(["edge", "--check-config"])
            .env("UPSTREAM_URL", "http://unleash.internal:4242")
            .env("TOKENS", "*:development.edge-secret-0001")
            .env("CUSTOM_CLIENT_HEADERS", "X-Api-Key: header-secret-0002")
            .env("FEATURES_REFRESH_INTERVAL_SECONDS", "7"),
    );
    assert!(
        out.contains("upstream_url = \"http://unleash.internal:4242\""),
        "{out}"
    );
    assert!(out.contains("refresh_interval = \"7s\""), "{out}");
    assert!(
        !out.contains("edge-secret-0001") && !out.contains("header-secret-0002"),
        "{out}"
    );
}

#[test]
fn the_binary_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), 0);
    let mut command = flagpost();
    command
        .arg("--config")
        .arg(&path)
        .env("SHUTDOWN_DELAY", "200ms");
    let mut flagpost = Binary::spawn(command);
    let addr = flagpost.listening();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        crate::harness::eventually("binary ready", || async {
            client()
                .get(format!("http://{addr}/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
        let r = client()
            .get(format!("http://{addr}/api/frontend"))
            .header("Authorization", FRONTEND_DEFAULT_DEV)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    });
    flagpost.terminate();
    let status = flagpost.exit_within(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    let log = flagpost.log();
    assert!(log.contains("shutdown signal received"), "{log}");
    assert!(
        !log.contains("client-default-dev-0001"),
        "a secret reached the log: {log}"
    );
}

#[test]
fn a_second_signal_stops_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), 0);
    let mut command = flagpost();
    command
        .arg("--config")
        .arg(&path)
        .env("SHUTDOWN_DELAY", "60s");
    let mut flagpost = Binary::spawn(command);
    flagpost.listening();
    flagpost.terminate();
    flagpost.wait_for("shutdown signal received");
    let started = Instant::now();
    flagpost.terminate();
    let status = flagpost.exit_within(Duration::from_secs(10));
    assert_eq!(
        status.code(),
        Some(1),
        "a second signal is not a clean stop"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}
