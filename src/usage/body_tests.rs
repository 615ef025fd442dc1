use super::*;
use proptest::prelude::*;

#[test]
fn reads_the_captured_bodies() {
    let fixture = |p: &str| -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/upstream")
            .join(p);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    };
    let body = fixture("client-metrics/metrics.json")["request"]["body"].to_string();
    let rows = metrics(body.as_bytes()).unwrap();
    assert_eq!(rows.len(), 3);
    let color = rows.iter().find(|r| r.flag == "variants.color").unwrap();
    assert_eq!((color.yes, color.no), (7, 0));
    assert_eq!(color.variants["blue"], 4);
    assert_eq!(
        color.hour,
        DateTime::parse_from_rfc3339("2026-11-28T04:00:00Z")
            .unwrap()
            .timestamp()
    );
    let body = fixture("client-metrics/register.json")["request"]["body"].to_string();
    let reg = registration(body.as_bytes()).unwrap();
    assert_eq!(
        (reg.app.as_str(), reg.instance.as_str()),
        ("realstack-probe", "probe-1")
    );
    assert_eq!(reg.fields["sdkVersion"], "unleash-client-node:6.12.1");
    let body = fixture("client-metrics/bulk.client-all-dev.json")["request"]["body"].to_string();
    let (apps, rows) = bulk(body.as_bytes()).unwrap();
    assert_eq!((apps.len(), rows.len()), (2, 3));
    assert_eq!(rows[2].environment.as_deref(), Some("production"));
    let body = fixture("frontend/metrics.json")["request"]["body"].to_string();
    assert_eq!(metrics(body.as_bytes()).unwrap().len(), 2);
}

#[test]
fn errors_name_the_field() {
    let err = |b: &str| metrics(b.as_bytes()).unwrap_err().to_string();
    assert_eq!(err(r#"{"bucket":{}}"#), "`appName` is required");
    assert_eq!(
        err(r#"{"appName":"a"}"#),
        "`bucket` is required and must be an object"
    );
    assert!(
        err(r#"{"appName":"a","bucket":{"start":"x","stop":"x","toggles":{}}}"#)
            .starts_with("`bucket.start`")
    );
    let e = err(
        r#"{"appName":"a","bucket":{"start":"2026-01-01T00:00:00Z","stop":"2026-01-01T00:01:00Z","toggles":{"f":{"yes":-1}}}}"#,
    );
    assert_eq!(
        e,
        "`bucket.toggles.f.yes` must be a whole number, 0 or more"
    );
    let e = err(
        r#"{"appName":"a","bucket":{"start":"2026-01-01T00:00:00Z","stop":"2026-01-01T00:01:00Z","toggles":{"f":{"variants":{"v":"x"}}}}}"#,
    );
    assert_eq!(e, "`bucket.toggles.f.variants.v` must be a number");
    assert_eq!(
        bulk(br#"{"applications":[]}"#).unwrap_err().to_string(),
        "`metrics` is required"
    );
    assert_eq!(
        bulk(br#"{"metrics":[{"appName":"a","featureName":"f"}]}"#)
            .unwrap_err()
            .to_string(),
        "`metrics[0].timestamp` is required"
    );
    assert_eq!(
        registration(b"[]").unwrap_err().to_string(),
        "`body` must be a JSON object"
    );
}

#[test]
fn counts_are_refused_while_scanning() {
    let toggles: Vec<String> = (0..=MAX_ROWS)
        .map(|i| format!(r#""f{i}":{{"yes":1}}"#))
        .collect();
    let body = format!(
        r#"{{"appName":"a","bucket":{{"start":"2026-01-01T00:00:00Z","stop":"2026-01-01T00:01:00Z","toggles":{{{}}}}}}}"#,
        toggles.join(",")
    );
    assert_eq!(
        metrics(body.as_bytes()).unwrap_err().to_string(),
        format!("`body` has an object or array with more than {MAX_ROWS} entries")
    );
    let deep = format!("{}{}", "[".repeat(40), "]".repeat(40));
    assert!(bulk(deep.as_bytes())
        .unwrap_err()
        .to_string()
        .contains("nests deeper"));
    let many = format!(
        "{{\"metrics\":[{}]}}",
        vec!["[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17]"; 9_500].join(",")
    );
    assert!(bulk(many.as_bytes())
        .unwrap_err()
        .to_string()
        .contains("values"));
    // Exactly at the limit is fine.
    let toggles: Vec<String> = (0..MAX_ROWS)
        .map(|i| format!(r#""f{i}":{{"yes":1}}"#))
        .collect();
    let body = format!(
        r#"{{"appName":"a","bucket":{{"start":"2026-01-01T00:00:00Z","stop":"2026-01-01T00:01:00Z","toggles":{{{}}}}}}}"#,
        toggles.join(",")
    );
    assert_eq!(metrics(body.as_bytes()).unwrap().len(), MAX_ROWS);
    assert!(metrics(b"{} x")
        .unwrap_err()
        .to_string()
        .contains("not valid JSON"));
}

proptest! {
    #[test]
    fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = metrics(&bytes);
        let _ = registration(&bytes);
        let _ = bulk(&bytes);
    }

    #[test]
    fn structured_garbage_never_panics(s in r#"\{"(appName|bucket|metrics|applications)":(\{|\[|"|[0-9])[ -~]{0,80}"#) {
        let _ = metrics(s.as_bytes());
        let _ = bulk(s.as_bytes());
    }
}
