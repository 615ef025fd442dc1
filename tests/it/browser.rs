//! A real browser: Debian's Chromium, driven by `playwright-core` (`tests/sdk/browser.mjs`), on a
//! page served from another origin that uses the real `unleash-proxy-client` against flagpost.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::harness::*;
use crate::offline::{self, FEATURES, FRONTEND_DEFAULT_DEV};

async fn next(
    lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the browser script answered in time")
        .unwrap()
        .expect("a line from the browser script (see its stderr above)");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn names(v: &Value) -> Vec<String> {
    v["flags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect()
}

/// The page shows what flagpost evaluates for alice (enabled flags only).
fn assert_shows_alices_flags(ready: &serde_json::Value) {
    let shown = names(ready);
    assert!(
        shown.contains(&"d.on: on (disabled)".to_string()),
        "{shown:?}"
    );
    assert!(
        shown.contains(&"d.users: on (disabled)".to_string()),
        "{shown:?}"
    );
    assert!(
        shown.iter().any(|f| f.starts_with("d.variant: on (blue)")),
        "{shown:?}"
    );
    assert!(!shown.iter().any(|f| f.starts_with("d.off")), "{shown:?}");
}

/// Against a flagpost that allows another origin only: blocked by the browser, reported by
/// the SDK, and flagpost's answer carries no allow-origin header.
async fn assert_blocked(blocked: &serde_json::Value, restricted: &Server, origin: &str) {
    assert_eq!(blocked["phase"], "blocked");
    assert!(
        blocked["error"].as_str().unwrap().starts_with("error"),
        "{blocked}"
    );
    assert_eq!(blocked["status"], "starting", "never ready");
    assert_eq!(blocked["flags"], serde_json::json!([]));
    assert_eq!(blocked["cors"], true, "the browser said why: {blocked}");
    for method in [reqwest::Method::OPTIONS, reqwest::Method::GET] {
        let r = client()
            .request(method.clone(), restricted.url("/api/frontend"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "GET")
            .header("Authorization", FRONTEND_DEFAULT_DEV)
            .send()
            .await
            .unwrap();
        assert!(
            r.headers().get("access-control-allow-origin").is_none(),
            "{method}"
        );
    }
}

/// The page (`tests/sdk/browser.mjs` in Chromium) against `s` and `restricted`.
fn open_page(
    dir: &std::path::Path,
    (s, restricted): (&Server, &Server),
    screenshot: &std::path::Path,
    chromium: &str,
) -> tokio::process::Child {
    tokio::process::Command::new("node")
        .arg(dir.join("browser.mjs"))
        .current_dir(dir)
        .env("FLAGPOST_URL", s.url(""))
        .env("RESTRICTED_URL", restricted.url(""))
        .env("FRONTEND_TOKEN", FRONTEND_DEFAULT_DEV)
        .env("SCREENSHOT", screenshot)
        .env("CHROMIUM", chromium)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// A flagpost whose CORS allows another origin only.
async fn start_restricted() -> Server {
    let restricted = Server::start(
        &offline::config("").replacen(
            "[server]",
            "[cors]\nallowed_origins = [\"https://app.example.com\"]\n[server]",
            1,
        ),
        &[("features.json", FEATURES)],
    )
    .await;
    restricted.wait_ready().await;
    restricted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_browser_page_uses_flagpost() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists()
            && dir.join("node_modules/playwright-core").exists(),
        "Chromium ({chromium}) and playwright-core are needed: .ci/run installs them"
    );
    let s = Server::start(&offline::config(""), &[("features.json", FEATURES)]).await;
    s.wait_ready().await;
    let restricted = start_restricted().await;
    let screenshot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let mut child = open_page(&dir, (&s, &restricted), &screenshot, &chromium);
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();

    let ready = next(&mut lines).await;
    eprintln!("browser: {ready}");
    assert_eq!(ready["phase"], "ready");
    assert_shows_alices_flags(&ready);
    let origin = ready["origin"].as_str().unwrap().to_string();

    // The features file changes: the SDK's update event fires and the page shows it.
    std::fs::write(
        s.path("features.json"),
        FEATURES.replace(
            r#""d.off","project":"default","enabled":false"#,
            r#""d.off","project":"default","enabled":true"#,
        ),
    )
    .unwrap();
    stdin.write_all(b"go\n").await.unwrap();
    let updated = next(&mut lines).await;
    eprintln!("browser: {updated}");
    assert_eq!(updated["phase"], "updated");
    assert!(names(&updated).contains(&"d.off: on (disabled)".to_string()));

    // The browser's usage metrics reach flagpost.
    assert_eq!(next(&mut lines).await["phase"], "sent");
    eventually("usage from the browser counted", || async {
        metric(
            &s,
            "flagpost_usage_rows_received_total{source=\"frontend\"}",
        )
        .await
        .unwrap_or(0.0)
            >= 1.0
    })
    .await;

    let blocked = next(&mut lines).await;
    eprintln!("browser: {blocked}");
    assert_blocked(&blocked, &restricted, &origin).await;

    let done = next(&mut lines).await;
    assert_eq!(done["phase"], "done");
    let size = std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "browser: screenshot of the page in {} ({size} bytes)",
        screenshot.display()
    );
    assert!(size > 1000, "a screenshot was written");
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
}
