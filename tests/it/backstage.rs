//! The operator's surface: `explain` (endpoint and command), Unleash Edge's backstage endpoints
//! behind `backstage.token`, and the Grafana dashboard's metric names.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;

use crate::edge::edge_config;
use crate::harness::*;
use crate::offline::{
    self, CLIENT_ALL_PROD, CLIENT_CHECKOUT_DEV, CLIENT_DEFAULT_DEV, FEATURES, FRONTEND_DEFAULT_DEV,
    FRONTEND_MISSING_PROJECT, FRONTEND_UNION_DEV,
};
use crate::redis::Redis;
use crate::upstream::{fixture_tokens, secret, FakeUpstream};

const BACKSTAGE: &str = "backstage-secret-0123456789";

/// Every token secret of the offline configuration.
const OFFLINE_SECRETS: &[&str] = &[
    CLIENT_DEFAULT_DEV,
    CLIENT_CHECKOUT_DEV,
    CLIENT_ALL_PROD,
    FRONTEND_DEFAULT_DEV,
    FRONTEND_UNION_DEV,
    FRONTEND_MISSING_PROJECT,
];

fn assert_no_secret(text: &str, tokens: &[&str]) {
    for t in tokens {
        let secret = t.rsplit('.').next().unwrap();
        assert!(!text.contains(secret), "a token's secret in: {text}");
    }
}

async fn start(extra_top: &str) -> Server {
    let config = offline::config("").replacen("[server]", &format!("{extra_top}\n[server]"), 1);
    let s = Server::start(&config, &[("features.json", FEATURES)]).await;
    s.wait_ready().await;
    s
}

async fn explain(s: &Server, token: Option<&str>) -> Value {
    let mut req = client().post(s.url("/internal-backstage/explain"));
    if let Some(t) = token {
        req = req.header("Authorization", t);
    }
    let (status, _, body) = into_parts(req.send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn explain_says_why_a_token_is_served_or_refused_without_other_secrets() {
    let s = start("").await;
    let covered = explain(&s, Some(FRONTEND_DEFAULT_DEV)).await;
    eprintln!("explain, covered: {covered:#}");
    assert_eq!(covered["valid"], true);
    assert_eq!(covered["kind"], "frontend");
    assert_eq!(covered["source"], "configuration");
    assert_eq!(covered["scope"]["projects"], serde_json::json!(["default"]));
    assert_eq!(covered["covered"], true);
    assert_eq!(covered["features_served"], 4);
    assert_eq!(covered["answer"]["status"], 200);
    let by = covered["covered_by"].as_array().unwrap();
    assert_eq!(by.len(), 1, "{by:?}");
    assert!(by[0].as_str().unwrap().starts_with("default:development."));

    let uncovered = explain(&s, Some(FRONTEND_MISSING_PROJECT)).await;
    eprintln!("explain, uncovered: {uncovered:#}");
    assert_eq!(uncovered["covered"], false);
    assert!(uncovered["missing"]["projects"]
        .as_str()
        .unwrap()
        .contains("mobile"));
    assert_eq!(uncovered["answer"]["status"], 403);
    assert_eq!(uncovered["answer"]["error"], "scope_not_covered");
    assert_eq!(uncovered["features_served"], Value::Null);

    let invalid = explain(&s, Some("default:development.nope-not-known-42")).await;
    assert_eq!(invalid["valid"], false);
    assert_eq!(invalid["answer"]["error"], "token_invalid");
    assert_eq!(explain(&s, None).await["answer"]["error"], "token_missing");
    for answer in [&covered, &uncovered, &invalid] {
        assert_no_secret(&answer.to_string(), OFFLINE_SECRETS);
    }
}

#[tokio::test]
async fn explain_names_where_an_edge_verdict_came_from() {
    let up = FakeUpstream::start().await;
    let s = Server::start(
        &edge_config(&up.url(), &[secret("client-default-dev")], ""),
        &[],
    )
    .await;
    s.wait_ready().await;
    let token = secret("frontend-all-dev");
    let first = explain(&s, Some(&token)).await;
    assert_eq!(first["source"], "upstream");
    assert_eq!(
        first["covered"], false,
        "`*` is wider than the default project"
    );
    assert_eq!(first["answer"]["error"], "scope_not_covered");
    let again = explain(&s, Some(&token)).await;
    assert_eq!(again["source"], "cache");
    let default = explain(&s, Some(&secret("frontend-default-dev"))).await;
    assert_eq!(
        (
            default["covered"].as_bool(),
            default["answer"]["status"].as_u64()
        ),
        (Some(true), Some(200))
    );
    let all: Vec<String> = fixture_tokens()
        .values()
        .map(|t| t.secret.clone())
        .collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    for answer in [&first, &again, &default] {
        assert_no_secret(&answer.to_string(), &all);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explain_command_prints_it_for_a_person() {
    let s = start("").await;
    let run = |token: &str| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flagpost"))
            .args(["explain", token, "--url", &s.url("")])
            .env_clear()
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = tokio::task::block_in_place(|| run(FRONTEND_UNION_DEV));
    eprintln!("flagpost explain (covered):\n{text}");
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("covered    yes"), "{text}");
    assert!(text.contains("answer     200"), "{text}");
    let (code, text) = tokio::task::block_in_place(|| run(FRONTEND_MISSING_PROJECT));
    eprintln!("flagpost explain (uncovered):\n{text}");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("covered    no: not served") && text.contains("mobile"),
        "{text}"
    );
    assert!(text.contains("scope_not_covered"), "{text}");
    assert_no_secret(&text, OFFLINE_SECRETS);
    let (code, _) = tokio::task::block_in_place(|| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_flagpost"))
            .args([
                "explain",
                FRONTEND_DEFAULT_DEV,
                "--url",
                "http://127.0.0.1:9",
            ])
            .env_clear()
            .output()
            .unwrap();
        (out.status.code(), ())
    });
    assert_eq!(code, Some(2), "no flagpost there");
}

async fn backstage(s: &Server, path: &str, token: Option<&str>) -> (u16, Value) {
    let (status, _, body) = get(s, &format!("/internal-backstage/{path}"), token).await;
    (status, body)
}

#[tokio::test]
async fn backstage_endpoints_need_the_backstage_token_and_keep_edge_shapes() {
    let closed = start("").await;
    for path in ["tokens", "features", "metricsbatch", "instancedata"] {
        let (status, body) = backstage(&closed, path, Some(BACKSTAGE)).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (404, Some("not_found")),
            "{path}"
        );
    }
    let s = start(&format!(
        "[backstage]\ntoken = \"{BACKSTAGE}\"\ninstance_data = false"
    ))
    .await;
    assert_eq!(
        backstage(&s, "tokens", None).await.1["error"],
        "token_missing"
    );
    assert_eq!(
        backstage(&s, "tokens", Some("wrong-secret-0123456789"))
            .await
            .1["error"],
        "token_invalid"
    );
    assert_eq!(
        backstage(&s, "tokens", Some(CLIENT_DEFAULT_DEV)).await.0,
        401,
        "an SDK token is not the backstage token"
    );
    assert_eq!(
        backstage(&s, "instancedata", Some(BACKSTAGE)).await.0,
        404,
        "turned off"
    );

    let (status, tokens) = backstage(&s, "tokens", Some(BACKSTAGE)).await;
    assert_eq!(status, 200);
    assert!(tokens["tokenRefreshes"].as_array().unwrap().len() >= 3);
    let statuses = tokens["tokenValidationStatus"].as_array().unwrap();
    assert!(statuses
        .iter()
        .any(|t| t["token_type"] == "frontend" && t["environment"] == "development"));
    assert_eq!(tokens["invalidTokenCount"], 0);
    assert_no_secret(&tokens.to_string(), OFFLINE_SECRETS);

    let (status, features) = backstage(&s, "features", Some(BACKSTAGE)).await;
    assert_eq!(status, 200);
    assert_eq!(feature_names(&features["development"]).len(), 6);
}

/// Edge's metricsbatch and token refresh shapes, from an edge-mode instance (offline mode
/// discards usage), with no secret in them.
#[tokio::test]
async fn backstage_metricsbatch_and_token_refreshes_in_edge_mode() {
    let usage = r#"{"appName":"web","instanceId":"i-1","bucket":{"start":"2026-12-04T10:00:00Z","stop":"2026-12-04T10:01:00Z","toggles":{"d.on":{"yes":3,"no":1,"variants":{}}}}}"#;
    // Usage is buffered in edge mode (offline mode discards it).
    let up = FakeUpstream::start().await;
    let edge = Server::start(
        &format!(
            "{}\n[backstage]\ntoken = \"{BACKSTAGE}\"\n",
            edge_config(&up.url(), &[secret("client-all-dev")], "")
        ),
        &[],
    )
    .await;
    edge.wait_ready().await;
    let client_token = secret("client-default-dev");
    assert_eq!(
        post(&edge, "/api/client/metrics", Some(&client_token), usage)
            .await
            .0,
        202
    );
    let (status, batch) = backstage(&edge, "metricsbatch", Some(BACKSTAGE)).await;
    assert_eq!(status, 200);
    let metric = &batch["metrics"][0];
    assert_eq!(metric["key"]["app_name"], "web");
    assert_eq!(metric["key"]["feature_name"], "d.on");
    assert_eq!(metric["key"]["environment"], "development");
    assert_eq!(metric["bucket"]["yes"], 3);
    let (_, tokens) = backstage(&edge, "tokens", Some(BACKSTAGE)).await;
    let refresh = &tokens["tokenRefreshes"][0];
    assert_eq!(refresh["last_feature_count"], 13);
    assert_eq!(refresh["revision_id"], 64);
    assert!(
        refresh["etag"].as_str().is_some_and(|e| e.contains(":64:")),
        "{refresh}"
    );
    let all: Vec<String> = fixture_tokens()
        .values()
        .map(|t| t.secret.clone())
        .collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    assert_no_secret(&tokens.to_string(), &all);
}

/// Edge's instancedata: this instance, and the downstream Edges that report theirs with a
/// client token (kept, bounded, shown as connected).
#[tokio::test]
async fn backstage_instance_data_shows_downstream_edges() {
    let open = start(&format!("[backstage]\ntoken = \"{BACKSTAGE}\"")).await;
    let (status, data) = backstage(&open, "instancedata", Some(BACKSTAGE)).await;
    assert_eq!(status, 200);
    assert_eq!(data["this_instance"]["app_name"], "flagpost");
    assert_eq!(data["this_instance"]["mode"], "offline");
    assert_eq!(data["connected_instances"], serde_json::json!([]));
    // A downstream Unleash Edge reports its instance data with a client token: kept, bounded,
    // and shown as a connected instance.
    let report = serde_json::json!({"identifier": "edge-downstream-1", "appName": "shop-edge",
        "edgeVersion": "20.1.0", "connectedEdges": [], "processMetrics": {"cpuUsage": 3.0}})
    .to_string();
    let edge_metrics = "/api/client/metrics/edge";
    let (status, _, body) = post(
        &open,
        edge_metrics,
        Some(offline::CLIENT_DEFAULT_DEV),
        report.clone(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(
        post(
            &open,
            edge_metrics,
            Some(offline::FRONTEND_DEFAULT_DEV),
            report
        )
        .await
        .0,
        403,
        "a frontend token"
    );
    assert_eq!(
        post(
            &open,
            edge_metrics,
            Some(offline::CLIENT_DEFAULT_DEV),
            "{}".to_string()
        )
        .await
        .0,
        400,
        "no identifier"
    );
    let (_, data) = backstage(&open, "instancedata", Some(BACKSTAGE)).await;
    let connected = &data["connected_instances"];
    assert_eq!(connected.as_array().map(Vec::len), Some(1), "{data}");
    assert_eq!(connected[0]["identifier"], "edge-downstream-1");
    assert_eq!(connected[0]["app_name"], "shop-edge");
    assert_eq!(connected[0]["environment"], "development");
}

/// Edge's --disable-metrics-endpoint, as a file key: both metrics routes are gone, probes
/// stay.
#[tokio::test]
async fn the_metrics_endpoint_can_be_turned_off() {
    let no_metrics = start("[backstage]\nmetrics = false").await;
    assert_eq!(get(&no_metrics, "/metrics", None).await.0, 404);
    assert_eq!(
        get(&no_metrics, "/internal-backstage/metrics", None)
            .await
            .0,
        404
    );
    assert_eq!(get(&no_metrics, "/health", None).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_grafana_dashboard_queries_is_exported() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/grafana-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queried = BTreeSet::new();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    for expr in &exprs {
        let mut rest = expr.as_str();
        while let Some(at) = rest.find("flagpost_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            queried.insert(name);
        }
    }
    assert!(queried.len() >= 20, "{queried:?}");
    // A running flagpost with everything the dashboard shows in use: edge mode on a fleet,
    // SDK traffic, a stream.
    let up = FakeUpstream::start().await;
    let redis = Redis::start();
    let config = format!(
        "{}\n[store]\nredis_url = \"{}\"\nlease = \"1s\"\ntimeout = \"300ms\"\n",
        edge_config(&up.url(), &[secret("client-all-dev")], ""),
        redis.url()
    );
    let s = Server::start(&config, &[]).await;
    s.wait_ready().await;
    assert_eq!(
        get(&s, "/api/frontend", Some(&secret("frontend-all-dev")))
            .await
            .0,
        200
    );
    let mut stream = crate::streaming::Sse::open(
        &s.url("/api/client/streaming"),
        &secret("client-all-dev"),
        None,
    )
    .await;
    stream.next().await;
    eventually("the fleet role", || async {
        metric(&s, "flagpost_fleet_role{role=\"poller\"}").await == Some(1.0)
    })
    .await;
    let text = metrics_text(&s, "/metrics").await.unwrap();
    let exported: BTreeSet<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let missing: Vec<&String> = queried
        .iter()
        .filter(|q| !exported.contains(q.as_str()))
        .collect();
    assert!(missing.is_empty(), "queried but not exported: {missing:?}");
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    ("query", Value::String(q)) => out.push(q.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}
