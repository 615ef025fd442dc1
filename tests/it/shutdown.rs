//! Stopping on time whatever upstream does: a usage upstream that hangs at shutdown (the exit
//! is on time, the loss counted), usage on its way when flagpost stops (counted once, never sent
//! twice), and a request past its deadline (504).

use crate::edge::{edge_config, start_edge};
use crate::harness::*;
use crate::upstream::{secret, FakeUpstream, Scripted};
use serde_json::json;
use std::time::{Duration, Instant};

// Multi-threaded: the fake upstream must answer while this thread blocks on the child's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_a_hanging_usage_upstream_exits_on_time_and_counts_the_loss() {
    // The usage waits in the buffer: the final flush hangs until the deadline.
    let line = shutdown_with_hanging_bulk("1h", false).await;
    assert!(
        line.contains("usage not forwarded before the shutdown deadline"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_on_its_way_at_shutdown_is_counted_once_never_sent_twice() {
    // A periodic round has the usage on its way (hanging) when the signal comes.
    let line = shutdown_with_hanging_bulk("50ms", true).await;
    assert!(
        line.contains("usage on its way upstream when flagpost stopped"),
        "{line}"
    );
}

/// Runs the binary with a bulk-metrics upstream that never answers, posts one usage row,
/// stops it (after the row is on its way upstream, if `wait_for_send`), checks that it exits
/// within delay 0 s + grace 1 s + a second and that the row was sent at most once; returns the
/// log line that counted the row as dropped.
async fn shutdown_with_hanging_bulk(interval: &str, wait_for_send: bool) -> String {
    let up = FakeUpstream::start().await;
    up.script(|parts, _| {
        (parts.uri.path() == "/api/client/metrics/bulk").then_some(Scripted::Hang)
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let toml = edge_config(
        &up.url(),
        &[secret("client-all-dev")],
        "upstream_request_timeout = \"30s\"",
    );
    // Tables after `[edge]`: the listener, a one-second grace, the forwarding interval.
    let toml = format!(
        "{toml}\n[server]\nport = 0\ninterface = \"127.0.0.1\"\nshutdown_delay = \"0s\"\nshutdown_grace = \"1s\"\n[usage]\ninterval = \"{interval}\"\n"
    );
    std::fs::write(&path, toml).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flagpost"));
    command.arg("--config").arg(&path);
    let mut bin = Binary::spawn(command);
    let addr = bin.listening();
    bin.wait_for("startup token validated");
    let metrics_body = json!({"appName": "shop", "instanceId": "i-1", "bucket": {
        "start": "2026-12-04T08:00:00Z", "stop": "2026-12-04T08:01:00Z",
        "toggles": {"simple.on": {"yes": 5, "no": 2, "variants": {}}}}});
    let r = client()
        .post(format!("http://{addr}/api/client/metrics"))
        .header("authorization", secret("client-all-dev"))
        .header("content-type", "application/json")
        .body(metrics_body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    if wait_for_send {
        eventually("the row is on its way", || async {
            !up.requests_to("/api/client/metrics/bulk").is_empty()
        })
        .await;
    }
    let signalled = Instant::now();
    bin.terminate();
    let status = bin.exit_within(Duration::from_secs(5));
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_millis(2000),
        "exit took {took:?}: delay 0 s + grace 1 s + at most a second"
    );
    let log = bin.log();
    let dropped: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("(counted with reason shutdown)"))
        .collect();
    assert_eq!(
        dropped.len(),
        1,
        "the row is counted as dropped once:\n{log}"
    );
    let v: serde_json::Value = serde_json::from_str(dropped[0]).unwrap();
    assert_eq!(v["rows"], 1, "{v}");
    assert_eq!(
        up.requests_to("/api/client/metrics/bulk").len(),
        1,
        "sent once, never again by the final flush"
    );
    dropped[0].to_string()
}

#[tokio::test]
async fn a_request_past_its_deadline_is_answered_504() {
    let up = FakeUpstream::start().await;
    let s = start_edge(
        &up,
        &["client-all-dev"],
        "upstream_request_timeout = \"5s\"\n[server]\nrequest_timeout = \"300ms\"",
    )
    .await;
    s.wait_ready().await;
    // A never-seen token waits for an upstream validation that never comes.
    up.script(|parts, _| (parts.uri.path() == "/edge/validate").then_some(Scripted::Hang));
    let started = Instant::now();
    let (status, headers, body) =
        get(&s, "/api/frontend", Some(&secret("frontend-default-dev"))).await;
    let took = started.elapsed();
    assert_eq!(
        (status, body["error"].as_str()),
        (504, Some("timeout")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("in time"),
        "{body}"
    );
    assert_eq!(headers["content-type"], "application/json");
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(3),
        "answered after {took:?}"
    );
    s.stop().await.unwrap();
}
