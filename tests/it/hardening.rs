//! Production hardening: timeouts, limits, drain, client addresses, backups, probes, and
//! that no configured secret reaches logs, metrics or error bodies (TLS: tls.rs).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::edge::edge_config;
use crate::harness::*;
use crate::offline::{config, FEATURES, FRONTEND_DEFAULT_DEV};
use crate::upstream::{secret, Behaviour, FakeUpstream};

#[tokio::test]
async fn idle_keep_alive_outlasts_the_header_timeout() {
    let s = Server::start(
        &config("header_read_timeout = \"200ms\"\nidle_timeout = \"1500ms\""),
        &[("features.json", FEATURES)],
    )
    .await;
    s.wait_ready().await;
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let request = format!(
        "GET /api/frontend HTTP/1.1\r\nHost: x\r\nAuthorization: {FRONTEND_DEFAULT_DEV}\r\n\r\n"
    );
    let mut buf = vec![0u8; 8192];
    // Several quick requests first: the end of the last one, not the first, starts the idle time.
    for _ in 0..3 {
        conn.write_all(request.as_bytes()).await.unwrap();
        let n = conn.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
    // The server closes the idle connection after the idle timeout, not the header timeout.
    let idle_start = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    let idled = idle_start.elapsed();
    assert_eq!(n, 0, "closed without a response");
    assert!(
        idled >= Duration::from_millis(1300) && idled < Duration::from_millis(3000),
        "closed after {idled:?}: the idle timeout is 1.5 s"
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_body_that_never_arrives_is_408() {
    let s = Server::start(
        &config("body_read_timeout = \"300ms\""),
        &[("features.json", FEATURES)],
    )
    .await;
    s.wait_ready().await;
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let head = format!("POST /api/frontend HTTP/1.1\r\nHost: x\r\nAuthorization: {FRONTEND_DEFAULT_DEV}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"userId\"");
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"error\":\"request_timeout\""), "{text}");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_flood_past_the_in_flight_limit_is_shed_and_nothing_else_fails() {
    let s = Server::start(&config("max_in_flight = 3"), &[("features.json", FEATURES)]).await;
    s.wait_ready().await;
    let mut slow = Vec::new();
    for _ in 0..3 {
        // Requests waiting for their bodies hold in-flight slots.
        slow.push(half_sent_post(s.addr, FRONTEND_DEFAULT_DEV).await);
    }
    eventually("three requests in flight", || async {
        metric(&s, "flagpost_http_requests_in_flight").await == Some(4.0) // and this scrape
    })
    .await;
    let mut flood = Vec::new();
    for _ in 0..20 {
        let url = s.url("/api/frontend");
        flood.push(tokio::spawn(async move {
            let r = client()
                .get(url)
                .header("Authorization", FRONTEND_DEFAULT_DEV)
                .send()
                .await
                .unwrap();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_string());
            (r.status().as_u16(), retry, r.text().await.unwrap())
        }));
    }
    for f in flood {
        let (status, retry, body) = f.await.unwrap();
        assert_eq!(status, 503);
        assert_eq!(retry.as_deref(), Some("1"));
        assert!(body.contains("\"error\":\"overloaded\""), "{body}");
    }
    assert_eq!(
        get(&s, "/health", None).await.0,
        200,
        "probes are never shed"
    );
    assert_eq!(get(&s, "/ready", None).await.0, 200);
    assert_eq!(
        metric(&s, "flagpost_shed_total{limit=\"in_flight\"}").await,
        Some(20.0)
    );
    // The slow requests complete normally.
    for conn in slow {
        assert!(finish_post(conn).await.starts_with("HTTP/1.1 200"));
    }
    eventually("back to normal", || async {
        get(&s, "/api/frontend", Some(FRONTEND_DEFAULT_DEV)).await.0 == 200
    })
    .await;
    s.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_get_503() {
    let s = Server::start(
        &config("max_connections = 2"),
        &[("features.json", FEATURES)],
    )
    .await;
    s.wait_ready().await;
    // Open keep-alive connections until one is refused: the limit is 2, so the third at the
    // latest. Each is asked for /health: a 200 says it is served (and stays open), a 503 that
    // it was refused; either answer is a positive signal, the deadline only a guard.
    let mut held = Vec::new();
    let mut refused = None;
    for _ in 0..4 {
        let mut c = tokio::net::TcpStream::connect(s.addr).await.unwrap();
        let _ = c
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let mut buf = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("an answer: served or refused")
            .unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        if text.starts_with("HTTP/1.1 200") {
            held.push(c);
        } else {
            refused = Some(text);
            break;
        }
    }
    let text = refused.expect("a connection past the limit was refused");
    assert_eq!(held.len(), 2, "exactly the limit is accepted");
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(
        text.contains("retry-after: 1") && text.contains("\"error\":\"overloaded\""),
        "{text}"
    );
    drop(held);
    eventually("connections free again", || async {
        client()
            .get(s.url("/health"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(
        metric(&s, "flagpost_shed_total{limit=\"connections\"}")
            .await
            .unwrap()
            >= 1.0
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn drain_turns_ready_off_first_and_keeps_serving_for_the_delay() {
    let mut s = Server::start(
        &config("shutdown_delay = \"2s\""),
        &[("features.json", FEATURES)],
    )
    .await;
    s.wait_ready().await;
    s.signal_shutdown();
    eventually("/ready says 503", || async {
        get(&s, "/ready", None).await.0 == 503
    })
    .await;
    assert_eq!(
        get(&s, "/api/frontend", Some(FRONTEND_DEFAULT_DEV)).await.0,
        200,
        "still serving during the delay"
    );
    eventually("the listener closes", || async {
        tokio::net::TcpStream::connect(s.addr).await.is_err()
    })
    .await;
    s.stop().await.unwrap();
}

#[tokio::test]
async fn forwarded_addresses_only_from_trusted_proxies() {
    let features = r#"{"features":[{"name":"office","enabled":true,"strategies":[{"name":"remoteAddress","parameters":{"IPs":"203.0.113.7"}}]}]}"#;
    let check = |s: &Server, xff: &'static str| {
        let url = s.url("/api/frontend");
        async move {
            let r = client()
                .get(url)
                .header("Authorization", FRONTEND_DEFAULT_DEV)
                .header("X-Forwarded-For", xff)
                .send()
                .await
                .unwrap();
            let body: serde_json::Value = r.json_body().await;
            toggle_names(&body).contains(&"office".to_string())
        }
    };
    let trusting = Server::start(
        &config("trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\"]"),
        &[("features.json", features)],
    )
    .await;
    trusting.wait_ready().await;
    assert!(
        check(&trusting, "203.0.113.7").await,
        "a trusted proxy's X-Forwarded-For is used"
    );
    assert!(
        check(&trusting, "203.0.113.7, 10.1.2.3").await,
        "trusted hops are skipped"
    );
    assert!(
        !check(&trusting, "203.0.113.7, 198.51.100.1").await,
        "an untrusted hop stops the walk"
    );
    trusting.stop().await.unwrap();
    let plain = Server::start(&config(""), &[("features.json", features)]).await;
    plain.wait_ready().await;
    assert!(
        !check(&plain, "203.0.113.7").await,
        "without trusted proxies the header is ignored"
    );
    plain.stop().await.unwrap();
}

#[tokio::test]
async fn dual_stack_listener_sees_ipv4_clients_as_ipv4() {
    let features = r#"{"features":[{"name":"local","enabled":true,"strategies":[{"name":"remoteAddress","parameters":{"IPs":"127.0.0.1"}}]}]}"#;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("features.json"), features).unwrap();
    let cfg = config_in(dir.path(), &config(""));
    let s = Server::start_on(cfg, dir, "[::]:0").await;
    let url = format!("http://127.0.0.1:{}/api/frontend", s.addr.port());
    eventually("ready", || async {
        client()
            .get(format!("http://127.0.0.1:{}/ready", s.addr.port()))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let r = client()
        .get(url)
        .header("Authorization", FRONTEND_DEFAULT_DEV)
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = r.json_body().await;
    assert_eq!(toggle_names(&body), ["local"]);
    s.stop().await.unwrap();
}

trait JsonBody {
    async fn json_body(self) -> serde_json::Value;
}

impl JsonBody for reqwest::Response {
    async fn json_body(self) -> serde_json::Value {
        serde_json::from_slice(&self.bytes().await.unwrap()).unwrap()
    }
}

/// Regression: Unleash Edge 20.x, restarted from its backup while upstream was down, served a
/// `*` frontend token it had refused before the restart. flagpost's backup never widens what it
/// serves.
#[tokio::test]
async fn regression_edge_20_backup_never_widens_the_serving_scope() {
    let up = FakeUpstream::start().await;
    let backup = tempfile::tempdir().unwrap();
    let extra = format!("backup_folder = \"{}\"", backup.path().display());
    let start = |tokens: Vec<String>| {
        let toml = edge_config(&up.url(), &tokens, &extra);
        async move { Server::start(&toml, &[]).await }
    };
    let narrow = vec![secret("client-default-dev")];
    let s = start(narrow.clone()).await;
    s.wait_ready().await;
    let wide = secret("frontend-all-dev");
    let ok = secret("frontend-default-dev");
    assert_eq!(get(&s, "/api/frontend", Some(&wide)).await.0, 403);
    assert_eq!(get(&s, "/api/frontend", Some(&ok)).await.0, 200);
    let (_, _, before) = get(&s, "/api/frontend?userId=1", Some(&ok)).await;
    s.stop().await.unwrap();

    up.set(Behaviour::Down);
    let s = start(narrow).await;
    s.wait_ready().await;
    let (status, _, after) = get(&s, "/api/frontend?userId=1", Some(&ok)).await;
    assert_eq!(
        (status, &after),
        (200, &before),
        "served from the backup while upstream is down"
    );
    let (status, _, body) = get(&s, "/api/frontend", Some(&wide)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("scope_not_covered"))
    );
    s.stop().await.unwrap();

    // A startup token added while upstream is down is not in the backup: not served either.
    let s = start(vec![secret("client-default-dev"), secret("client-all-dev")]).await;
    s.wait_ready().await;
    assert_eq!(get(&s, "/api/frontend", Some(&wide)).await.0, 403);
    let (status, _, body) = get(&s, "/api/client/features", Some(&secret("client-all-dev"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("upstream_unavailable")),
        "never validated: not served"
    );
    s.stop().await.unwrap();

    // Upstream back: the real scopes apply again.
    up.set(Behaviour::Normal);
    let s = start(vec![secret("client-all-dev")]).await;
    s.wait_ready().await;
    assert_eq!(get(&s, "/api/frontend", Some(&wide)).await.0, 200);
    s.stop().await.unwrap();
    let files: Vec<String> = std::fs::read_dir(backup.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(
        files.iter().any(|f| f == "flagpost-state.json"),
        "{files:?}"
    );
    for f in &files {
        let text = std::fs::read_to_string(backup.path().join(f)).unwrap();
        assert!(
            !text.contains(&secret("client-all-dev")[14..]),
            "a token in clear in {f}"
        );
    }
}

#[tokio::test]
async fn health_and_ready_subcommands() {
    let s = Server::start(&config(""), &[("features.json", "{broken")]).await;
    let probe = |cmd: &'static str, url: String| async move {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_flagpost"))
            .args([cmd, "--edge-url", &url])
            .env_clear()
            .output()
            .await
            .unwrap()
            .status
            .code()
    };
    assert_eq!(probe("health", s.url("")).await, Some(0));
    assert_eq!(
        probe("ready", s.url("")).await,
        Some(1),
        "not ready: the features file is broken"
    );
    std::fs::write(s.path("features.json"), FEATURES).unwrap();
    s.wait_ready().await;
    assert_eq!(probe("ready", s.url("")).await, Some(0));
    assert_eq!(probe("health", "http://127.0.0.1:1".into()).await, Some(1));
    s.stop().await.unwrap();
}

/// What flagpost at `base` answers each of `secrets` on the SDK routes (a bad usage body
/// included).
async fn answers_to(base: &str, secrets: &[String]) -> Vec<String> {
    let mut bodies = Vec::new();
    for token in secrets {
        for path in [
            "/api/frontend",
            "/api/client/features",
            "/api/frontend/all?userId=1",
        ] {
            let r = client()
                .get(format!("{base}{path}"))
                .header("Authorization", token)
                .send()
                .await
                .unwrap();
            bodies.push(r.text().await.unwrap());
        }
        let r = client()
            .post(format!("{base}/api/client/metrics"))
            .header("Authorization", token)
            .body("{")
            .send()
            .await
            .unwrap();
        bodies.push(r.text().await.unwrap());
    }
    bodies
}

#[tokio::test]
async fn no_secret_reaches_logs_metrics_or_error_bodies() {
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = vec![secret("client-default-dev")];
    let toml = edge_config(&up.url(), &tokens, "");
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        toml.replace(
            "[edge]",
            "[server]\ninterface = \"127.0.0.1\"\nport = 0\nshutdown_delay = \"0s\"\n[edge]",
        ),
    )
    .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flagpost"));
    command
        .arg("--config")
        .arg(&path)
        .env_clear()
        .env("RUST_LOG", "debug");
    let mut flagpost = Binary::spawn(command);
    let addr = flagpost.listening();
    let base = format!("http://{addr}");
    eventually("ready", || async {
        client()
            .get(format!("{base}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    let secrets: Vec<String> = [
        "client-default-dev",
        "frontend-all-dev",
        "frontend-default-dev",
        "client-all-prod",
        "init-admin",
        "pat-admin",
    ]
    .iter()
    .map(|n| secret(n))
    .chain([
        "*:development.made-up-secret-4242".to_string(),
        "custom-header-secret-77".to_string(),
    ])
    .collect();
    let bodies = answers_to(&base, &secrets).await;
    let metrics = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    flagpost.terminate();
    let status = flagpost.exit_within(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    let log = flagpost.log();
    assert!(log.contains("\"level\":\"DEBUG\""), "debug logs were on");
    for token in &secrets {
        // The part that is secret: what follows the last `.` (or all of it).
        let secret_part = token.rsplit_once('.').map_or(token.as_str(), |(_, s)| s);
        let secret_part = secret_part.strip_prefix("user:").unwrap_or(secret_part);
        let needle = &secret_part[secret_part.len().saturating_sub(12)..];
        assert!(!log.contains(needle), "{token} in the log");
        assert!(!metrics.contains(needle), "{token} in the metrics");
        for b in &bodies {
            assert!(!b.contains(needle), "{token} in an error body: {b}");
        }
    }
}
