//! The Unleash client specification (tests/client-specification, Apache-2.0), run through
//! HTTP: each file's state is the offline features file, each case's context is sent both as a
//! GET query and as a POST body to `/api/frontend/all`, and the result is compared with the
//! expected one. Files 19-20 (delta events) are run through the engine in `evaluate`'s tests.
//!
//! flagpost, like the Unleash server, fills a missing `remoteAddress` with the client's address.
//! The cases "no remoteAddress in the context" expect the flag off, so requests come from
//! 127.0.0.3, an address none of the spec's strategies lists.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use serde_json::Value;

use crate::harness::*;

const CLIENT: &str = "*:development.spec-client-token";
const FRONTEND: &str = "*:development.spec-frontend-token";

fn spec_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/client-specification")
}

fn spec_files() -> Vec<String> {
    let index: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(spec_dir().join("index.json")).unwrap())
            .unwrap();
    index
}

fn query_of(context: &Value) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let scalar = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut parts = Vec::new();
    for (k, v) in context.as_object().into_iter().flatten() {
        if k == "properties" {
            for (pk, pv) in v.as_object().into_iter().flatten() {
                parts.push(format!("properties%5B{}%5D={}", enc(pk), enc(&scalar(pv))));
            }
        } else {
            parts.push(format!("{}={}", enc(k), enc(&scalar(v))));
        }
    }
    parts.join("&")
}

struct Tally {
    passed: usize,
    failures: Vec<String>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            passed: 0,
            failures: vec![],
        }
    }

    /// Checks one answer to `case` (for flag `name`) and counts it.
    async fn record(&mut self, case: &Value, name: &str, label: &str, response: reqwest::Response) {
        let status = response.status();
        let bytes = response.bytes().await.unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let toggle = body["toggles"]
            .as_array()
            .and_then(|ts| ts.iter().find(|t| t["name"] == name))
            .cloned();
        match check(case, status.as_u16(), toggle.as_ref()) {
            Ok(()) => self.passed += 1,
            Err(why) => self.failures.push(format!("{label}: {why}")),
        }
    }
}

/// One case's context through GET (as the query) and through POST (as JSON).
async fn ask(
    http: &reqwest::Client,
    server: &Server,
    context: &Value,
) -> (reqwest::Response, reqwest::Response) {
    let get_url = server.url(&format!("/api/frontend/all?{}", query_of(context)));
    let get = http
        .get(get_url)
        .header("Authorization", FRONTEND)
        .send()
        .await
        .unwrap();
    let post = http
        .post(server.url("/api/frontend/all"))
        .header("Authorization", FRONTEND)
        .header("content-type", "application/json")
        .body(serde_json::json!({ "context": context }).to_string())
        .send()
        .await
        .unwrap();
    (get, post)
}

#[tokio::test]
async fn client_specification_through_http() {
    let http = reqwest::Client::builder()
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)))
        .build()
        .unwrap();
    let mut get_tally = Tally::new();
    let mut post_tally = Tally::new();
    let files = spec_files();
    let mut expected_cases = 0;
    let mut files_run = 0;
    for file in &files {
        // The two delta-API files hold event streams, not a features state: they run through
        // the engine in `evaluate::tests::client_specification_delta_files_through_the_engine`.
        if file.contains("-delta-api-") {
            continue;
        }
        files_run += 1;
        let spec: Value =
            serde_json::from_str(&std::fs::read_to_string(spec_dir().join(file)).unwrap())
                .unwrap_or_else(|e| panic!("{file} is not JSON: {e}"));
        let config = format!(
            "mode = \"offline\"\n[offline]\nfeatures_file = \"features.json\"\nreload_interval = \"0s\"\n\
             client_tokens = [\"{CLIENT}\"]\nfrontend_tokens = [\"{FRONTEND}\"]\n"
        );
        let state = spec["state"].to_string();
        let server = Server::start(&config, &[("features.json", &state)]).await;
        server.wait_ready().await;
        let cases = spec["tests"].as_array().cloned().unwrap_or_default();
        let variant_cases = spec["variantTests"].as_array().cloned().unwrap_or_default();
        assert!(
            !cases.is_empty() || !variant_cases.is_empty(),
            "{file} has no cases"
        );
        expected_cases += cases.len() + variant_cases.len();
        for case in cases.iter().chain(variant_cases.iter()) {
            let name = case["toggleName"].as_str().unwrap();
            let label = format!("{file}: {}", case["description"].as_str().unwrap_or(name));
            let (get, post) = ask(&http, &server, &case["context"]).await;
            get_tally.record(case, name, &label, get).await;
            post_tally.record(case, name, &label, post).await;
        }
        server.stop().await.unwrap();
    }
    eprintln!(
        "client specification through HTTP: GET {} passed, {} failed; POST {} passed, {} failed",
        get_tally.passed,
        get_tally.failures.len(),
        post_tally.passed,
        post_tally.failures.len()
    );
    let failures: Vec<_> = get_tally
        .failures
        .iter()
        .map(|f| format!("GET  {f}"))
        .chain(post_tally.failures.iter().map(|f| format!("POST {f}")))
        .collect();
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        files_run,
        files.len() - 2,
        "every file but the two delta ones ran"
    );
    assert_eq!(
        (get_tally.passed, post_tally.passed),
        (expected_cases, expected_cases),
        "every case ran, through GET and POST"
    );
}

fn check(case: &Value, status: u16, toggle: Option<&Value>) -> Result<(), String> {
    if status != 200 {
        return Err(format!("status {status}"));
    }
    let expected = &case["expectedResult"];
    if let Some(enabled) = expected.as_bool() {
        let got = toggle.and_then(|t| t["enabled"].as_bool()).unwrap_or(false);
        return if got == enabled {
            Ok(())
        } else {
            Err(format!("expected enabled={enabled}, got {got}"))
        };
    }
    // A variant case.
    let variant = toggle.map(|t| t["variant"].clone()).unwrap_or_else(
        || serde_json::json!({"name": "disabled", "enabled": false, "feature_enabled": false}),
    );
    let mut problems = Vec::new();
    if variant["name"] != expected["name"] {
        problems.push(format!("name {} != {}", variant["name"], expected["name"]));
    }
    if variant["enabled"] != expected["enabled"] {
        problems.push(format!(
            "enabled {} != {}",
            variant["enabled"], expected["enabled"]
        ));
    }
    if let Some(fe) = expected.get("feature_enabled") {
        if &variant["feature_enabled"] != fe {
            problems.push(format!(
                "feature_enabled {} != {fe}",
                variant["feature_enabled"]
            ));
        }
    }
    if expected.get("payload").is_some() && variant["payload"] != expected["payload"] {
        problems.push(format!(
            "payload {} != {}",
            variant["payload"], expected["payload"]
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
