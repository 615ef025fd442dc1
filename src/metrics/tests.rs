use super::*;

#[test]
fn renders_every_family() {
    let m = Metrics::new(&["/a", "/b"]);
    m.observe_request(1, &http::Method::GET, 200, 0.001);
    m.observe_request(1, &http::Method::GET, 204, 0.001);
    m.observe_request(0, &http::Method::PATCH, 503, 0.001);
    m.token_decisions.with_label_values(&["allowed"]).inc();
    m.snapshot_features
        .with_label_values(&["development"])
        .set(3);
    let text = String::from_utf8(m.render()).unwrap();
    assert!(
        text.contains("flagpost_http_requests_total{method=\"GET\",route=\"/b\",status=\"2xx\"} 2")
    );
    assert!(text
        .contains("flagpost_http_requests_total{method=\"other\",route=\"/a\",status=\"5xx\"} 1"));
    assert!(text.contains("flagpost_http_request_duration_seconds_count{route=\"/b\"} 2"));
    assert!(text.contains("flagpost_token_decisions_total{result=\"allowed\"} 1"));
    assert!(text.contains("flagpost_snapshot_features{environment=\"development\"} 3"));
}
