//! Unleash Edge's settings with Edge's meaning, against the running server (and the binary for
//! the ones read at start): the base path, the token headers, the allow and deny lists, trust
//! proxy, CORS lists, pretrusted tokens, instance data (the settings flagpost does not use:
//! edge_settings.rs).

use crate::cli::flagpost;
use crate::edge::edge_config;
use crate::harness::*;
use crate::offline::{config, CLIENT_DEFAULT_DEV, FEATURES, FRONTEND_DEFAULT_DEV};
use crate::upstream::{secret, FakeUpstream};

async fn status(s: &Server, path: &str, header: (&str, &str)) -> u16 {
    client()
        .get(s.url(path))
        .header(header.0, header.1)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn every_route_is_served_under_the_base_path_and_nowhere_else() {
    let s = Server::start(
        &config("base_path = \"unleash/\""),
        &[("features.json", FEATURES)],
    )
    .await;
    let auth = ("Authorization", FRONTEND_DEFAULT_DEV);
    crate::harness::eventually("ready under the base path", || async {
        status(&s, "/unleash/ready", auth).await == 200
    })
    .await;
    for (path, expected) in [
        ("/unleash/api/frontend", 200),
        ("/unleash/health", 200),
        ("/unleash/metrics", 200),
        ("/api/frontend", 404),
        ("/health", 404),
        ("/ready", 404),
        ("/metrics", 404),
        ("/unleashx/api/frontend", 404),
        ("/unleash", 404),
    ] {
        assert_eq!(status(&s, path, auth).await, expected, "{path}");
    }
    let (_, _, body) = get(&s, "/unleash/api/frontend", Some(FRONTEND_DEFAULT_DEV)).await;
    assert!(!toggle_names(&body).is_empty());
}

#[tokio::test]
async fn tokens_are_read_from_the_configured_header() {
    let s = Server::start(
        &config("token_header = \"X-Unleash-Token\""),
        &[("features.json", FEATURES)],
    )
    .await;
    s.wait_ready().await;
    assert_eq!(
        status(
            &s,
            "/api/frontend",
            ("X-Unleash-Token", FRONTEND_DEFAULT_DEV)
        )
        .await,
        200
    );
    let r = client()
        .get(s.url("/api/frontend"))
        .header("Authorization", FRONTEND_DEFAULT_DEV)
        .send()
        .await
        .unwrap();
    let (code, body) = (r.status().as_u16(), r.text().await.unwrap());
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("token_missing"), "{body}");
}

#[tokio::test]
async fn the_allow_and_deny_lists_refuse_other_peers_with_403() {
    let auth = ("Authorization", FRONTEND_DEFAULT_DEV);
    for (extra, expected) in [
        ("deny_list = [\"127.0.0.1\"]", 403),
        ("allow_list = [\"10.0.0.0/8\"]", 403),
        (
            "allow_list = [\"127.0.0.0/8\"]\ndeny_list = [\"10.0.0.0/8\"]",
            200,
        ),
    ] {
        let s = Server::start(&config(extra), &[("features.json", FEATURES)]).await;
        for path in ["/api/frontend", "/health"] {
            let r = client()
                .get(s.url(path))
                .header(auth.0, auth.1)
                .send()
                .await
                .unwrap();
            let code = r.status().as_u16();
            let body = r.text().await.unwrap();
            if expected == 200 && path == "/api/frontend" {
                continue; // may be 503 until loaded; the refusals are what matter here
            }
            assert_eq!(
                code == 403,
                expected == 403,
                "{extra} {path}: {code} {body}"
            );
            if expected == 403 {
                assert!(body.contains("address_not_allowed"), "{body}");
            }
        }
    }
}

#[tokio::test]
async fn trust_proxy_without_a_list_believes_forwarded_addresses() {
    let features = r#"{"version":2,"features":[
      {"name":"by.ip","project":"default","enabled":true,"strategies":[{"name":"remoteAddress","parameters":{"IPs":"10.1.2.3"}}]}]}"#;
    for (extra, on) in [("trust_proxy = true", true), ("", false)] {
        let s = Server::start(&config(extra), &[("features.json", features)]).await;
        s.wait_ready().await;
        let r = client()
            .get(s.url("/api/frontend"))
            .header("Authorization", FRONTEND_DEFAULT_DEV)
            .header("X-Forwarded-For", "10.1.2.3")
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(
            toggle_names(&body).contains(&"by.ip".to_string()),
            on,
            "{extra:?}: {body}"
        );
    }
}

#[tokio::test]
async fn tokens_go_upstream_in_the_configured_header() {
    let up = FakeUpstream::start().await;
    let token = secret("client-all-dev");
    let config = edge_config(
        &up.url(),
        std::slice::from_ref(&token),
        "upstream_auth_header = \"X-Unleash-Token\"\n",
    );
    let s = Server::start(&config, &[]).await;
    // The fake upstream reads Authorization only: the features poll is refused, so the header
    // it came in is what the test reads.
    crate::harness::eventually("a features request upstream", || async {
        !up.requests_to("/api/client/features").is_empty()
    })
    .await;
    let r = &up.requests_to("/api/client/features")[0];
    assert_eq!(r.header("x-unleash-token"), Some(token.as_str()));
    assert_eq!(r.header("authorization"), None);
    drop(s);
}

/// Unleash Edge's pretrusted tokens: served without asking upstream, an Unleash token with the
/// scope it states and `secret@environment` as a key for the environment; the startup tokens
/// must still cover them (the scope rule), or they are refused like any other token.
#[tokio::test]
async fn pretrusted_tokens_are_served_without_upstream_within_the_startup_scope() {
    let up = FakeUpstream::start().await;
    let token = secret("client-all-dev");
    let extra = "pretrusted_tokens = [\"*:development.pretrusted-0001\", \"kiosk-key-0002@development\", \"*:production.pretrusted-0003\"]\n";
    let s = Server::start(
        &edge_config(&up.url(), std::slice::from_ref(&token), extra),
        &[],
    )
    .await;
    s.wait_ready().await;
    for t in ["*:development.pretrusted-0001", "kiosk-key-0002"] {
        let (status, _, body) = get(&s, "/api/frontend", Some(t)).await;
        assert_eq!(status, 200, "{t}: {body}");
        assert!(!toggle_names(&body).is_empty(), "{t}: {body}");
    }
    let (status, _, body) = get(&s, "/api/frontend", Some("*:production.pretrusted-0003")).await;
    assert_eq!(status, 403, "{body}");
    // Never asked upstream.
    let asked: Vec<String> = up
        .requests_to("/edge/validate")
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(
        !asked
            .iter()
            .any(|b| b.contains("pretrusted") || b.contains("kiosk")),
        "{asked:?}"
    );
    // A `[]` token states no projects: it cannot be trusted without upstream.
    let out = flagpost()
        .args(["edge", "--check-config"])
        .env("PRETRUSTED_TOKENS", "[]:development.multi-0004")
        .env("UPSTREAM_URL", "http://unleash:4242")
        .env("TOKENS", "*:development.client-0005")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(err.contains("PRETRUSTED_TOKENS"), "{err}");
}

/// Unleash Edge's CORS lists: the allowed headers, methods and exposed headers browsers get.
#[tokio::test]
async fn the_cors_lists_are_what_browsers_get() {
    let extra = "\n[cors]\nallowed_headers = [\"authorization\", \"x-tenant\"]\n\
                 exposed_headers = [\"ETag\", \"X-Request-Id\"]\nmethods = [\"GET\", \"POST\"]";
    let s = Server::start(&config(extra), &[("features.json", FEATURES)]).await;
    s.wait_ready().await;
    let r = client()
        .request(reqwest::Method::OPTIONS, s.url("/api/frontend"))
        .header("Origin", "https://app.example.com")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization,x-other")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let h = r.headers();
    assert_eq!(h["access-control-allow-headers"], "authorization, x-tenant");
    assert_eq!(h["access-control-allow-methods"], "GET, POST");
    assert_eq!(h["access-control-expose-headers"], "ETag, X-Request-Id");
    let r = client()
        .get(s.url("/api/frontend"))
        .header("Origin", "https://app.example.com")
        .header("Authorization", FRONTEND_DEFAULT_DEV)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["access-control-expose-headers"],
        "ETag, X-Request-Id"
    );
}

/// Unleash Edge answers `POST /api/client/features` as its GET: the same features, the query
/// filtering, the body read within the bound and not used; other methods stay 405.
#[tokio::test]
async fn client_features_answer_post_as_get() {
    let s = Server::start(&config(""), &[("features.json", FEATURES)]).await;
    s.wait_ready().await;
    let (status, _, got) = get(&s, "/api/client/features", Some(CLIENT_DEFAULT_DEV)).await;
    assert_eq!(status, 200);
    let (status, _, posted) = post(
        &s,
        "/api/client/features",
        Some(CLIENT_DEFAULT_DEV),
        r#"{"ignored":true}"#,
    )
    .await;
    assert_eq!(status, 200, "{posted}");
    assert_eq!(feature_names(&posted), feature_names(&got));
    assert!(!feature_names(&got).is_empty());
    let prefix = &feature_names(&got)[0][..3];
    let (_, _, filtered) = post(
        &s,
        &format!("/api/client/features?namePrefix={prefix}"),
        Some(CLIENT_DEFAULT_DEV),
        "",
    )
    .await;
    assert!(feature_names(&filtered)
        .iter()
        .all(|n| n.starts_with(prefix)));
    let (status, _, body) = post(&s, "/api/client/features", None, "").await;
    assert_eq!(status, 401, "{body}");
    let big = "x".repeat(2 * 1024 * 1024);
    let (status, _, body) = post(&s, "/api/client/features", Some(CLIENT_DEFAULT_DEV), big).await;
    assert_eq!(status, 413, "{body}");
    let put = client()
        .put(s.url("/api/client/features"))
        .header("Authorization", CLIENT_DEFAULT_DEV)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status().as_u16(), 405);
}

/// An edge config with a fixed instance id and usage forwarded every 200 ms.
fn instance_config(up: &FakeUpstream, token: &str) -> String {
    format!(
        "{}\n[usage]\ninterval = \"200ms\"\n",
        edge_config(&up.url(), &[token.to_string()], "")
    )
    .replace(
        "mode = \"edge\"",
        "mode = \"edge\"\ninstance_id = \"flagpost-up-1\"",
    )
}

/// flagpost reports its own instance data upstream as Unleash Edge does (Edge's camelCase
/// shape, the first startup token), with the downstream instances that reported to it as
/// `connectedEdges`; an upstream that does not take it (404, as the open-source server answers)
/// is not asked again within the hour.
#[tokio::test]
async fn instance_data_goes_upstream_with_the_downstream_instances() {
    use crate::upstream::Scripted;
    let up = FakeUpstream::start().await;
    up.script(|parts, _| {
        (parts.uri.path() == "/api/client/metrics/edge").then(|| {
            let mut r = http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
            *r.status_mut() = http::StatusCode::ACCEPTED;
            Scripted::Respond(r)
        })
    });
    let token = secret("client-all-dev");
    let s = Server::start(&instance_config(&up, &token), &[]).await;
    s.wait_ready().await;
    let downstream = serde_json::json!({"identifier": "edge-below-1", "appName": "shop-edge",
        "edgeVersion": "20.1.0", "connectedEdges": [], "connectedStreamingClients": 2});
    let (status, _, _) = post(
        &s,
        "/api/client/metrics/edge",
        Some(&token),
        downstream.to_string(),
    )
    .await;
    assert_eq!(status, 202);
    eventually("a report naming the downstream instance", || async {
        up.requests_to("/api/client/metrics/edge")
            .iter()
            .any(|r| r.json()["connectedEdges"][0]["identifier"] == "edge-below-1")
    })
    .await;
    let sent = up.requests_to("/api/client/metrics/edge").pop().unwrap();
    assert_eq!(sent.header("authorization"), Some(token.as_str()));
    let body = sent.json();
    assert_eq!(body["identifier"], "flagpost-up-1");
    assert_eq!(body["appName"], "flagpost");
    assert_eq!(body["connectedEdges"][0]["appName"], "shop-edge");
    assert_eq!(body["connectedEdges"][0]["connectedStreamingClients"], 2);
    for field in [
        "started",
        "traffic",
        "latencyUpstream",
        "connectedStreamingClients",
        "edgeVersion",
    ] {
        assert!(!body[field].is_null(), "{field} missing: {body}");
    }
    s.stop().await.unwrap();
}

/// The open-source server answers 404 for instance data: asked once, then left alone for the
/// hour, while usage rounds (every 200 ms) go on.
#[tokio::test]
async fn an_upstream_without_instance_data_is_not_asked_again_within_the_hour() {
    let up = FakeUpstream::start().await;
    let token = secret("client-all-dev");
    let s = Server::start(&instance_config(&up, &token), &[]).await;
    s.wait_ready().await;
    eventually("the first report refused", || async {
        metric(
            &s,
            "flagpost_upstream_requests_total{call=\"instance_data\",outcome=\"client_error\"}",
        )
        .await
        .is_some()
    })
    .await;
    let before = up.requests_to("/api/client/metrics/edge").len();
    // Three usage rounds later (each forwarded upstream, an interval apart), still no new report.
    let usage = serde_json::json!({"appName": "app-1", "instanceId": "app-1-1",
        "bucket": {"start": "2026-11-28T04:19:03.998Z", "stop": "2026-11-28T04:19:03.998Z",
        "toggles": {"simple.on": {"yes": 1, "no": 0}}}});
    for round in 1..=3 {
        let (status, _, _) = post(&s, "/api/client/metrics", Some(&token), usage.to_string()).await;
        assert_eq!(status, 202);
        eventually("the usage forwarded", || async {
            up.requests_to("/api/client/metrics/bulk").len() >= round
        })
        .await;
    }
    assert_eq!(up.requests_to("/api/client/metrics/edge").len(), before);
    s.stop().await.unwrap();
}
