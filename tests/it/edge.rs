//! Edge mode against the scripted fake upstream: the exact requests flagpost makes, the scope
//! rule with tokens validated upstream, readiness and startup errors, the last good features
//! kept whatever upstream does, chaining. Request tokens and revocation: edge_tokens.rs.

use std::time::Duration;

use crate::harness::*;
use crate::upstream::{secret, Behaviour, FakeToken, FakeUpstream};

pub fn edge_config(upstream: &str, tokens: &[String], extra: &str) -> String {
    let list = tokens
        .iter()
        .map(|t| format!("\"{t}\""))
        .collect::<Vec<_>>()
        .join(", ");
    // Defaults for the tests, unless `extra` sets the key itself.
    let defaults: String = [
        ("refresh_interval", "\"100ms\""),
        ("upstream_request_timeout", "\"500ms\""),
        ("upstream_connect_timeout", "\"500ms\""),
        (
            "custom_client_headers",
            "[\"X-Api-Key: custom-header-secret-77\"]",
        ),
    ]
    .iter()
    .filter(|(key, _)| !extra.contains(&format!("{key} =")))
    .map(|(key, value)| format!("{key} = {value}\n"))
    .collect();
    format!(
        r#"
mode = "edge"
[edge]
upstream_url = "{upstream}"
tokens = [{list}]
{defaults}{extra}
"#
    )
}

pub async fn start_edge(up: &FakeUpstream, tokens: &[&str], extra: &str) -> Server {
    let tokens: Vec<String> = tokens.iter().map(|n| secret(n)).collect();
    Server::start(&edge_config(&up.url(), &tokens, extra), &[]).await
}

pub fn frontend_names(body: &serde_json::Value) -> Vec<String> {
    toggle_names(body)
}

#[tokio::test]
async fn the_exact_requests_flagpost_makes() {
    let up = FakeUpstream::start().await;
    let s = start_edge(&up, &["client-all-dev", "client-multi-prod"], "").await;
    s.wait_ready().await;
    // Wait for at least one conditional poll per token.
    eventually("conditional polls", || async {
        up.requests_to("/api/client/features")
            .iter()
            .filter(|r| r.header("if-none-match").is_some())
            .count()
            >= 2
    })
    .await;
    let all = up.requests();
    let validate = &all[0];
    assert_eq!(
        (validate.method.as_str(), validate.path.as_str()),
        ("POST", "/edge/validate")
    );
    assert_eq!(
        validate.header("authorization"),
        None,
        "no Authorization on /edge/validate"
    );
    assert_eq!(validate.header("content-type"), Some("application/json"));
    assert_eq!(
        validate.json()["tokens"],
        serde_json::json!([secret("client-all-dev"), secret("client-multi-prod")])
    );
    for r in &all {
        assert_eq!(r.header("unleash-appname"), Some("flagpost"), "{}", r.path);
        assert!(r
            .header("unleash-instanceid")
            .is_some_and(|v| v.starts_with("flagpost-")));
        assert_eq!(r.header("unleash-connection-id").map(str::len), Some(36));
        assert!(r
            .header("unleash-sdk")
            .is_some_and(|v| v.starts_with("flagpost:")));
        assert!(r.header("unleash-client-spec").is_some());
        assert!(r
            .header("user-agent")
            .is_some_and(|v| v.starts_with("flagpost/")));
        assert_eq!(r.header("x-api-key"), Some("custom-header-secret-77"));
    }
    let fetches = up.requests_to("/api/client/features");
    for name in ["client-all-dev", "client-multi-prod"] {
        let mine: Vec<_> = fetches
            .iter()
            .filter(|r| r.header("authorization") == Some(secret(name).as_str()))
            .collect();
        assert!(mine.len() >= 2, "{name}");
        assert_eq!(
            mine[0].header("if-none-match"),
            None,
            "first fetch is unconditional"
        );
        // The server's 304 has no headers: flagpost keeps sending the ETag of the last 200.
        let etags: Vec<_> = mine[1..]
            .iter()
            .map(|r| r.header("if-none-match").unwrap().to_string())
            .collect();
        assert!(
            etags
                .iter()
                .all(|e| e.ends_with(":64:v1\"") && e == &etags[0]),
            "{etags:?}"
        );
    }
    s.stop().await.unwrap();
}

/// Tokens beyond the fixtures' for the scope rule: a client token for one project, frontend
/// tokens covered only by two startup tokens together, not covered, in another environment.
fn add_scope_tokens(up: &FakeUpstream) {
    let client = |secret: &str, env: &str, projects: &[&str]| FakeToken {
        secret: secret.into(),
        kind: "client".into(),
        environment: env.into(),
        projects: projects.iter().map(|p| p.to_string()).collect(),
    };
    let frontend = |secret: &str, env: &str, projects: &[&str]| FakeToken {
        kind: "frontend".into(),
        ..client(secret, env, projects)
    };
    up.add_token(client(
        "checkout:development.extra-client-0001",
        "development",
        &["checkout"],
    ));
    up.add_token(frontend(
        "[]:development.union-front-0002",
        "development",
        &["default", "checkout"],
    ));
    up.add_token(frontend(
        "[]:development.missing-front-0003",
        "development",
        &["default", "search"],
    ));
    up.add_token(frontend(
        "default:staging.staging-front-0004",
        "staging",
        &["default"],
    ));
}

/// Tokens the startup tokens do not cover are 403 scope_not_covered, client tokens as much as
/// frontend ones; tokens of the wrong type are token_wrong_type, unknown ones token_invalid.
async fn assert_refused_beyond_the_startup_scopes(s: &Server) {
    // Not covered.
    for (token, needle) in [
        ("[]:development.missing-front-0003".to_string(), "search"),
        (secret("frontend-all-dev"), "all projects"),
        (secret("frontend-all-prod"), "all projects"),
        (
            "default:staging.staging-front-0004".to_string(),
            "\"staging\"",
        ),
    ] {
        let (status, _, body) = get(s, "/api/frontend", Some(&token)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (403, Some("scope_not_covered")),
            "{token}"
        );
        assert!(body["message"].as_str().unwrap().contains(needle), "{body}");
    }
    // Client tokens other than the startup ones: same rule.
    assert_eq!(
        get(s, "/api/client/features", Some(&secret("backend-all-dev")))
            .await
            .0,
        403
    );
    let (status, _, body) = get(
        s,
        "/api/client/features",
        Some(&secret("init-backend-default-dev")),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(feature_names(&body).len(), 9);
    // Wrong types, unknown tokens.
    assert_eq!(
        get(s, "/api/frontend", Some(&secret("client-default-dev")))
            .await
            .2["error"],
        "token_wrong_type"
    );
    assert_eq!(
        get(s, "/api/client/features", Some(&secret("init-admin")))
            .await
            .2["error"],
        "token_wrong_type"
    );
    assert_eq!(
        get(s, "/api/client/features", Some(&secret("pat-admin")))
            .await
            .2["error"],
        "token_wrong_type"
    );
    assert_eq!(
        get(s, "/api/frontend", Some("*:development.not-a-real-token"))
            .await
            .2["error"],
        "token_invalid"
    );
}

#[tokio::test]
async fn the_scope_rule_with_tokens_validated_upstream() {
    let up = FakeUpstream::start().await;
    add_scope_tokens(&up);
    let tokens = vec![
        secret("client-default-dev"),
        "checkout:development.extra-client-0001".into(),
        secret("client-multi-prod"),
    ];
    let s = Server::start(&edge_config(&up.url(), &tokens, ""), &[]).await;
    s.wait_ready().await;

    let (status, _, body) = get(&s, "/api/frontend", Some(&secret("frontend-default-dev"))).await;
    assert_eq!(status, 200);
    assert_eq!(
        frontend_names(&body),
        ["dependent.child", "simple.on", "variants.legacy"]
    );
    // `[]` token: its projects come from upstream.
    let (status, _, body) = get(
        &s,
        "/api/frontend?userId=alice",
        Some(&secret("frontend-multi-prod")),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        frontend_names(&body),
        ["checkout.new-flow", "search.v2", "checkout.express"]
    );
    // Covered only by the union of two startup tokens.
    let (status, _, body) = get(
        &s,
        "/api/frontend/all",
        Some("[]:development.union-front-0002"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(frontend_names(&body).contains(&"checkout.new-flow".to_string()));
    assert!(!frontend_names(&body).contains(&"search.v2".to_string()));
    assert_refused_beyond_the_startup_scopes(&s).await;
    s.stop().await.unwrap();
}

#[tokio::test]
async fn not_ready_while_upstream_is_down_at_start_then_ready() {
    let up = FakeUpstream::start().await;
    up.set(Behaviour::Down);
    let s = start_edge(&up, &["client-all-dev"], "").await;
    // Not ready while it tries: several attempts have been made and failed.
    eventually("a few attempts", || async {
        let series = "flagpost_upstream_requests_total{call=\"validate\",outcome=\"unreachable\"}";
        metric(&s, series).await.is_some_and(|n| n >= 2.0)
    })
    .await;
    assert_eq!(get(&s, "/ready", None).await.0, 503);
    assert_eq!(get(&s, "/health", None).await.0, 200);
    let (status, _, body) = get(&s, "/api/client/features", Some(&secret("client-all-dev"))).await;
    assert_eq!(status, 503, "{body}");
    up.set(Behaviour::Normal);
    s.wait_ready().await;
    assert_eq!(
        get(&s, "/api/client/features", Some(&secret("client-all-dev")))
            .await
            .0,
        200
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn no_usable_startup_token_is_a_clear_startup_error() {
    let up = FakeUpstream::start().await;
    // No pre-stop delay when flagpost cannot serve at all.
    let s = start_edge(
        &up,
        &["frontend-all-dev"],
        "[server]\nshutdown_delay = \"60s\"",
    )
    .await;
    let err = s.exited().await.unwrap_err().to_string();
    assert!(
        err.contains("none of the startup tokens is a valid client token"),
        "{err}"
    );
    let s = Server::start(
        &edge_config(&up.url(), &["*:development.deleted-0001".into()], ""),
        &[],
    )
    .await;
    assert!(s.exited().await.is_err());
}

#[tokio::test]
async fn keeps_serving_the_last_good_features_whatever_upstream_does() {
    let up = FakeUpstream::start().await;
    let s = start_edge(&up, &["client-all-dev"], "").await;
    s.wait_ready().await;
    let token = secret("frontend-all-dev");
    let path = "/api/frontend?userId=123";
    let (_, _, before) = get(&s, path, Some(&token)).await;
    up.state.lock().unwrap().only_features = true;
    for (behaviour, reason) in [
        (Behaviour::Status(500), "server_error"),
        (Behaviour::Garbage, "bad_body"),
        (Behaviour::Slow(Duration::from_secs(2)), "unreachable"),
        (Behaviour::Down, "unreachable"),
    ] {
        up.set(behaviour.clone());
        let series = format!(
            "flagpost_refresh_failures_total{{environment=\"development\",reason=\"{reason}\"}}"
        );
        let start = metric(&s, &series).await.unwrap_or(0.0);
        eventually(&format!("{behaviour:?} counted"), || async {
            metric(&s, &series).await.unwrap_or(0.0) > start
        })
        .await;
        let (status, _, now) = get(&s, path, Some(&token)).await;
        assert_eq!(status, 200, "{behaviour:?}");
        assert_eq!(now, before, "{behaviour:?}: the last good features");
        assert_eq!(get(&s, "/ready", None).await.0, 200);
    }
    up.set(Behaviour::Normal);
    // A flag changed upstream shows through flagpost within an interval or so.
    up.set_enabled("development", "simple.on", false);
    eventually("the change is visible", || async {
        let (_, _, b) = get(&s, path, Some(&token)).await;
        !frontend_names(&b).contains(&"simple.on".to_string())
    })
    .await;
    eventually("a 304 after the change", || async {
        metric(
            &s,
            "flagpost_upstream_requests_total{call=\"features\",outcome=\"not_modified\"}",
        )
        .await
        .is_some()
    })
    .await;
    let text = metrics_text(&s, "/metrics").await.unwrap();
    for needle in [
        "flagpost_upstream_requests_total{call=\"features\",outcome=\"ok\"}",
        "flagpost_upstream_requests_total{call=\"features\",outcome=\"not_modified\"}",
        "flagpost_upstream_requests_total{call=\"validate\",outcome=\"ok\"} 2",
        "flagpost_upstream_request_duration_seconds_bucket{call=\"features\"",
        "flagpost_last_sync_timestamp_seconds{environment=\"development\"}",
        "flagpost_snapshot_age_seconds{environment=\"development\"}",
        "flagpost_token_cache_entries{state=\"valid\"} 2",
        "flagpost_token_validations_total{result=\"valid\"} 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert!(
        !text.contains(&secret("client-all-dev")[14..]),
        "no secret in metrics"
    );
    assert!(!text.contains("custom-header-secret-77"));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn an_upstream_url_with_api_is_accepted() {
    let up = FakeUpstream::start().await;
    let tokens = vec![secret("client-all-dev")];
    let s = Server::start(
        &edge_config(&format!("{}/api/", up.url()), &tokens, ""),
        &[],
    )
    .await;
    s.wait_ready().await;
    assert_eq!(up.requests()[0].path, "/edge/validate");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn flagpost_chains_behind_flagpost() {
    let up = FakeUpstream::start().await;
    let first = start_edge(&up, &["client-all-dev", "client-multi-prod"], "").await;
    first.wait_ready().await;
    let tokens = vec![secret("client-all-dev")];
    let second = Server::start(&edge_config(&first.url(""), &tokens, ""), &[]).await;
    second.wait_ready().await;
    let (status, _, body) = get(
        &second,
        "/api/frontend?userId=123",
        Some(&secret("frontend-all-dev")),
    )
    .await;
    assert_eq!(status, 200);
    let (_, _, direct) = get(
        &first,
        "/api/frontend?userId=123",
        Some(&secret("frontend-all-dev")),
    )
    .await;
    assert_eq!(body, direct);
    let (status, _, features) = get(
        &second,
        "/api/client/features",
        Some(&secret("client-all-dev")),
    )
    .await;
    assert_eq!((status, feature_names(&features).len()), (200, 13));
    // The first flagpost answered /edge/validate only within its own scope.
    let (status, _, v) = post(
        &first,
        "/edge/validate",
        None,
        serde_json::json!({"tokens": [secret("frontend-all-dev"), secret("frontend-all-prod"), secret("frontend-multi-prod"), "nope"]}).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    let returned: Vec<&str> = v["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token"].as_str().unwrap())
        .collect();
    assert_eq!(
        returned,
        [secret("frontend-all-dev"), secret("frontend-multi-prod")]
    );
    assert_eq!(
        v["tokens"][1]["projects"],
        serde_json::json!(["checkout", "search"])
    );
    assert_eq!(v["tokens"][1]["type"], "frontend");
    let (status, _, e) = post(&first, "/edge/validate", None, "{}").await;
    assert_eq!((status, e["error"].as_str()), (400, Some("bad_request")));
    second.stop().await.unwrap();
    first.stop().await.unwrap();
}
