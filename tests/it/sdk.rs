//! The real SDKs, `unleash-proxy-client` (frontend) and `unleash-client` (server), pinned in
//! `tests/sdk/package.json`, and the Python SDK `UnleashClient` (Unleash's own engine and types
//! inside), pinned in `tests/sdk/requirements.txt`, pointed at flagpost in edge mode in front of
//! the fake upstream and in offline mode. `.ci/run` installs them (`npm ci --prefix tests/sdk`;
//! a virtual environment in `tests/sdk/.venv`).

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::edge::edge_config;
use crate::harness::*;
use crate::upstream::{secret, FakeUpstream};

/// `tests/sdk/check.mjs` against `s`: what each SDK saw, as the script's last line.
async fn run_check(dir: &std::path::Path, s: &Server) -> Value {
    let run = tokio::process::Command::new("node")
        .arg(dir.join("check.mjs"))
        .current_dir(dir)
        .env("FLAGPOST_URL", s.url(""))
        .env("FRONTEND_TOKEN", secret("frontend-all-dev"))
        .env("UNCOVERED_FRONTEND_TOKEN", secret("frontend-all-prod"))
        .env("CLIENT_TOKEN", secret("client-all-dev"))
        .env("UNCOVERED_CLIENT_TOKEN", secret("client-all-prod"))
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the SDK script finished in time")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "SDK script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));
    result
}

/// Both SDKs see for alice what flagpost itself answers for the same context.
async fn assert_sdks_agree_with_flagpost(s: &Server, result: &Value) {
    // What flagpost itself answers for the same context.
    let (_, _, direct) = get(
        s,
        "/api/frontend/all?userId=alice&properties%5Bcountry%5D=NO&properties%5BappVersion%5D=1.3.0",
        Some(&secret("frontend-all-dev")),
    )
    .await;
    let expect = |flag: &str| -> (bool, String) {
        let t = direct["toggles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == flag)
            .unwrap();
        (
            t["enabled"].as_bool().unwrap(),
            t["variant"]["name"].as_str().unwrap().to_string(),
        )
    };
    for sdk in ["frontend", "server"] {
        let r = &result[sdk];
        assert_eq!(r["ready"], true, "{sdk}: {r}");
        for flag in [
            "simple.on",
            "simple.off",
            "users.allowlist",
            "variants.color",
            "constraints.country",
        ] {
            let (enabled, variant) = expect(flag);
            assert_eq!(
                r["flags"][flag]["enabled"].as_bool(),
                Some(enabled),
                "{sdk} {flag}: {r}"
            );
            assert_eq!(
                r["flags"][flag]["variant"].as_str(),
                Some(variant.as_str()),
                "{sdk} {flag}: {r}"
            );
        }
    }
}

/// The counts and registrations the SDKs reported reach the fake upstream.
fn assert_sdk_usage_upstream(up: &FakeUpstream, result: &Value) {
    let rows: Vec<Value> = up
        .requests_to("/api/client/metrics/bulk")
        .iter()
        .flat_map(|r| r.json()["metrics"].as_array().cloned().unwrap_or_default())
        .collect();
    let evaluations = result["evaluations"].as_u64().unwrap();
    for app in ["sdk-frontend-test", "sdk-server-test"] {
        for flag in ["simple.on", "simple.off", "users.allowlist"] {
            let count: u64 = rows
                .iter()
                .filter(|m| m["appName"] == app && m["featureName"] == flag)
                .map(|m| m["yes"].as_u64().unwrap() + m["no"].as_u64().unwrap())
                .sum();
            // Each loop calls isEnabled and getVariant; both SDKs count both.
            assert_eq!(count, 2 * evaluations, "{app} {flag}: evaluations upstream");
        }
    }
    let apps: Vec<Value> = up
        .requests_to("/api/client/metrics/bulk")
        .iter()
        .flat_map(|r| {
            r.json()["applications"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    assert!(
        apps.iter().any(|a| a["appName"] == "sdk-server-test"),
        "{apps:?}"
    );
}

#[tokio::test]
async fn real_sdks_against_flagpost() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
    assert!(
        dir.join("node_modules/unleash-client").exists()
            && dir.join("node_modules/unleash-proxy-client").exists(),
        "the SDK packages are not installed: run `npm ci --prefix tests/sdk` (.ci/run does)"
    );
    let up = FakeUpstream::start().await;
    let tokens = vec![secret("client-all-dev")];
    let config = edge_config(&up.url(), &tokens, "").replacen(
        "[edge]",
        "[usage]\ninterval = \"200ms\"\n[edge]",
        1,
    );
    let s = Server::start(&config, &[]).await;
    s.wait_ready().await;

    let result = run_check(&dir, &s).await;
    eprintln!("SDK results: {result}");

    assert_sdks_agree_with_flagpost(&s, &result).await;
    assert_eq!(result["frontend"]["flags"]["simple.on"]["enabled"], true);
    assert_eq!(
        result["frontend"]["flags"]["users.allowlist"]["enabled"],
        true
    );
    assert_eq!(result["frontend"]["flags"]["simple.off"]["enabled"], false);
    assert_eq!(result["server"]["features"], 13);
    // A token flagpost does not cover: an error, not data.
    assert_eq!(result["frontendUncovered"]["ready"], false);
    assert_eq!(result["frontendUncovered"]["error"], 403);
    assert_eq!(result["frontendUncovered"]["toggles"], 0);
    assert_eq!(result["serverUncovered"]["ready"], false);
    assert!(
        result["serverUncovered"]["error"]
            .as_str()
            .unwrap()
            .contains("403"),
        "{result}"
    );
    assert_eq!(result["serverUncovered"]["features"], 0);

    // The counts the SDKs reported reach the fake upstream.
    s.stop().await.unwrap();
    assert_sdk_usage_upstream(&up, &result);
}

/// A real server SDK: Node's `unleash-client` (`tests/sdk/stream.mjs`) or Python's
/// `UnleashClient` (`tests/sdk/stream.py`), which evaluates with Unleash's own engine and reads
/// stream messages with Unleash's own types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sdk {
    Node,
    Python,
}

impl Sdk {
    fn command(self) -> tokio::process::Command {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/sdk");
        let mut c = match self {
            Sdk::Node => {
                let mut c = tokio::process::Command::new("node");
                c.arg(dir.join("stream.mjs"));
                c
            }
            Sdk::Python => {
                let python = dir.join(".venv/bin/python");
                assert!(
                    python.exists(),
                    "the Python SDK is not installed: run `python3 -m venv tests/sdk/.venv && \
                     tests/sdk/.venv/bin/pip install -r tests/sdk/requirements.txt` (.ci/run does)"
                );
                let mut c = tokio::process::Command::new(python);
                c.arg(dir.join("stream.py"));
                c
            }
        };
        c.current_dir(dir);
        c
    }
}

/// Each server SDK in each way it can follow flagpost: Node streaming and polling deltas;
/// Python (Unleash's engine and types) streaming and polling.
const SDK_MODES: [(Sdk, &str); 4] = [
    (Sdk::Node, "streaming"),
    (Sdk::Node, "delta"),
    (Sdk::Python, "streaming"),
    (Sdk::Python, "polling"),
];

/// Runs a real server SDK in `mode` against `url` with `token`: waits until it is
/// synchronised, checks it has `features` flags, calls `change`, and returns how long the SDK
/// took to see `flag` become `expect`.
async fn sdk_sees_a_change(
    (sdk, mode): (Sdk, &str),
    url: &str,
    token: &str,
    (flag, expect): (&str, bool),
    features: u64,
    change: impl FnOnce(),
) -> Duration {
    use tokio::io::AsyncBufReadExt;
    let mut child = sdk
        .command()
        .env("FLAGPOST_URL", url)
        .env("CLIENT_TOKEN", token)
        .env("MODE", mode)
        .env("FLAG", flag)
        .env("EXPECT", expect.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    async fn next(
        lines: &mut tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    ) -> Value {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the SDK script answered in time")
            .unwrap()
            .expect("a line from the SDK script");
        serde_json::from_str::<Value>(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }
    let ready = next(&mut lines).await;
    assert_eq!(ready["phase"], "ready", "{sdk:?} {mode}: {ready}");
    assert_eq!(ready["features"], features, "{sdk:?} {mode}: {ready}");
    assert_eq!(ready["enabled"], !expect, "{sdk:?} {mode}: {ready}");
    let started = std::time::Instant::now();
    change();
    let changed = next(&mut lines).await;
    let seen = started.elapsed();
    assert_eq!(changed["phase"], "changed", "{sdk:?} {mode}: {changed}");
    assert_eq!(
        changed["fellBack"],
        serde_json::json!([]),
        "{sdk:?} {mode}: {changed}"
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{sdk:?} {mode}: {changed}");
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sdks_stream_and_poll_through_flagpost_in_edge_mode() {
    let up = FakeUpstream::start().await;
    let token = secret("client-all-dev");
    let s = Server::start(
        &edge_config(&up.url(), std::slice::from_ref(&token), ""),
        &[],
    )
    .await;
    s.wait_ready().await;
    let mut on = false;
    for (sdk, mode) in SDK_MODES {
        let seen = sdk_sees_a_change(
            (sdk, mode),
            &s.url(""),
            &token,
            ("simple.on", on),
            13,
            || up.set_enabled("development", "simple.on", on),
        )
        .await;
        eprintln!("edge, {sdk:?} {mode}: the SDK saw the change upstream after {seen:?}");
        on = !on;
    }
    assert!(metric(&s, "flagpost_http_requests_total{method=\"GET\",route=\"/api/client/delta\",status=\"2xx\"}").await.unwrap() >= 1.0);
    assert!(
        metric(&s, "flagpost_stream_events_sent_total")
            .await
            .unwrap()
            >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_sdks_stream_and_poll_through_flagpost_in_offline_mode() {
    use crate::offline::{config, CLIENT_DEFAULT_DEV, FEATURES};
    let s = Server::start(&config(""), &[("features.json", FEATURES)]).await;
    s.wait_ready().await;
    let path = s.path("features.json");
    let mut on = true;
    for (sdk, mode) in SDK_MODES {
        let text = if on {
            FEATURES.replace(
                r#""d.off","project":"default","enabled":false"#,
                r#""d.off","project":"default","enabled":true"#,
            )
        } else {
            FEATURES.to_string()
        };
        let seen = sdk_sees_a_change(
            (sdk, mode),
            &s.url(""),
            CLIENT_DEFAULT_DEV,
            ("d.off", on),
            4,
            || std::fs::write(&path, text).unwrap(),
        )
        .await;
        eprintln!("offline, {sdk:?} {mode}: the SDK saw the file change after {seen:?}");
        on = !on;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_polling_node_sdk_switches_to_streaming_when_flagpost_advertises_it() {
    use crate::offline::{config, CLIENT_DEFAULT_DEV, FEATURES};
    let config = config("").replacen("[server]", "[streaming]\nadvertise = true\n[server]", 1);
    let s = Server::start(&config, &[("features.json", FEATURES)]).await;
    s.wait_ready().await;
    let path = s.path("features.json");
    let text = FEATURES.replace(
        r#""d.off","project":"default","enabled":false"#,
        r#""d.off","project":"default","enabled":true"#,
    );
    sdk_sees_a_change(
        (Sdk::Node, "polling"),
        &s.url(""),
        CLIENT_DEFAULT_DEV,
        ("d.off", true),
        4,
        || std::fs::write(&path, text).unwrap(),
    )
    .await;
    // The SDK's first poll told it to stream: the change came on a stream.
    assert!(
        metric(&s, "flagpost_stream_events_sent_total")
            .await
            .unwrap()
            >= 2.0
    );
}
