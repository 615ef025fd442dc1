//! Trust under failure: an upstream that misbehaves as real networks do (huge bodies, gzip
//! bombs, redirects, refusals that heal, an empty list), clients that send what fuzzers send,
//! and a validation flood. flagpost keeps serving what it has, says the truth on `/ready`, and
//! never widens a scope. (Shutdown while upstream hangs: shutdown.rs.)

use std::io::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::edge::start_edge;
use crate::harness::*;
use crate::upstream::{json_response, secret, FakeUpstream, Scripted};

pub const FRONT: &str = "frontend-all-dev";

pub fn is_features(parts: &http::request::Parts) -> bool {
    parts.uri.path() == "/api/client/features"
}

/// A valid-looking features document of about `size` bytes.
pub fn big_document(size: usize) -> String {
    let mut features = Vec::new();
    let mut total = 0;
    let mut i = 0;
    while total < size {
        let f = json!({"name": format!("padding.{i:07}"), "project": "default", "enabled": true,
            "strategies": [{"name": "default", "parameters": {}, "constraints": []}],
            "description": "x".repeat(200)})
        .to_string();
        total += f.len() + 1;
        features.push(f);
        i += 1;
    }
    format!(
        r#"{{"version":2,"features":[{}],"segments":[]}}"#,
        features.join(",")
    )
}

pub async fn ready_body(s: &Server) -> (u16, serde_json::Value) {
    let (status, _, body) = get(s, "/ready", None).await;
    (status, body)
}

#[tokio::test]
async fn an_oversized_upstream_body_is_refused_and_the_last_good_features_kept() {
    let up = FakeUpstream::start().await;
    let s = start_edge(
        &up,
        &["client-all-dev"],
        "upstream_max_body_size = \"64KiB\"",
    )
    .await;
    s.wait_ready().await;
    let token = secret(FRONT);
    let (_, _, before) = get(&s, "/api/frontend?userId=9", Some(&token)).await;
    let body = Bytes::from(big_document(300 * 1024));
    up.script(move |parts, _| {
        is_features(parts).then(|| {
            let mut r = Response::new(Full::new(body.clone()));
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            Scripted::Respond(r)
        })
    });
    let series =
        "flagpost_refresh_failures_total{environment=\"development\",reason=\"too_large\"}";
    eventually("the oversized body is refused", || async {
        metric(&s, series).await.is_some_and(|n| n >= 2.0)
    })
    .await;
    let (status, _, now) = get(&s, "/api/frontend?userId=9", Some(&token)).await;
    assert_eq!((status, &now), (200, &before), "the last good features");
    assert_eq!(ready_body(&s).await.0, 200);
    assert!(metric(
        &s,
        "flagpost_upstream_requests_total{call=\"features\",outcome=\"too_large\"}"
    )
    .await
    .is_some_and(|n| n >= 2.0));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_gzip_bomb_is_refused_on_its_decompressed_size() {
    let up = FakeUpstream::start().await;
    // About 4 MiB of JSON that packs into a few KiB.
    let inflated = big_document(4 * 1024 * 1024);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(inflated.as_bytes()).unwrap();
    let packed = Bytes::from(gz.finish().unwrap());
    assert!(packed.len() < 256 * 1024, "{} bytes packed", packed.len());
    up.script(move |parts, _| {
        is_features(parts).then(|| {
            let mut r = Response::new(Full::new(packed.clone()));
            let h = r.headers_mut();
            h.insert("content-type", "application/json".parse().unwrap());
            h.insert("content-encoding", "gzip".parse().unwrap());
            Scripted::Respond(r)
        })
    });
    let s = start_edge(
        &up,
        &["client-all-dev"],
        "upstream_max_body_size = \"1MiB\"",
    )
    .await;
    eventually("the bomb is refused", || async {
        metric(
            &s,
            "flagpost_refresh_failures_total{environment=\"development\",reason=\"too_large\"}",
        )
        .await
        .is_some()
    })
    .await;
    let (status, body) = ready_body(&s).await;
    assert_eq!(status, 503, "nothing usable loaded: {body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("no features loaded yet for environment development"),
        "{body}"
    );
    // The same body, small enough once unpacked, is accepted: the limit is on what it unpacks to.
    up.unscript();
    s.wait_ready().await;
    s.stop().await.unwrap();
}

#[tokio::test]
async fn redirects_are_not_followed_and_carry_nothing_to_another_origin() {
    let up = FakeUpstream::start().await;
    let elsewhere = FakeUpstream::start().await;
    let s = start_edge(&up, &["client-all-dev"], "").await;
    s.wait_ready().await;
    let front = secret(FRONT);
    assert_eq!(get(&s, "/api/frontend", Some(&front)).await.0, 200);
    let location = format!("{}/api/client/features?secret=query", elsewhere.url());
    elsewhere.script(|_, _| {
        let r = json_response(401, json!({"message": "not here"}));
        Some(Scripted::Respond(r))
    });
    up.script(move |parts, _| {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::FOUND;
        r.headers_mut()
            .insert("location", location.parse().unwrap());
        (is_features(parts) || parts.uri.path() == "/edge/validate").then_some(Scripted::Respond(r))
    });
    eventually("redirects counted", || async {
        metric(
            &s,
            "flagpost_refresh_failures_total{environment=\"development\",reason=\"redirect\"}",
        )
        .await
        .is_some_and(|n| n >= 3.0)
    })
    .await;
    // A never-seen token makes flagpost ask /edge/validate, which redirects too.
    let (status, _, body) = get(&s, "/api/frontend", Some(&secret("frontend-default-dev"))).await;
    assert_eq!(status, 503, "not validated, not refused");
    assert_eq!(body["error"], "upstream_unavailable", "{body}");
    assert!(
        elsewhere.requests().is_empty(),
        "nothing (no token, no custom header) reached the other origin"
    );
    assert_eq!(
        metric(
            &s,
            "flagpost_refresh_failures_total{environment=\"development\",reason=\"refused\"}"
        )
        .await,
        None,
        "a redirect is not a revocation"
    );
    assert_eq!(get(&s, "/api/frontend", Some(&front)).await.0, 200);
    assert_eq!(ready_body(&s).await.0, 200);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_refused_startup_token_turns_ready_off_and_recovers_when_upstream_accepts_it() {
    let up = FakeUpstream::start().await;
    let s = start_edge(
        &up,
        &["client-all-dev"],
        "token_revalidation_interval = \"300ms\"",
    )
    .await;
    s.wait_ready().await;
    let token = secret(FRONT);
    assert_eq!(get(&s, "/api/frontend", Some(&token)).await.0, 200);
    let usable = "flagpost_startup_tokens_usable{environment=\"development\"}";
    assert_eq!(metric(&s, usable).await, Some(1.0));
    // A gateway in front of Unleash starts refusing flagpost's startup token.
    up.script(|parts, _| {
        is_features(parts)
            .then(|| Scripted::Respond(json_response(401, json!({"message": "gateway says no"}))))
    });
    eventually("not ready", || async { ready_body(&s).await.0 == 503 }).await;
    let (_, body) = ready_body(&s).await;
    assert_eq!(body["error"], "not_ready");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("refuses every startup token of environment development"),
        "{body}"
    );
    assert_eq!(metric(&s, usable).await, Some(0.0));
    let (status, _, body) = get(&s, "/api/frontend", Some(&token)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("scope_not_covered"))
    );
    assert_eq!(get(&s, "/health", None).await.0, 200, "the process is fine");
    // Still asked about, on the slow interval; the gateway is fixed: served again.
    let asked = up.requests_to("/api/client/features").len();
    eventually("asked again", || async {
        up.requests_to("/api/client/features").len() > asked
    })
    .await;
    up.unscript();
    s.wait_ready().await;
    assert_eq!(metric(&s, usable).await, Some(1.0));
    let (status, _, body) = get(&s, "/api/frontend", Some(&token)).await;
    assert_eq!(status, 200, "{body}");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn an_empty_list_after_a_full_one_is_served_warned_about_and_not_backed_up() {
    let up = FakeUpstream::start().await;
    let backup = tempfile::tempdir().unwrap();
    let extra = format!("backup_folder = \"{}\"", backup.path().display());
    let s = start_edge(&up, &["client-all-dev"], &extra).await;
    s.wait_ready().await;
    let features_file = backup.path().join(format!(
        "features-{}.json",
        "development"
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ));
    let backed_up = || -> usize {
        std::fs::read(&features_file)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["features"]["features"].as_array().map(Vec::len))
            .unwrap_or(0)
    };
    eventually("backed up", || async { backed_up() > 0 }).await;
    let full = backed_up();
    up.state
        .lock()
        .unwrap()
        .features
        .insert("development".into(), Vec::new());
    up.state.lock().unwrap().revision += 1;
    let token = secret(FRONT);
    eventually("the empty list is served", || async {
        let (_, _, b) = get(&s, "/api/frontend/all", Some(&token)).await;
        b["toggles"].as_array().is_some_and(Vec::is_empty)
    })
    .await;
    assert_eq!(
        metric(
            &s,
            "flagpost_snapshot_emptied_total{environment=\"development\"}"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        metric(
            &s,
            "flagpost_snapshot_features{environment=\"development\"}"
        )
        .await,
        Some(0.0)
    );
    s.stop().await.unwrap();
    assert_eq!(
        backed_up(),
        full,
        "the backup keeps the last non-empty list"
    );
}

#[tokio::test]
async fn http_1_1_without_host_is_400() {
    let s = start_offline_server("").await;
    let raw = |request: &'static [u8]| {
        let addr = s.addr;
        async move {
            let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
            conn.write_all(request).await.unwrap();
            let mut out = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut out)).await;
            String::from_utf8_lossy(&out).to_string()
        }
    };
    let answer = raw(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("\"error\":\"bad_request\"") && answer.contains("Host"),
        "{answer}"
    );
    let answer = raw(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = raw(b"GET /health HTTP/1.0\r\n\r\n").await;
    assert!(
        answer.starts_with("HTTP/1.0 200"),
        "HTTP/1.0 needs no Host: {answer}"
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn contexts_that_are_not_objects_are_named_and_null_is_no_context() {
    let s = start_offline_server("").await;
    let token = crate::offline::FRONTEND_DEFAULT_DEV;
    let (status, _, body) = post(&s, "/api/frontend", Some(token), r#"{"context": 5}"#).await;
    assert_eq!(status, 400);
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("`context` must be an object") && message.contains("not a number"),
        "{message}"
    );
    let (status, _, null) = post(&s, "/api/frontend", Some(token), r#"{"context": null}"#).await;
    let (_, _, none) = post(&s, "/api/frontend", Some(token), "{}").await;
    assert_eq!((status, &null), (200, &none));
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_metrics_body_over_the_flag_limit_is_refused_with_the_reason() {
    let s = start_offline_server("").await;
    let toggles: Vec<String> = (0..10_001)
        .map(|i| format!(r#""flag.{i}":{{"yes":1,"no":0,"variants":{{}}}}"#))
        .collect();
    let body = format!(
        r#"{{"appName":"a","instanceId":"i","bucket":{{"start":"2026-01-01T00:00:00Z","stop":"2026-01-01T00:01:00Z","toggles":{{{}}}}}}}"#,
        toggles.join(",")
    );
    let (status, _, answer) = post(
        &s,
        "/api/client/metrics",
        Some(crate::offline::CLIENT_DEFAULT_DEV),
        body,
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("more than 10000 entries"),
        "{answer}"
    );
    s.stop().await.unwrap();
}

/// A validate body of `n` never-seen tokens numbered from `from`.
fn flood(n: usize, from: usize) -> String {
    let tokens: Vec<String> = (from..from + n)
        .map(|i| format!("default:development.flood{i:06}"))
        .collect();
    json!({ "tokens": tokens }).to_string()
}

#[tokio::test]
async fn a_validate_flood_neither_reaches_upstream_unbounded_nor_delays_sdk_tokens() {
    let up = FakeUpstream::start().await;
    // Upstream answers the flood's batches slowly (they carry "flood" tokens).
    up.script(|parts, body| {
        (parts.uri.path() == "/edge/validate" && String::from_utf8_lossy(body).contains("flood"))
            .then_some(Scripted::Hang)
    });
    let s = start_edge(
        &up,
        &["client-all-dev"],
        "validate_caller_budget = 50\nvalidate_total_budget = 200\nupstream_request_timeout = \"5s\"",
    )
    .await;
    s.wait_ready().await;
    // Within the budget: asked upstream (and left waiting there).
    let url = s.url("/edge/validate");
    let first = tokio::spawn({
        let body = flood(40, 0);
        let url = url.clone();
        async move {
            client()
                .post(url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
        }
    });
    eventually("the flood batch reached upstream", || async {
        up.requests_to("/edge/validate")
            .iter()
            .any(|r| String::from_utf8_lossy(&r.body).contains("flood"))
    })
    .await;
    // Over the caller's budget (10 of 50 left): 429 at once; the 10 granted are queued behind
    // the hanging batch, the other 30 are not asked.
    let (status, headers, body) = post(&s, "/edge/validate", None, flood(40, 100)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("rate_limited")),
        "{body}"
    );
    assert_eq!(headers["retry-after"], "36", "30 more at 50 a minute");
    // Known tokens are answered from the caches, budget or not.
    let (status, _, body) = post(
        &s,
        "/edge/validate",
        None,
        json!({"tokens": [secret("client-all-dev")]}).to_string(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body["tokens"].as_array().unwrap().len(), 1);
    // A never-seen SDK token is validated at once, though the flood's batch still hangs.
    let started = Instant::now();
    let (status, _, _) = get(&s, "/api/frontend", Some(&secret("frontend-default-dev"))).await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert!(
        took < Duration::from_millis(1500),
        "the SDK token waited {took:?}"
    );
    assert!(
        !first.is_finished(),
        "the flood batch is still waiting upstream"
    );
    assert_eq!(
        metric(
            &s,
            "flagpost_validate_budget_refused_total{budget=\"caller\"}"
        )
        .await,
        Some(1.0)
    );
    s.stop().await.unwrap();
}

pub async fn start_offline_server(server_keys: &str) -> Server {
    let s = Server::start(
        &crate::offline::config(server_keys),
        &[("features.json", crate::offline::FEATURES)],
    )
    .await;
    s.wait_ready().await;
    s
}
