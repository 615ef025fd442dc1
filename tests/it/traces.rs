//! OpenTelemetry traces leaving the binary, as an OTLP receiver built from the official
//! protobuf definitions gets them (`otlp.rs`): over gRPC and HTTP, the spans' names, kinds,
//! parents and attributes, `traceparent` in from the app and out to the scripted upstream,
//! sampling, no secret anywhere, and a collector that fails costing only dropped spans.
//!
//! Multi-threaded: the fake upstream and the receiver answer while this thread blocks on the
//! child's log.

use std::time::Duration;

use crate::edge::edge_config;
use crate::harness::*;
use crate::otlp::{Collector, Got};
use crate::upstream::{fixture_tokens, secret, FakeUpstream};

pub(crate) const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
pub(crate) const PARENT: &str = "00f067aa0ba902b7";

/// flagpost in edge mode against `up`, exporting to `collector` with `env` (OTEL_* and more).
pub(crate) fn flagpost(
    up: &FakeUpstream,
    dir: &tempfile::TempDir,
    env: &[(&str, String)],
) -> (Binary, String) {
    let path = dir.path().join("config.toml");
    let toml = edge_config(
        &up.url(),
        &[secret("client-all-dev")],
        "refresh_interval = \"1h\"",
    );
    let toml = format!(
        "{toml}\n[server]\nport = 0\ninterface = \"127.0.0.1\"\nshutdown_delay = \"0s\"\nshutdown_grace = \"3s\"\n"
    );
    std::fs::write(&path, toml).unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_flagpost"));
    command.arg("--config").arg(&path);
    for (k, v) in env {
        command.env(k, v);
    }
    let mut bin = Binary::spawn(command);
    let addr = bin.listening();
    bin.wait_for("startup token validated");
    (bin, addr)
}

/// Waits until flagpost at `addr` says it is ready.
pub(crate) async fn ready(addr: &str) {
    let url = format!("http://{addr}/ready");
    eventually("flagpost is ready", || {
        let url = url.clone();
        async move {
            client()
                .get(url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
}

pub(crate) fn traceparent(trace: &str, parent: &str, sampled: bool) -> String {
    format!("00-{trace}-{parent}-{}", if sampled { "01" } else { "00" })
}

pub(crate) async fn frontend(
    addr: &str,
    token: &str,
    query: &str,
    traceparent: Option<&str>,
) -> u16 {
    let mut r = client()
        .get(format!("http://{addr}/api/frontend{query}"))
        .header("authorization", token);
    if let Some(tp) = traceparent {
        r = r.header("traceparent", tp).header("tracestate", "app=7");
    }
    r.send().await.unwrap().status().as_u16()
}

/// Every token secret of the fixtures, none of which may be in what the receiver got.
fn assert_no_secret(spans: &[Got], also: &[&str]) {
    let text = format!("{spans:?}");
    for t in fixture_tokens().values() {
        assert!(!text.contains(&t.secret), "a token secret was exported");
    }
    for s in also {
        assert!(!text.contains(s), "{s:?} was exported");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_runs_from_the_app_through_flagpost_into_upstream_over_grpc() {
    let up = FakeUpstream::start().await;
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (bin, addr) = flagpost(
        &up,
        &dir,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url())],
    );
    ready(&addr).await;
    // A first-seen frontend token: the request waits for its validation upstream.
    let tp = traceparent(TRACE, PARENT, true);
    let token = secret("frontend-all-dev");
    assert_eq!(
        frontend(&addr, &token, "?userId=alice-private-77", Some(&tp)).await,
        200
    );

    let server = the_request_span(&collector).await;

    validation_joins_the_trace(&collector, &up, &server).await;

    // A refused token: the refusal code on the span, and the log line carries the ids.
    let other = "4bf92f3577b34da6a3ce929d0e0e4799";
    assert_eq!(
        frontend(
            &addr,
            "default:development.unknown-secret-5",
            "",
            Some(&traceparent(other, PARENT, true))
        )
        .await,
        401
    );
    let refused = collector
        .span("the refused request", |s| {
            s.trace_id == other && s.kind == SERVER
        })
        .await;
    assert_eq!(refused.attr("flagpost.refusal"), "token_invalid");
    assert_eq!(refused.attr("http.response.status_code"), 401);
    assert_eq!(refused.status, 0, "a 4xx is the client's: status unset");

    background_work_is_traced(&collector).await;

    let log = {
        bin.terminate();
        let mut bin = bin;
        bin.exit_within(Duration::from_secs(10));
        bin.log()
    };
    let line = log
        .lines()
        .find(|l| l.contains("token refused"))
        .expect("the refusal is logged");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["trace_id"], other, "{line}");
    assert_eq!(v["span_id"], refused.span_id.as_str(), "{line}");
    assert_no_secret(
        &collector.spans(),
        &["alice-private-77", "unknown-secret-5"],
    );
    #[allow(clippy::print_stderr)]
    for s in collector.spans().iter().filter(|s| s.trace_id == TRACE) {
        eprintln!(
            "{} kind={} trace={} span={} parent={} status={} {:?}",
            s.name, s.kind, s.trace_id, s.span_id, s.parent_span_id, s.status, s.attributes
        );
    }
}

/// The server span of the first request: the app's span its parent, the conventions on it.
async fn the_request_span(collector: &Collector) -> Got {
    let server = collector
        .span("GET /api/frontend", |s| {
            s.name == "GET /api/frontend" && s.trace_id == TRACE
        })
        .await;
    assert_eq!(server.kind, SERVER);
    assert_eq!(
        server.parent_span_id, PARENT,
        "the app's span is the parent"
    );
    assert_eq!(server.via, "grpc");
    assert_eq!(server.attr("http.request.method"), "GET");
    assert_eq!(server.attr("http.route"), "/api/frontend");
    assert_eq!(server.attr("http.response.status_code"), 200, "an integer");
    assert_eq!(server.attr("url.path"), "/api/frontend");
    assert_eq!(server.attr("client.address"), "127.0.0.1");
    assert_eq!(server.attr("network.protocol.version"), "1.1");
    assert_eq!(server.attr("unleash.token.kind"), "frontend");
    assert_eq!(server.attr("unleash.token.environment"), "development");
    assert_eq!(server.attr("flagpost.answer"), "evaluated");
    assert_eq!(server.status, 0, "a 200 leaves the status unset");
    assert_eq!(server.resource["service.name"], "flagpost");
    assert!(
        !server.attributes.contains_key("url.query"),
        "no query by default"
    );
    server
}

/// The first-seen token's validation: a child of the request, the upstream call under it,
/// and `traceparent` sent upstream naming that call.
async fn validation_joins_the_trace(collector: &Collector, up: &FakeUpstream, server: &Got) {
    // The validation it waited for: a child of the request, and the upstream call under it.
    let validate = collector
        .span("validate tokens", |s| {
            s.name == "validate tokens" && s.trace_id == TRACE
        })
        .await;
    assert_eq!(validate.parent_span_id, server.span_id);
    let call = collector
        .span("POST /edge/validate", |s| {
            s.name == "POST /edge/validate" && s.trace_id == TRACE
        })
        .await;
    assert_eq!(call.kind, CLIENT);
    assert_eq!(call.parent_span_id, validate.span_id);
    assert_eq!(call.attr("http.response.status_code"), 200);
    assert_eq!(call.attr("flagpost.call"), "validate");
    // And the trace went on into upstream: the request carried the client span's context.
    let sent = up.requests_to("/edge/validate");
    let header = sent
        .iter()
        .filter_map(|r| r.header("traceparent"))
        .find(|h| h.contains(TRACE))
        .expect("traceparent sent upstream");
    assert_eq!(header, traceparent(TRACE, &call.span_id, true));
}

/// The startup poll, its upstream call, and the publish it led to.
async fn background_work_is_traced(collector: &Collector) {
    // Background work: the startup poll, its upstream call, and the publish it led to.
    let publish = collector
        .span("publish snapshot", |s| s.name == "publish snapshot")
        .await;
    assert!(publish.attr("flagpost.features").as_i64().unwrap() > 0);
    assert!(publish.attr("flagpost.compile_ms").as_f64().is_some());
    let fetch = collector
        .span("GET /api/client/features", |s| {
            s.name == "GET /api/client/features"
        })
        .await;
    assert_eq!(fetch.kind, CLIENT);
    assert_eq!(fetch.attr("flagpost.etag"), "none");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_and_json_with_headers_resource_and_gzip() {
    let up = FakeUpstream::start().await;
    for (protocol, via) in [("http/protobuf", "http/protobuf"), ("http", "http/json")] {
        let collector = Collector::start().await;
        let dir = tempfile::tempdir().unwrap();
        let (mut bin, addr) = flagpost(
            &up,
            &dir,
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url()),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.into()),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "x-collector-key=collector-secret-31".into(),
                ),
                ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".into()),
                ("OTEL_SERVICE_NAME", "edge-eu".into()),
                // Personal data, recorded only because these say so.
                ("FLAGPOST_OTEL_RECORD_QUERY", "true".into()),
                ("FLAGPOST_OTEL_RECORD_CONTEXT", "true".into()),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment=prod,team=flags%20team".into(),
                ),
            ],
        );
        ready(&addr).await;
        let token = secret("frontend-all-dev");
        assert_eq!(frontend(&addr, &token, "?userId=bob-41", None).await, 200);
        // Stopped at once: the final flush sends the request's span before the exit.
        bin.terminate();
        let status = bin.exit_within(Duration::from_secs(10));
        assert!(status.success());
        let server = collector
            .span("the request", |s| s.name == "GET /api/frontend")
            .await;
        assert_eq!(server.via, via);
        assert_eq!(
            server.parent_span_id, "",
            "no traceparent: a trace of its own"
        );
        assert_eq!(server.resource["service.name"], "edge-eu");
        assert_eq!(server.resource["deployment.environment"], "prod");
        assert_eq!(server.resource["team"], "flags team");
        assert_eq!(server.attr("url.query"), "userId=bob-41");
        assert!(server
            .attr("unleash.context")
            .as_str()
            .unwrap()
            .contains(r#""userId":"bob-41""#));
        let headers = collector.headers();
        assert!(headers
            .iter()
            .all(|h| h["x-collector-key"] == "collector-secret-31"));
        assert!(headers.iter().all(|h| h["content-encoding"] == "gzip"));
        let log = bin.log();
        assert!(
            !log.contains("collector-secret-31"),
            "the header value is never logged"
        );
        assert!(log.contains("exporting traces over OTLP"), "{log}");
        assert_no_secret(&collector.spans(), &[]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parent_based_sampling_follows_the_callers_decision() {
    let up = FakeUpstream::start().await;
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_bin, addr) = flagpost(
        &up,
        &dir,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url()),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio".into()),
            ("OTEL_TRACES_SAMPLER_ARG", "0".into()),
        ],
    );
    ready(&addr).await;
    let token = secret("frontend-all-dev");
    let unsampled = "11111111111111111111111111111111";
    let sampled = "22222222222222222222222222222222";
    // New traces (ratio 0) and a caller that did not sample: nothing.
    for _ in 0..20 {
        assert_eq!(frontend(&addr, &token, "", None).await, 200);
    }
    assert_eq!(
        frontend(
            &addr,
            &token,
            "",
            Some(&traceparent(unsampled, PARENT, false))
        )
        .await,
        200
    );
    // A caller that sampled: exported (after everything above, in one queue).
    assert_eq!(
        frontend(&addr, &token, "", Some(&traceparent(sampled, PARENT, true))).await,
        200
    );
    collector
        .span("the sampled request", |s| {
            s.trace_id == sampled && s.kind == SERVER
        })
        .await;
    let servers: Vec<Got> = collector
        .spans()
        .into_iter()
        .filter(|s| s.kind == SERVER)
        .collect();
    assert_eq!(
        servers.len(),
        1,
        "only the sampled caller's request: {servers:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ratio_traces_about_that_share_of_requests() {
    let up = FakeUpstream::start().await;
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_bin, addr) = flagpost(
        &up,
        &dir,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url()),
            ("OTEL_TRACES_SAMPLER", "traceidratio".into()),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25".into()),
        ],
    );
    ready(&addr).await;
    let token = secret("frontend-all-dev");
    many(&addr, &token, 400).await;
    // A caller's trace whose id the ratio keeps (the lowest there is), sent last: once it is
    // in, every span before it is too (one queue, in order).
    let last = "00000000000000000000000000000001";
    assert_eq!(
        frontend(&addr, &token, "", Some(&traceparent(last, PARENT, false))).await,
        200
    );
    collector
        .span("the last request", |s| {
            s.trace_id == last && s.kind == SERVER
        })
        .await;
    let traced = collector
        .spans()
        .iter()
        .filter(|s| s.kind == SERVER && s.trace_id != last)
        .count();
    // 400 draws at 1/4: 100 expected, outside 50..=150 once in about 10^8 runs.
    assert!(
        (50..=150).contains(&traced),
        "{traced} of 400 requests traced"
    );
    let drawn = collector
        .spans()
        .into_iter()
        .find(|s| s.kind == SERVER && s.trace_id != last)
        .unwrap();
    assert_eq!(drawn.attr("flagpost.sampled"), true);
}

/// `n` Frontend API requests in turn, each answered 200.
pub(crate) async fn many(addr: &str, token: &str, n: usize) {
    let c = client();
    for _ in 0..n {
        let r = c
            .get(format!("http://{addr}/api/frontend"))
            .header("authorization", token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "every request is answered");
    }
}
