//! SDK usage metrics and registrations: accepted, aggregated, forwarded to the fake upstream,
//! never silently lost.

use serde_json::{json, Value};

use crate::edge::edge_config;
use crate::harness::*;
use crate::upstream::{secret, FakeUpstream};

pub const FAST: &str = "[usage]\ninterval = \"200ms\"\n";

pub fn with_usage(config: String, usage: &str) -> String {
    // `[usage]` is a top-level table: put it before `[edge]`.
    config.replacen(
        "[edge]",
        &format!("instance_id = \"fp-test-1\"\n{usage}[edge]"),
        1,
    )
}

pub async fn start(up: &FakeUpstream, tokens: &[&str], usage: &str) -> Server {
    let tokens: Vec<String> = tokens.iter().map(|n| secret(n)).collect();
    let s = Server::start(&with_usage(edge_config(&up.url(), &tokens, ""), usage), &[]).await;
    s.wait_ready().await;
    s
}

pub fn metrics_body(app: &str, start: &str, toggles: Value) -> String {
    json!({
        "appName": app,
        "instanceId": format!("{app}-1"),
        "environment": "ignored-the-token-decides",
        "bucket": {"start": start, "stop": start, "toggles": toggles},
    })
    .to_string()
}

/// Every row of every bulk body the fake accepted (all but the first `skip` bodies).
pub fn forwarded_rows(up: &FakeUpstream, skip: usize) -> Vec<(Option<String>, Value)> {
    up.requests_to("/api/client/metrics/bulk")
        .iter()
        .skip(skip)
        .flat_map(|r| {
            let auth = r.header("authorization").map(str::to_string);
            r.json()["metrics"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |m| (auth.clone(), m))
        })
        .collect()
}

pub fn total(rows: &[(Option<String>, Value)]) -> u64 {
    rows.iter()
        .map(|(_, m)| m["yes"].as_u64().unwrap() + m["no"].as_u64().unwrap())
        .sum()
}

/// Server SDK usage over an hour boundary and a registration, with a development token.
async fn post_server_usage(s: &Server, dev: &str, at: &str) {
    for body in [
        metrics_body(
            "app-1",
            at,
            json!({"simple.on": {"yes": 10, "no": 0, "variants": {}}, "variants.color": {"yes": 7, "no": 0, "variants": {"red": 3, "blue": 4}}}),
        ),
        metrics_body(
            "app-1",
            "2026-11-28T04:59:59.000Z",
            json!({"simple.on": {"yes": 5, "no": 1}, "variants.color": {"yes": 1, "no": 0, "variants": {"red": 1}}}),
        ),
        metrics_body(
            "app-1",
            "2026-11-28T05:00:00.000Z",
            json!({"simple.on": {"yes": 1, "no": 0}}),
        ),
    ] {
        assert_eq!(post(s, "/api/client/metrics", Some(dev), body).await.0, 202);
    }
    let register = json!({"appName": "app-1", "instanceId": "app-1-1", "sdkVersion": "unleash-client-node:6.12.1",
        "strategies": ["default"], "started": at, "interval": 15000, "connectVia": [{"appName": "edge-a", "instanceId": "e-1"}]});
    assert_eq!(
        post(s, "/api/client/register", Some(dev), register.to_string())
            .await
            .0,
        202
    );
}

/// A browser's registration and usage, and usage with a production token.
async fn post_frontend_and_prod_usage(s: &Server, at: &str) {
    let frontend = json!({"appName": "web", "instanceId": "browser-1", "sdkVersion": "unleash-client-js:3.8.2", "environment": "development", "interval": 30000, "started": at, "strategies": []});
    assert_eq!(
        post(
            s,
            "/api/frontend/client/register",
            Some(&secret("frontend-all-dev")),
            frontend.to_string()
        )
        .await
        .0,
        202
    );
    let fe_metrics = metrics_body(
        "web",
        at,
        json!({"variants.color": {"yes": 3, "no": 1, "variants": {"red": 2, "blue": 1, "disabled": 1}}}),
    );
    assert_eq!(
        post(
            s,
            "/api/proxy/client/metrics",
            Some(&secret("frontend-all-dev")),
            fe_metrics
        )
        .await
        .0,
        202
    );
    let prod = metrics_body(
        "app-1",
        at,
        json!({"checkout.new-flow": {"yes": 9, "no": 0}}),
    );
    assert_eq!(
        post(
            s,
            "/api/client/metrics",
            Some(&secret("client-all-prod")),
            prod
        )
        .await
        .0,
        202
    );
}

/// The rows forwarded: summed per app, flag, environment and hour, each environment with its
/// own token.
fn assert_forwarded_rows(up: &FakeUpstream, dev: &str) {
    let rows = forwarded_rows(up, 0);
    let find = |app: &str, flag: &str, ts: &str| {
        rows.iter()
            .find(|(_, m)| m["appName"] == app && m["featureName"] == flag && m["timestamp"] == ts)
            .cloned()
            .unwrap_or_else(|| panic!("no row {app} {flag} {ts} in {rows:?}"))
    };
    let (auth, on) = find("app-1", "simple.on", "2026-11-28T04:00:00.000Z");
    assert_eq!(auth.as_deref(), Some(dev));
    assert_eq!(
        (
            on["yes"].as_u64(),
            on["no"].as_u64(),
            on["environment"].as_str()
        ),
        (Some(15), Some(1), Some("development"))
    );
    assert_eq!(
        find("app-1", "simple.on", "2026-11-28T05:00:00.000Z").1["yes"],
        1
    );
    assert_eq!(
        find("app-1", "variants.color", "2026-11-28T04:00:00.000Z").1["variants"],
        json!({"red": 4, "blue": 4})
    );
    assert_eq!(
        find("web", "variants.color", "2026-11-28T04:00:00.000Z").1["variants"],
        json!({"red": 2, "blue": 1, "disabled": 1})
    );
    let (auth, checkout) = find("app-1", "checkout.new-flow", "2026-11-28T04:00:00.000Z");
    assert_eq!(
        auth.as_deref(),
        Some(secret("client-all-prod").as_str()),
        "each environment with its own token"
    );
    assert_eq!(checkout["environment"], "production");
}

/// The applications forwarded (flagpost added to `connectVia`), and flagpost's own
/// registration once per startup scope.
fn assert_applications(up: &FakeUpstream) {
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
    let app1 = apps.iter().find(|a| a["appName"] == "app-1").unwrap();
    assert_eq!(
        app1["connectVia"],
        json!([{"appName": "edge-a", "instanceId": "e-1"}, {"appName": "flagpost", "instanceId": "fp-test-1"}])
    );
    assert_eq!(app1["sdkVersion"], "unleash-client-node:6.12.1");
    assert_eq!(app1["environment"], "development");
    assert_eq!(app1["projects"], json!(["*"]));
    let web = apps.iter().find(|a| a["appName"] == "web").unwrap();
    assert_eq!(web["sdkType"], "frontend");
    // flagpost registered itself once per startup scope.
    let own: Vec<_> = up
        .requests_to("/api/client/register")
        .into_iter()
        .filter(|r| r.json()["appName"] == "flagpost")
        .collect();
    assert_eq!(own.len(), 2);
    assert!(own.iter().all(|r| r.json()["sdkVersion"]
        .as_str()
        .unwrap()
        .starts_with("flagpost:")));
}

#[tokio::test]
async fn usage_is_summed_and_forwarded_with_the_right_token() {
    let up = FakeUpstream::start().await;
    let s = start(&up, &["client-all-dev", "client-all-prod"], FAST).await;
    let dev = secret("client-all-dev");
    let at = "2026-11-28T04:19:03.998Z";
    post_server_usage(&s, &dev, at).await;
    post_frontend_and_prod_usage(&s, at).await;
    eventually("everything forwarded", || async {
        total(&forwarded_rows(&up, 0)) == 10 + 7 + 6 + 1 + 1 + 4 + 9
    })
    .await;
    assert_forwarded_rows(&up, &dev);
    assert_applications(&up);
    let received = metric(&s, "flagpost_usage_evaluations_total{stage=\"received\"}").await;
    let forwarded = metric(&s, "flagpost_usage_evaluations_total{stage=\"forwarded\"}").await;
    assert_eq!((received, forwarded), (Some(38.0), Some(38.0)));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_503_is_retried_and_delivered_once() {
    let up = FakeUpstream::start().await;
    up.state.lock().unwrap().metrics_status = vec![503];
    let s = start(&up, &["client-all-dev"], FAST).await;
    let body = metrics_body(
        "app",
        "2026-11-28T04:00:00Z",
        json!({"simple.on": {"yes": 3, "no": 2}}),
    );
    assert_eq!(
        post(
            &s,
            "/api/client/metrics",
            Some(&secret("client-all-dev")),
            body
        )
        .await
        .0,
        202
    );
    eventually("delivered", || async {
        up.requests_to("/api/client/metrics/bulk").len() >= 2
    })
    .await;
    let bulk = up.requests_to("/api/client/metrics/bulk");
    assert_eq!(bulk[0].body, bulk[1].body, "the same body again");
    assert_eq!(total(&forwarded_rows(&up, 1)), 5, "delivered once");
    eventually("counted", || async {
        metric(&s, "flagpost_usage_rows_forwarded_total").await == Some(1.0)
    })
    .await;
    s.stop().await.unwrap();
    assert_eq!(
        up.requests_to("/api/client/metrics/bulk").len(),
        2,
        "nothing sent twice"
    );
}

#[tokio::test]
async fn a_400_is_dropped_and_counted() {
    let up = FakeUpstream::start().await;
    up.state.lock().unwrap().metrics_status = vec![400];
    let s = start(&up, &["client-all-dev"], FAST).await;
    let body = metrics_body(
        "app",
        "2026-11-28T04:00:00Z",
        json!({"simple.on": {"yes": 3, "no": 2}, "simple.off": {"yes": 0, "no": 1}}),
    );
    assert_eq!(
        post(
            &s,
            "/api/client/metrics",
            Some(&secret("client-all-dev")),
            body
        )
        .await
        .0,
        202
    );
    eventually("dropped", || async {
        metric(&s, "flagpost_usage_rows_dropped_total{reason=\"rejected\"}").await == Some(2.0)
    })
    .await;
    assert_eq!(
        metric(&s, "flagpost_usage_evaluations_total{stage=\"dropped\"}").await,
        Some(6.0)
    );
    assert_eq!(metric(&s, "flagpost_usage_buffer_entries").await, Some(0.0));
    s.stop().await.unwrap();
    assert_eq!(
        up.requests_to("/api/client/metrics/bulk").len(),
        1,
        "not retried"
    );
}

#[tokio::test]
async fn shutdown_flushes_what_is_buffered() {
    let up = FakeUpstream::start().await;
    let s = start(&up, &["client-all-dev"], "[usage]\ninterval = \"1h\"\n").await;
    let body = metrics_body(
        "app",
        "2026-11-28T04:00:00Z",
        json!({"simple.on": {"yes": 4, "no": 0}}),
    );
    assert_eq!(
        post(
            &s,
            "/api/client/metrics",
            Some(&secret("client-all-dev")),
            body
        )
        .await
        .0,
        202
    );
    assert!(up.requests_to("/api/client/metrics/bulk").is_empty());
    s.stop().await.unwrap();
    assert_eq!(total(&forwarded_rows(&up, 0)), 4);
}

#[tokio::test]
async fn many_concurrent_posts_arrive_complete() {
    let up = FakeUpstream::start().await;
    let s = start(&up, &["client-all-dev"], "[usage]\ninterval = \"10ms\"\n").await;
    let token = secret("client-all-dev");
    let flags = [
        "simple.on",
        "simple.off",
        "rollout.50",
        "variants.color",
        "users.allowlist",
    ];
    let mut handles = Vec::new();
    for task in 0..40u64 {
        let url = s.url("/api/client/metrics");
        let token = token.clone();
        handles.push(tokio::spawn(async move {
            let http = client();
            let mut sent = 0u64;
            for n in 0..25u64 {
                let flag = flags[((task + n) % 5) as usize];
                let (yes, no) = ((task * 7 + n) % 11, (task + n * 3) % 5);
                sent += yes + no;
                let hour = if n % 2 == 0 {
                    "2026-11-28T04:10:00Z"
                } else {
                    "2026-11-28T05:10:00Z"
                };
                let body = metrics_body(
                    &format!("app-{}", task % 3),
                    hour,
                    json!({flag: {"yes": yes, "no": no, "variants": {"v": yes}}}),
                );
                let r = http
                    .post(&url)
                    .header("Authorization", &token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
            }
            sent
        }));
    }
    let mut sent = 0;
    for h in handles {
        sent += h.await.unwrap();
    }
    s.stop().await.unwrap();
    let rows = forwarded_rows(&up, 0);
    assert_eq!(total(&rows), sent, "totals upstream equal totals sent");
    let variants: u64 = rows
        .iter()
        .map(|(_, m)| m["variants"]["v"].as_u64().unwrap_or(0))
        .sum();
    let yes: u64 = rows.iter().map(|(_, m)| m["yes"].as_u64().unwrap()).sum();
    assert_eq!(variants, yes);
    let bodies = up.requests_to("/api/client/metrics/bulk").len();
    assert!(
        bodies > 1,
        "forwarded while posts went on ({bodies} bodies)"
    );
    eprintln!("usage load: {} evaluations sent in 1000 posts, {} forwarded in {} rows over {bodies} bulk bodies", sent, total(&rows), rows.len());
}
