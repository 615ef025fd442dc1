//! Offline mode end to end: the error table, readiness, the scope rule, the Client API,
//! reload, the operations endpoints (ETags: protocol.rs).

use crate::harness::*;

pub const FEATURES: &str = r#"{"version":2,"features":[
  {"name":"d.on","project":"default","enabled":true,"strategies":[{"name":"default"}]},
  {"name":"d.off","project":"default","enabled":false,"strategies":[{"name":"default"}]},
  {"name":"d.variant","project":"default","enabled":true,"impressionData":true,"strategies":[{"name":"default"}],
   "variants":[{"name":"blue","weight":1000,"stickiness":"default","payload":{"type":"string","value":"b"}}]},
  {"name":"d.users","project":"default","enabled":true,"strategies":[{"name":"userWithId","parameters":{"userIds":"alice"}}]},
  {"name":"c.on","project":"checkout","enabled":true,"strategies":[{"name":"default"}]},
  {"name":"m.on","project":"mobile","enabled":true,"strategies":[{"name":"default"}]}
]}"#;

pub const CLIENT_DEFAULT_DEV: &str = "default:development.client-default-dev-0001";
pub const CLIENT_CHECKOUT_DEV: &str = "checkout:development.client-checkout-dev-0002";
pub const CLIENT_ALL_PROD: &str = "*:production.client-all-prod-0003";
pub const FRONTEND_DEFAULT_DEV: &str = "default:development.frontend-default-dev-0004";
pub const FRONTEND_UNION_DEV: &str = "[]:development.frontend-union-dev-0005";
pub const FRONTEND_MISSING_PROJECT: &str = "[]:development.frontend-missing-0006";
pub const FRONTEND_ALL_DEV: &str = "*:development.frontend-all-dev-0007";
pub const FRONTEND_STAGING: &str = "default:staging.frontend-staging-0008";
pub const FRONTEND_ALL_PROD: &str = "*:production.frontend-all-prod-0009";
pub const KEY_OK: &str = "proxy-key-ok-0010";
pub const KEY_OTHER_ENV: &str = "proxy-key-staging-0011";

pub fn config(extra_server: &str) -> String {
    format!(
        r#"
mode = "offline"
[server]
{extra_server}
[offline]
features_file = "features.json"
reload_interval = "50ms"
client_tokens = ["{CLIENT_DEFAULT_DEV}", "{CLIENT_CHECKOUT_DEV}", "{CLIENT_ALL_PROD}"]
frontend_tokens = [
  "{FRONTEND_DEFAULT_DEV}",
  {{ token = "{FRONTEND_UNION_DEV}", projects = ["default", "checkout"] }},
  {{ token = "{FRONTEND_MISSING_PROJECT}", projects = ["default", "mobile"] }},
  "{FRONTEND_ALL_DEV}",
  "{FRONTEND_STAGING}",
  "{FRONTEND_ALL_PROD}",
]
[[offline.client_keys]]
key = "{KEY_OK}"
environment = "development"
projects = ["default"]
[[offline.client_keys]]
key = "{KEY_OTHER_ENV}"
environment = "staging"
projects = ["*"]
"#
    )
}

pub async fn start() -> Server {
    let s = Server::start(&config(""), &[("features.json", FEATURES)]).await;
    s.wait_ready().await;
    s
}

pub fn assert_error(
    result: &(u16, reqwest::header::HeaderMap, serde_json::Value),
    status: u16,
    code: &str,
) {
    let (s, h, body) = result;
    assert_eq!(*s, status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert_eq!(h["content-type"], "application/json");
}

type ErrorRow = (
    &'static str,
    &'static str,
    Option<&'static str>,
    &'static str,
    u16,
    &'static str,
);

/// The rows of the error table a request to the offline server can meet: method, path,
/// token, body, then the status and error code answered.
const ERROR_ROWS: &[ErrorRow] = &[
    ("GET", "/api/frontend", None, "", 401, "token_missing"),
    (
        "GET",
        "/api/client/features",
        None,
        "",
        401,
        "token_missing",
    ),
    (
        "GET",
        "/api/frontend",
        Some("Bearer "),
        "",
        401,
        "token_missing",
    ),
    (
        "GET",
        "/api/frontend",
        Some("*:development.unknown-secret"),
        "",
        401,
        "token_invalid",
    ),
    (
        "GET",
        "/api/frontend",
        Some("garbage"),
        "",
        401,
        "token_invalid",
    ),
    (
        "GET",
        "/api/client/features",
        Some("*:*.admin-secret"),
        "",
        403,
        "token_wrong_type",
    ),
    (
        "GET",
        "/api/frontend",
        Some("user:abcdef"),
        "",
        403,
        "token_wrong_type",
    ),
    (
        "GET",
        "/api/frontend",
        Some(CLIENT_DEFAULT_DEV),
        "",
        403,
        "token_wrong_type",
    ),
    (
        "GET",
        "/api/client/features",
        Some(FRONTEND_DEFAULT_DEV),
        "",
        403,
        "token_wrong_type",
    ),
    (
        "GET",
        "/api/client/features",
        Some(KEY_OK),
        "",
        403,
        "token_wrong_type",
    ),
    (
        "GET",
        "/api/frontend",
        Some(FRONTEND_ALL_DEV),
        "",
        403,
        "scope_not_covered",
    ),
    (
        "POST",
        "/api/frontend",
        Some(FRONTEND_DEFAULT_DEV),
        "{\"userId\":",
        400,
        "bad_request",
    ),
    (
        "POST",
        "/api/frontend",
        Some(FRONTEND_DEFAULT_DEV),
        "{\"userId\":[1]}",
        400,
        "bad_request",
    ),
    (
        "GET",
        "/api/frontend?properties[x=1",
        Some(FRONTEND_DEFAULT_DEV),
        "",
        400,
        "bad_request",
    ),
    (
        "GET",
        "/api/nope",
        Some(FRONTEND_DEFAULT_DEV),
        "",
        404,
        "not_found",
    ),
    (
        "GET",
        "/api/client/features/no.such.flag",
        Some(CLIENT_DEFAULT_DEV),
        "",
        404,
        "not_found",
    ),
];

#[tokio::test]
async fn every_row_of_the_error_table() {
    let s = start().await;
    for (method, path, token, body, status, code) in ERROR_ROWS {
        let answer = match *method {
            "GET" => get(&s, path, *token).await,
            _ => post(&s, path, *token, *body).await,
        };
        assert_error(&answer, *status, code);
    }
    let malformed = get(&s, "/api/frontend", Some("default:development")).await;
    assert_error(&malformed, 401, "token_invalid");
    assert!(malformed.2["message"]
        .as_str()
        .unwrap()
        .contains("no `.` before the secret"));
    let big = format!("{{\"userId\":\"{}\"}}", "x".repeat(2 << 20));
    assert_error(
        &post(&s, "/api/frontend", Some(FRONTEND_DEFAULT_DEV), big).await,
        413,
        "payload_too_large",
    );
    let wrong_method = post(
        &s,
        "/api/client/features/d.on",
        Some(CLIENT_DEFAULT_DEV),
        "",
    )
    .await;
    assert_error(&wrong_method, 405, "method_not_allowed");
    assert_eq!(wrong_method.1["allow"], "GET, HEAD");
    // Nothing in any error body repeats a token's secret.
    for token in [FRONTEND_ALL_DEV, CLIENT_DEFAULT_DEV] {
        let (_, _, body) = get(&s, "/api/frontend", Some(token)).await;
        assert!(!body
            .to_string()
            .contains(&token[token.find('.').unwrap() + 1..]));
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn not_ready_until_the_features_file_is_usable() {
    let s = Server::start(&config(""), &[("features.json", "{ broken")]).await;
    let r = get(&s, "/api/frontend", Some(FRONTEND_DEFAULT_DEV)).await;
    assert_error(&r, 503, "not_ready");
    assert_eq!(r.1["retry-after"], "5");
    assert_eq!(get(&s, "/ready", None).await.0, 503);
    assert_eq!(get(&s, "/health", None).await.0, 200);
    std::fs::write(s.path("features.json"), FEATURES).unwrap();
    s.wait_ready().await;
    assert_eq!(
        get(&s, "/api/frontend", Some(FRONTEND_DEFAULT_DEV)).await.0,
        200
    );
    s.stop().await.unwrap();
}

/// Frontend tokens the client tokens do not cover: 403 scope_not_covered, saying what is
/// missing.
async fn assert_not_covered(s: &Server) {
    // Not covered: a missing project.
    let r = get(s, "/api/frontend", Some(FRONTEND_MISSING_PROJECT)).await;
    assert_error(&r, 403, "scope_not_covered");
    let msg = r.2["message"].as_str().unwrap();
    assert!(
        msg.contains("mobile") && msg.contains("\"development\""),
        "{msg}"
    );
    // Not covered: `*` frontend token against project-scoped client tokens.
    let r = get(s, "/api/frontend", Some(FRONTEND_ALL_DEV)).await;
    assert_error(&r, 403, "scope_not_covered");
    assert!(r.2["message"].as_str().unwrap().contains("all projects"));
    // Not covered: another environment, for a token and for a client key.
    for token in [FRONTEND_STAGING, KEY_OTHER_ENV] {
        let r = get(s, "/api/frontend", Some(token)).await;
        assert_error(&r, 403, "scope_not_covered");
        assert!(r.2["message"].as_str().unwrap().contains("\"staging\""));
    }
}

#[tokio::test]
async fn the_scope_rule() {
    let s = start().await;
    // Covered by one client token.
    let (status, _, body) = get(&s, "/api/frontend/all", Some(FRONTEND_DEFAULT_DEV)).await;
    assert_eq!(status, 200);
    assert_eq!(
        toggle_names(&body),
        ["d.on", "d.off", "d.variant", "d.users"]
    );
    // Covered only by the union of two client tokens.
    let (status, _, body) = get(&s, "/api/frontend", Some(FRONTEND_UNION_DEV)).await;
    assert_eq!(status, 200);
    assert_eq!(toggle_names(&body), ["d.on", "d.variant", "c.on"]);
    // A client key, narrower than the client tokens.
    let (status, _, body) = get(&s, "/api/frontend", Some(KEY_OK)).await;
    assert_eq!(
        (status, toggle_names(&body)),
        (200, vec!["d.on".to_string(), "d.variant".into()])
    );
    // All projects in production, served by a `*` client token.
    let (status, _, body) = get(&s, "/api/proxy", Some(FRONTEND_ALL_PROD)).await;
    assert_eq!(
        (status, toggle_names(&body)),
        (
            200,
            vec![
                "d.on".to_string(),
                "d.variant".into(),
                "c.on".into(),
                "m.on".into()
            ]
        )
    );

    assert_not_covered(&s).await;
    // The single-flag route applies the same rule and the token's projects.
    assert_eq!(
        get(&s, "/api/frontend/features/c.on", Some(FRONTEND_UNION_DEV))
            .await
            .0,
        200
    );
    assert_eq!(
        get(
            &s,
            "/api/frontend/features/c.on",
            Some(FRONTEND_DEFAULT_DEV)
        )
        .await
        .0,
        404
    );
    assert_eq!(
        get(&s, "/api/frontend/features/d.on", Some(FRONTEND_ALL_DEV))
            .await
            .0,
        403
    );

    let refused = metric(
        &s,
        "flagpost_token_decisions_total{result=\"scope_not_covered\"}",
    )
    .await;
    assert_eq!(refused, Some(5.0));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn client_api_filters_and_serves_features_as_received() {
    let s = start().await;
    let (status, h, body) = get(&s, "/api/client/features", Some(CLIENT_DEFAULT_DEV)).await;
    assert_eq!(status, 200);
    assert_eq!(
        feature_names(&body),
        ["d.on", "d.off", "d.variant", "d.users"]
    );
    assert_eq!(body["version"], 2);
    assert_eq!(body["features"][2]["variants"][0]["payload"]["value"], "b");
    assert!(h["etag"].to_str().unwrap().starts_with('"'));
    let (_, _, body) = get(&s, "/api/client/features", Some(CLIENT_ALL_PROD)).await;
    assert_eq!(feature_names(&body).len(), 6);
    let (_, _, body) = get(
        &s,
        "/api/client/features?project=checkout",
        Some(CLIENT_ALL_PROD),
    )
    .await;
    assert_eq!(feature_names(&body), ["c.on"]);
    let (_, _, body) = get(
        &s,
        "/api/client/features?project=checkout",
        Some(CLIENT_DEFAULT_DEV),
    )
    .await;
    assert!(
        feature_names(&body).is_empty(),
        "a query never widens the token's projects"
    );
    let (_, _, body) = get(
        &s,
        "/api/client/features?namePrefix=d.v",
        Some(CLIENT_ALL_PROD),
    )
    .await;
    assert_eq!(feature_names(&body), ["d.variant"]);
    let (status, _, body) = get(&s, "/api/client/features/d.users", Some(CLIENT_DEFAULT_DEV)).await;
    assert_eq!((status, body["name"].as_str()), (200, Some("d.users")));
    assert_eq!(
        get(&s, "/api/client/features/c.on", Some(CLIENT_DEFAULT_DEV))
            .await
            .0,
        404
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn the_features_file_is_reloaded_and_a_broken_one_keeps_the_last_good() {
    let s = start().await;
    let failures = "flagpost_snapshot_load_failures_total{source=\"file\"}";
    assert_eq!(metric(&s, failures).await, None);
    let changed = FEATURES.replace(
        r#""name":"d.off","project":"default","enabled":false"#,
        r#""name":"d.off","project":"default","enabled":true"#,
    );
    std::fs::write(s.path("features.json"), &changed).unwrap();
    eventually("the change is served", || async {
        let (_, _, b) = get(&s, "/api/frontend", Some(FRONTEND_DEFAULT_DEV)).await;
        toggle_names(&b).contains(&"d.off".to_string())
    })
    .await;
    std::fs::write(s.path("features.json"), "{\"features\": [{\"name\": ").unwrap();
    eventually("the broken file is counted", || async {
        metric(&s, failures).await == Some(1.0)
    })
    .await;
    let (status, _, b) = get(&s, "/api/frontend", Some(FRONTEND_DEFAULT_DEV)).await;
    assert_eq!(status, 200);
    assert!(
        toggle_names(&b).contains(&"d.off".to_string()),
        "still the last good features"
    );
    assert_eq!(get(&s, "/ready", None).await.0, 200);
    // The simple format works too.
    std::fs::write(
        s.path("features.json"),
        r#"{"d.on":{"enabled":true,"variant":"green"},"x":{"enabled":false}}"#,
    )
    .unwrap();
    eventually("the simple format is served", || async {
        let (_, _, b) = get(&s, "/api/frontend/all", Some(FRONTEND_DEFAULT_DEV)).await;
        toggle_names(&b) == ["d.on", "x"]
    })
    .await;
    let (_, _, b) = get(
        &s,
        "/api/frontend/features/d.on",
        Some(FRONTEND_DEFAULT_DEV),
    )
    .await;
    assert_eq!(b["variant"]["name"], "green");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn operations_endpoints() {
    let s = start().await;
    for path in ["/health", "/internal-backstage/health"] {
        let (status, _, body) = get(&s, path, None).await;
        assert_eq!((status, body["health"].as_str()), (200, Some("GOOD")));
    }
    for path in ["/ready", "/internal-backstage/ready"] {
        assert_eq!(get(&s, path, None).await.0, 200);
    }
    get(&s, "/api/frontend", Some(FRONTEND_DEFAULT_DEV)).await;
    let text = metrics_text(&s, "/internal-backstage/metrics")
        .await
        .unwrap();
    for needle in [
        "flagpost_http_requests_total{method=\"GET\",route=\"/api/frontend\",status=\"2xx\"} 1",
        "flagpost_http_request_duration_seconds_bucket{route=\"/api/frontend\"",
        "flagpost_token_decisions_total{result=\"allowed\"}",
        "flagpost_snapshot_features{environment=\"development\"} 6",
        "flagpost_snapshot_features{environment=\"production\"} 6",
        "flagpost_snapshot_last_load_timestamp_seconds{environment=\"development\"}",
        "flagpost_ready 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert!(
        !text.contains("frontend-default-dev-0004"),
        "no secret in metrics"
    );
    s.stop().await.unwrap();
}
