//! OpenTelemetry traces leaving the binary, as an OTLP receiver built from the official
//! protobuf definitions gets them (`otlp.rs`): over gRPC and HTTP, the spans' names, kinds,
//! parents and attributes, `traceparent` in from the app and out to the scripted upstream,
//! sampling, no secret anywhere, and a collector that fails costing only dropped spans.
//!
//! Multi-threaded: the fake upstream and the receiver answer while this thread blocks on the
//! child's log.

use std::time::{Duration, Instant};

use crate::edge::edge_config;
use crate::harness::*;
use crate::otlp::{Collector, Got, Mode};
use crate::upstream::{fixture_tokens, secret, FakeUpstream};

const SERVER: i32 = 2;
const CLIENT: i32 = 3;
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

/// flagpost in edge mode against `up`, exporting to `collector` with `env` (OTEL_* and more).
fn flagpost(
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
async fn ready(addr: &str) {
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

fn traceparent(trace: &str, parent: &str, sampled: bool) -> String {
    format!("00-{trace}-{parent}-{}", if sampled { "01" } else { "00" })
}

async fn frontend(addr: &str, token: &str, query: &str, traceparent: Option<&str>) -> u16 {
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

/// VmRSS of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn many(addr: &str, token: &str, n: usize) {
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

async fn metrics_text(addr: &str) -> String {
    client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `flagpost_otel_spans_total{outcome}` at `addr`.
async fn spans_counted(addr: &str, outcome: &str) -> f64 {
    let series = format!("flagpost_otel_spans_total{{outcome=\"{outcome}\"}} ");
    metrics_text(addr)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_hangs_or_is_down_costs_dropped_spans_only() {
    let up = FakeUpstream::start().await;
    let collector = Collector::start().await;
    collector.set_mode(Mode::Hang);
    let dir = tempfile::tempdir().unwrap();
    let (mut bin, addr) = flagpost(
        &up,
        &dir,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url()),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000".into()),
        ],
    );
    ready(&addr).await;
    let token = secret("frontend-all-dev");
    many(&addr, &token, 200).await;
    let before = rss_kib(bin.pid());
    // Slow: one export hangs; the queue fills and the rest is dropped, never held.
    let started = Instant::now();
    many(&addr, &token, 3000).await;
    let slow = started.elapsed();
    let after = rss_kib(bin.pid());
    let full = spans_counted(&addr, "dropped_queue_full").await;
    assert!(
        full >= 500.0,
        "3,200 spans, room for 2,048 queued and 512 in flight: {full}"
    );
    assert!(
        after < before + 16 * 1024,
        "memory flat while spans cannot leave: {before} KiB, then {after} KiB"
    );
    bin.wait_for("cannot export spans to the OpenTelemetry collector");
    bin.wait_for("the span queue is full");
    // Down: every connection closed while 2,000 requests pass.
    collector.set_mode(Mode::Drop);
    let started = Instant::now();
    many(&addr, &token, 2000).await;
    let down = started.elapsed();
    eventually("spans counted as failed", || {
        let addr = addr.clone();
        async move { spans_counted(&addr, "dropped_export_failed").await >= 1000.0 }
    })
    .await;
    assert_eq!(spans_counted(&addr, "exported").await, 0.0);
    // Back: the spans of new requests arrive, and the log says so once.
    collector.set_mode(Mode::Accept);
    let trace = "33333333333333333333333333333333";
    eventually("spans exported again", || {
        let (addr, token, collector) = (addr.clone(), token.clone(), collector.clone());
        async move {
            frontend(&addr, &token, "", Some(&traceparent(trace, PARENT, true))).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            collector.spans().iter().any(|s| s.trace_id == trace)
        }
    })
    .await;
    bin.wait_for("the OpenTelemetry collector takes spans again");
    let log = bin.lines_so_far().join("\n");
    for line in [
        "cannot export spans to the OpenTelemetry",
        "the span queue is full",
    ] {
        assert_eq!(
            log.matches(line).count(),
            1,
            "{line:?} once per change of state"
        );
    }
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "3,000 requests, collector hanging: {slow:?}; 2,000, collector down: {down:?}; \
             RSS {before} -> {after} KiB; {full} spans dropped at the full queue"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_collector_does_not_hold_the_exit_past_the_grace() {
    let up = FakeUpstream::start().await;
    let collector = Collector::start().await;
    collector.set_mode(Mode::Hang);
    let dir = tempfile::tempdir().unwrap();
    let (mut bin, addr) = flagpost(
        &up,
        &dir,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url())],
    );
    ready(&addr).await;
    many(&addr, &secret("frontend-all-dev"), 50).await;
    let signalled = Instant::now();
    bin.terminate();
    assert!(bin.exit_within(Duration::from_secs(15)).success());
    // Grace 3 s for the drain, 3 s more at most for the final flush.
    assert!(
        signalled.elapsed() < Duration::from_secs(8),
        "{:?}",
        signalled.elapsed()
    );
}

#[test]
fn otel_settings_are_read_checked_and_shown_redacted() {
    use crate::edge_compat::check_config;
    // Unleash Edge's flags, the specification's variables, the `_TRACES_` variants first.
    let out = check_config(
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "x-honeycomb-team=hc-key-99,x-other=v",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"),
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
        ],
        &["--otel-exporter-otlp-protocol", "http"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let config: toml::Table = text.parse().unwrap();
    let otel = config["otel"].as_table().unwrap();
    assert_eq!(
        otel["endpoint"].as_str(),
        Some("http://collector:4318/v1/traces")
    );
    assert_eq!(
        otel["protocol"].as_str(),
        Some("http/json"),
        "Edge's http is JSON"
    );
    assert_eq!(otel["timeout"].as_str(), Some("2500ms"));
    assert_eq!(otel["sampler"].as_str(), Some("parentbased_traceidratio"));
    assert_eq!(otel["sampler_arg"].as_float(), Some(0.01));
    assert_eq!(
        otel["headers"]["x-honeycomb-team"].as_str(),
        Some("<redacted>")
    );
    assert!(!text.contains("hc-key-99"), "{text}");
    // The traces endpoint is used as given; gRPC is the default, as in Unleash Edge.
    let out = check_config(
        &[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "https://otel.example:4317",
        )],
        &[],
    );
    let config: toml::Table = String::from_utf8_lossy(&out.stdout).parse().unwrap();
    assert_eq!(
        config["otel"]["endpoint"].as_str(),
        Some("https://otel.example:4317")
    );
    assert_eq!(config["otel"]["protocol"].as_str(), Some("grpc"));
}

#[test]
fn otel_is_off_without_an_endpoint_and_bad_settings_are_refused() {
    use crate::edge_compat::check_config;
    // Off: no endpoint, or the SDK disabled.
    for env in [
        vec![("OTEL_SERVICE_NAME", "x")],
        vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_SDK_DISABLED", "true"),
        ],
    ] {
        let out = check_config(&env, &[]);
        let config: toml::Table = String::from_utf8_lossy(&out.stdout).parse().unwrap();
        assert!(config.get("otel").is_none(), "{env:?}");
    }
    // Refused, exit 64, naming the setting.
    for (var, value) in [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift"),
        ("OTEL_TRACES_SAMPLER", "sometimes"),
        ("OTEL_TRACES_SAMPLER_ARG", "2"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
    ] {
        let out = check_config(
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
                (var, value),
            ],
            &[],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{var}: {err}");
        assert!(err.contains(var), "{var}: {err}");
    }
}
