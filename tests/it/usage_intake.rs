//! What the usage endpoints take in: tokens and bodies checked (CORS preflights included),
//! usage for an environment flagpost has no token for dropped and counted, and offline mode
//! counting and discarding.

use serde_json::json;

use crate::harness::*;
use crate::upstream::{secret, FakeUpstream};
use crate::usage::*;

/// Usage endpoints take the token their SDK kind uses, within the startup scopes.
#[tokio::test]
async fn usage_endpoints_check_tokens() {
    let up = FakeUpstream::start().await;
    let s = start(&up, &["client-all-dev"], FAST).await;
    let good = metrics_body(
        "app",
        "2026-11-28T04:00:00Z",
        json!({"simple.on": {"yes": 1, "no": 0}}),
    );
    let client = secret("client-all-dev");
    let frontend = secret("frontend-all-dev");
    assert_eq!(
        post(
            &s,
            "/api/frontend/client/metrics",
            Some(&client),
            good.clone()
        )
        .await
        .2["error"],
        "token_wrong_type"
    );
    assert_eq!(
        post(&s, "/api/client/metrics", Some(&frontend), good.clone())
            .await
            .2["error"],
        "token_wrong_type"
    );
    assert_eq!(
        post(&s, "/api/client/register", Some(&frontend), "{}")
            .await
            .2["error"],
        "token_wrong_type"
    );
    assert_eq!(
        post(&s, "/api/client/metrics", None, good.clone()).await.0,
        401
    );
    assert_eq!(
        post(
            &s,
            "/api/client/metrics",
            Some(&secret("client-all-prod")),
            good.clone()
        )
        .await
        .2["error"],
        "scope_not_covered"
    );
    s.stop().await.unwrap();
}

/// Usage bodies are checked: what is missing is named; bulk rows for another environment are
/// dropped and counted; the browser's preflight is answered.
#[tokio::test]
async fn usage_bodies_are_checked() {
    let up = FakeUpstream::start().await;
    let s = start(&up, &["client-all-dev"], FAST).await;
    let client = secret("client-all-dev");
    let (status, _, body) =
        post(&s, "/api/client/metrics", Some(&client), r#"{"bucket":{}}"#).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("`appName` is required"),
        "{body}"
    );
    let (status, _, body) = post(
        &s,
        "/api/client/metrics/bulk",
        Some(&client),
        r#"{"applications":[]}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap().contains("`metrics`"),
        "{body}"
    );
    let (status, _, _) = post(&s, "/api/client/metrics", Some(&client), "{not json").await;
    assert_eq!(status, 400);
    // Bulk rows for another environment are dropped, like the server does, and counted.
    let bulk = json!({"applications": [], "metrics": [
        {"featureName": "simple.on", "appName": "a", "environment": "development", "timestamp": "2026-11-28T04:00:00Z", "yes": 1, "no": 0, "variants": {}},
        {"featureName": "simple.on", "appName": "a", "environment": "production", "timestamp": "2026-11-28T04:00:00Z", "yes": 1, "no": 0, "variants": {}},
    ]});
    assert_eq!(
        post(
            &s,
            "/api/client/metrics/bulk",
            Some(&client),
            bulk.to_string()
        )
        .await
        .0,
        202
    );
    assert_eq!(
        metric(
            &s,
            "flagpost_usage_rows_dropped_total{reason=\"environment_mismatch\"}"
        )
        .await,
        Some(1.0)
    );
    let r = client_preflight(&s, "/api/frontend/client/metrics").await;
    assert_eq!(r, 204);
    s.stop().await.unwrap();
}

async fn client_preflight(s: &Server, path: &str) -> u16 {
    client()
        .request(reqwest::Method::OPTIONS, s.url(path))
        .header("Origin", "http://example.test")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn usage_for_an_environment_without_a_token_is_dropped_and_counted() {
    let up = FakeUpstream::start().await;
    let s = start(&up, &["client-all-dev"], FAST).await;
    let client = secret("client-all-dev");
    up.revoke(&client);
    // The post is accepted with the (still cached) token before the revocation is noticed,
    // or refused after it; either way nothing is lost silently.
    let body = metrics_body(
        "app",
        "2026-11-28T04:00:00Z",
        json!({"simple.on": {"yes": 2, "no": 0}}),
    );
    let status = post(&s, "/api/client/metrics", Some(&client), body).await.0;
    if status == 202 {
        eventually("dropped for want of a token", || async {
            metric(&s, "flagpost_usage_rows_dropped_total{reason=\"no_token\"}").await == Some(1.0)
        })
        .await;
    } else {
        assert_eq!(status, 403);
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn offline_mode_counts_and_discards() {
    let s = Server::start(
        &crate::offline::config(""),
        &[("features.json", crate::offline::FEATURES)],
    )
    .await;
    s.wait_ready().await;
    let body = metrics_body(
        "app",
        "2026-11-28T04:00:00Z",
        json!({"d.on": {"yes": 2, "no": 1}}),
    );
    assert_eq!(
        post(
            &s,
            "/api/client/metrics",
            Some(crate::offline::CLIENT_DEFAULT_DEV),
            body.clone()
        )
        .await
        .0,
        202
    );
    assert_eq!(
        post(
            &s,
            "/api/frontend/client/metrics",
            Some(crate::offline::FRONTEND_DEFAULT_DEV),
            body
        )
        .await
        .0,
        202
    );
    assert_eq!(
        metric(&s, "flagpost_usage_rows_dropped_total{reason=\"offline\"}").await,
        Some(2.0)
    );
    assert_eq!(metric(&s, "flagpost_usage_buffer_entries").await, Some(0.0));
    s.stop().await.unwrap();
}
