//! The log under attack: client traffic causes at most `log.request_lines_per_minute` lines at
//! info and above (shared out over `log.summary_interval`), whatever it sends; the rest is
//! counted in the summary, and the metrics keep exact counts.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

use crate::cli::{flagpost, write_config};
use crate::harness::{client, metric_at, Binary};
use crate::offline::FRONTEND_DEFAULT_DEV;

const SUMMARY: &str = "requests refused since the last summary";

/// Sends `count` requests, 64 at a time, made by `make(i)`; returns their statuses.
async fn flood(
    count: usize,
    make: impl Fn(usize) -> reqwest::RequestBuilder,
) -> BTreeMap<u16, usize> {
    let statuses: Vec<u16> = futures_util::stream::iter(0..count)
        .map(|i| {
            let req = make(i);
            async move { req.send().await.map_or(0, |r| r.status().as_u16()) }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let mut by = std::collections::BTreeMap::new();
    for s in statuses {
        *by.entry(s).or_default() += 1;
    }
    by
}

fn parse(lines: &[String]) -> Vec<Value> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
        .collect()
}

/// A field of a JSON log line (flattened or under `fields`).
fn field<'a>(v: &'a Value, name: &str) -> &'a Value {
    match &v[name] {
        Value::Null => &v["fields"][name],
        found => found,
    }
}

fn message(v: &Value) -> &str {
    v["fields"]["message"]
        .as_str()
        .or(v["message"].as_str())
        .unwrap_or("")
}

/// 10,000 requests with distinct bad tokens and 10,000 with distinct bad bodies; the
/// statuses answered, counted.
async fn send_floods(url: &str) -> (BTreeMap<u16, usize>, BTreeMap<u16, usize>) {
    let c = client();
    let tokens = flood(10_000, |i| {
        c.get(url).header(
            "Authorization",
            format!("default:development.attacker-{i:06}-secret"),
        )
    })
    .await;
    let bodies = flood(10_000, |i| {
        c.post(url)
            .header("Authorization", FRONTEND_DEFAULT_DEV)
            .header("Content-Type", "application/json")
            .body(format!(
                "{{\"context\": {{\"userId\": {i}, \"properties\": [\"bad-{i}\""
            ))
    })
    .await;
    (tokens, bodies)
}

/// One more refusal after the interval writes the summary; polls until it is there.
fn wait_for_summary(rt: &tokio::runtime::Runtime, binary: &mut Binary, url: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no summary line");
        rt.block_on(async {
            let _ = client()
                .get(url)
                .header("Authorization", "default:development.one-more")
                .send()
                .await;
        });
        let lines = parse(binary.lines_so_far());
        if let Some(s) = lines.iter().rev().find(|v| {
            message(v).starts_with(SUMMARY) && field(v, "folded_refusals").as_u64().unwrap_or(0) > 0
        }) {
            return s.clone();
        }
        // A request a tenth of a second until the summary comes (polled, with the deadline).
        rt.block_on(async { tokio::time::sleep(Duration::from_millis(100)).await });
    }
}

/// The metrics keep exact counts.
async fn assert_exact_counts(addr: &str) {
    let invalid = metric_at(addr, "flagpost_token_decisions_total{result=\"invalid\"}").await;
    assert!(invalid.unwrap_or(0.0) >= 10_000.0, "{invalid:?}");
    let folded = metric_at(addr, "flagpost_log_lines_folded_total").await;
    assert!(folded.unwrap_or(0.0) >= 9_900.0, "{folded:?}");
}

#[test]
fn floods_of_distinct_bad_tokens_and_bodies_stay_within_the_log_budget() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), 0);
    let mut command = flagpost();
    command
        .arg("--config")
        .arg(&path)
        .env("LOG_REQUEST_LINES_PER_MINUTE", "60")
        .env("LOG_SUMMARY_INTERVAL", "2s");
    let mut binary = Binary::spawn(command);
    let addr = binary.listening();
    let started_lines = binary.lines_so_far().len();
    let started = Instant::now();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = format!("http://{addr}/api/frontend");
    let (tokens, bodies) = rt.block_on(send_floods(&url));
    assert_eq!(tokens.get(&401), Some(&10_000), "{tokens:?}");
    assert_eq!(bodies.get(&400), Some(&10_000), "{bodies:?}");
    let summary = wait_for_summary(&rt, &mut binary, &url);
    let elapsed = started.elapsed();
    let lines = parse(binary.lines_so_far());
    let during = &lines[started_lines..];
    // Each 2 s interval may hold 2 lines (60 a minute) and one summary.
    let intervals = elapsed.as_secs() / 2 + 2;
    let refusals = during
        .iter()
        .filter(|v| message(v).starts_with("token refused"))
        .count() as u64;
    let summaries = during
        .iter()
        .filter(|v| message(v).starts_with(SUMMARY))
        .count() as u64;
    assert!(
        refusals <= 2 * intervals,
        "{refusals} refusal lines in {elapsed:?}"
    );
    assert!(
        summaries <= intervals,
        "{summaries} summaries in {elapsed:?}"
    );
    let from_requests = during
        .iter()
        .filter(|v| v["span"]["name"] == "request")
        .count() as u64;
    assert_eq!(
        from_requests,
        refusals + summaries,
        "requests caused nothing else: {during:#?}"
    );
    assert!(
        during.len() < 100,
        "{} lines for 20,000 bad requests",
        during.len()
    );
    // The summaries account for every refusal folded away, and for the distinct tokens.
    let folded: u64 = during
        .iter()
        .filter(|v| message(v).starts_with(SUMMARY))
        .map(|v| field(v, "folded_refusals").as_u64().unwrap())
        .sum();
    assert!(
        folded + refusals >= 10_000,
        "{folded} folded + {refusals} logged"
    );
    assert!(
        field(&summary, "folded_tokens").as_u64().unwrap() > 0,
        "{summary}"
    );
    rt.block_on(assert_exact_counts(&addr));
    let secret_seen = during.iter().any(|v| v.to_string().contains("-secret"));
    assert!(!secret_seen, "a secret reached the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_of_a_request_carries_its_connection_and_request_id() {
    use crate::offline::{config, FEATURES};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("features.json"), FEATURES).unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        config("interface = \"127.0.0.1\"\nport = 0\nshutdown_delay = \"0s\""),
    )
    .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flagpost"));
    command.arg("--config").arg(&path).env("RUST_LOG", "debug");
    let mut flagpost = Binary::spawn(command);
    let addr = flagpost.listening();
    let url = format!("http://{addr}/api/frontend");
    // A sane id from the caller is kept and echoed.
    let r = client()
        .get(&url)
        .header("x-request-id", "lb-7f3a.42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-request-id"], "lb-7f3a.42");
    let line = flagpost.wait_for("request refused");
    assert_eq!(line["span"]["request_id"], "lb-7f3a.42", "{line}");
    assert_eq!(line["span"]["route"], "/api/frontend", "{line}");
    assert_eq!(line["span"]["method"], "GET", "{line}");
    let spans = line["spans"].as_array().unwrap();
    assert_eq!(spans[0]["name"], "conn", "{line}");
    assert!(
        spans[0]["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{line}"
    );
    assert_eq!(spans[0]["tls"], false, "{line}");
    // A hostile id is replaced by a fresh one, different for each request.
    let mut ids = answered_ids(&url, "bad id \"<script>").await;
    ids.extend(answered_ids(&url, &"a".repeat(200)).await);
    assert_ne!(ids[0], ids[1]);
    for id in &ids {
        assert_eq!(id.len(), 16, "{id}");
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    }
    flagpost.terminate();
    flagpost.exit_within(Duration::from_secs(10));
}

/// The `X-Request-Id` answered to two requests sent with `given`.
async fn answered_ids(url: &str, given: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = client()
            .get(url)
            .header(
                "x-request-id",
                http::HeaderValue::from_bytes(given.as_bytes()).unwrap(),
            )
            .send()
            .await
            .unwrap();
        ids.push(r.headers()["x-request-id"].to_str().unwrap().to_string());
    }
    ids
}
