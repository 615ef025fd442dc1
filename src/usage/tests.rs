use super::*;

fn usage(max_entries: usize, max_bytes: usize, forward: bool) -> Usage {
    Usage::new(
        UsageConfig {
            forward,
            max_entries,
            max_bytes,
            per_flag_metrics: true,
            app_name: "flagpost".into(),
            instance_id: "fp-1".into(),
        },
        Arc::new(Metrics::new(&["/x"])),
    )
}

fn row(app: &str, flag: &str, yes: u64, variants: &[(&str, u64)]) -> Row {
    Row {
        app: app.into(),
        flag: flag.into(),
        hour: 3600,
        environment: None,
        yes,
        no: 1,
        variants: variants.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    }
}

#[test]
fn sums_per_app_flag_and_hour_and_variants_by_name() {
    let u = usage(100, 1 << 20, true);
    u.record(
        "dev",
        Source::Client,
        vec![row("a", "f", 2, &[("red", 1)])],
        |_| true,
    );
    u.record(
        "dev",
        Source::Frontend,
        vec![
            row("a", "f", 3, &[("red", 2), ("blue", 1)]),
            row("b", "f", 1, &[]),
        ],
        |_| true,
    );
    let taken = u.take();
    let dev = &taken["dev"];
    let key = RowKey {
        app: "a".into(),
        flag: "f".into(),
        hour: 3600,
    };
    assert_eq!(dev.rows[&key].yes, 5);
    assert_eq!(dev.rows[&key].no, 2);
    assert_eq!(dev.rows[&key].variants["red"], 3);
    assert_eq!(dev.rows[&key].variants["blue"], 1);
    assert_eq!(dev.rows.len(), 2);
    assert_eq!(u.buffered(), (0, 0));
}

#[test]
fn the_bound_drops_and_counts_what_does_not_fit() {
    let u = usage(2, 1 << 20, true);
    u.record(
        "dev",
        Source::Client,
        vec![
            row("a", "f1", 1, &[]),
            row("a", "f2", 1, &[]),
            row("a", "f3", 5, &[]),
        ],
        |_| true,
    );
    assert_eq!(u.buffered(), (2, 4));
    let text = String::from_utf8(u.metrics.render()).unwrap();
    assert!(
        text.contains("flagpost_usage_rows_dropped_total{reason=\"buffer_full\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("flagpost_usage_evaluations_total{stage=\"dropped\"} 6"),
        "{text}"
    );
    // Existing rows still add up.
    u.record("dev", Source::Client, vec![row("a", "f1", 1, &[])], |_| {
        true
    });
    assert_eq!(u.buffered(), (2, 6));
    let tiny = usage(100, ROW_OVERHEAD + 4, true);
    tiny.record(
        "dev",
        Source::Client,
        vec![row("a", "f", 1, &[]), row("b", "g", 1, &[])],
        |_| true,
    );
    assert_eq!(tiny.buffered().0, 1);
}

#[test]
fn offline_and_mismatched_rows_are_counted_and_discarded() {
    let u = usage(100, 1 << 20, false);
    u.record("dev", Source::Client, vec![row("a", "f", 1, &[])], |_| true);
    assert_eq!(u.buffered(), (0, 0));
    let reg = body::registration(br#"{"appName":"web"}"#).unwrap();
    u.register("dev", &Projects::All, Source::Client, reg);
    let text = String::from_utf8(u.metrics.render()).unwrap();
    assert!(
        text.contains("flagpost_usage_registrations_dropped_total{reason=\"offline\"} 1"),
        "{text}"
    );
    let u = usage(100, 1 << 20, true);
    let mut other = row("a", "f", 1, &[]);
    other.environment = Some("prod".into());
    u.record(
        "dev",
        Source::Bulk,
        vec![other, row("a", "g", 1, &[])],
        |_| true,
    );
    assert_eq!(u.buffered(), (1, 2));
    let text = String::from_utf8(u.metrics.render()).unwrap();
    assert!(text.contains("flagpost_usage_rows_dropped_total{reason=\"environment_mismatch\"} 1"));
    assert!(text.contains(
        "flagpost_flag_evaluations_total{environment=\"dev\",flag=\"g\",result=\"yes\"} 1"
    ));
}

#[test]
fn registrations_get_flagpost_in_connect_via() {
    let u = usage(100, 1 << 20, true);
    let reg = body::registration(br#"{"appName":"web","instanceId":"b-1","connectVia":[{"appName":"edge","instanceId":"e"}]}"#).unwrap();
    u.register(
        "dev",
        &Projects::from_names(["default"]),
        Source::Frontend,
        reg,
    );
    let taken = u.take();
    let app = &taken["dev"].apps[&("web".to_string(), "b-1".to_string())];
    assert_eq!(
        app["connectVia"],
        json!([{"appName":"edge","instanceId":"e"},{"appName":"flagpost","instanceId":"fp-1"}])
    );
    assert_eq!(app["sdkType"], "frontend");
    assert_eq!(app["environment"], "dev");
    assert_eq!(app["projects"], json!(["default"]));
}
