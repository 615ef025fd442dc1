//! The OpenTelemetry settings as `check-config` shows them: Unleash Edge's flags, the
//! specification's variables (the `_TRACES_` ones first), secrets redacted, bad values refused.

#[test]
fn otel_settings_are_read_checked_and_shown_redacted() {
    use crate::edge_settings::check_config;
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
    use crate::edge_settings::check_config;
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
