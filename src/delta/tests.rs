use super::*;
use crate::change::diff;
use crate::document::Document;
use crate::token::Projects;

fn doc(features: &[(&str, &str, bool, &[i32])], segments: &[(i32, &str)]) -> Document {
    let features: Vec<String> = features
        .iter()
        .map(|(name, project, on, segs)| {
            let segs: Vec<String> = segs.iter().map(i32::to_string).collect();
            format!(
                r#"{{"name":"{name}","enabled":{on},"project":"{project}","strategies":[{{"name":"default","segments":[{}]}}]}}"#,
                segs.join(",")
            )
        })
        .collect();
    let segments: Vec<String> = segments
        .iter()
        .map(|(id, v)| {
            format!(r#"{{"id":{id},"constraints":[{{"contextName":"userId","operator":"IN","values":["{v}"]}}]}}"#)
        })
        .collect();
    Document::parse(
        format!(
            r#"{{"features":[{}],"segments":[{}]}}"#,
            features.join(","),
            segments.join(",")
        )
        .as_bytes(),
    )
    .unwrap()
}

fn events_of(change: &ChangeSet, filter: &Filter) -> Vec<serde_json::Value> {
    let r = render(change, filter);
    let body = events_body(&[&r.events]);
    serde_json::from_slice::<serde_json::Value>(&body).unwrap()["events"]
        .as_array()
        .unwrap()
        .clone()
}

fn kinds(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let what = e["feature"]["name"]
                .as_str()
                .or(e["featureName"].as_str())
                .map(str::to_string)
                .or(e["segment"]["id"].as_i64().map(|i| i.to_string()))
                .or(e["segmentId"].as_i64().map(|i| i.to_string()))
                .unwrap_or_default();
            format!("{} {what}", e["type"].as_str().unwrap())
        })
        .collect()
}

#[test]
fn each_filter_sees_only_its_projects_and_a_move_out_is_a_removal() {
    let before = doc(
        &[
            ("a", "default", true, &[]),
            ("b", "checkout", true, &[]),
            ("c", "default", true, &[]),
        ],
        &[],
    );
    let after = doc(
        &[
            ("a", "default", false, &[]),
            ("b", "checkout", false, &[]),
            ("c", "checkout", true, &[]),
        ],
        &[],
    );
    let mut change = diff(Some(&before), &after);
    change.revision = 7;
    let default = Filter::new(Projects::from_names(["default"]), None);
    let events = events_of(&change, &default);
    assert_eq!(kinds(&events), ["feature-removed c", "feature-updated a"]);
    assert_eq!(events[0]["project"], "default");
    assert!(events.iter().all(|e| e["eventId"] == 7));
    let checkout = Filter::new(Projects::from_names(["checkout"]), None);
    assert_eq!(
        kinds(&events_of(&change, &checkout)),
        ["feature-updated b", "feature-updated c"]
    );
    // Both projects: the move is a removal from the old project, then the update.
    let all = Filter::new(Projects::All, None);
    assert_eq!(
        kinds(&events_of(&change, &all)),
        [
            "feature-removed c",
            "feature-updated a",
            "feature-updated b",
            "feature-updated c"
        ]
    );
    let prefixed = Filter::new(Projects::All, Some("b".into()));
    assert_eq!(kinds(&events_of(&change, &prefixed)), ["feature-updated b"]);
    // Rendered once per filter.
    assert!(Arc::ptr_eq(
        &render(&change, &default),
        &render(&change, &default)
    ));
}

#[test]
fn segments_go_before_the_features_that_use_them_and_only_where_used() {
    let before = doc(
        &[("a", "default", true, &[]), ("b", "checkout", true, &[2])],
        &[(1, "x"), (2, "y")],
    );
    let after = doc(
        &[("a", "default", true, &[1]), ("b", "checkout", true, &[2])],
        &[(1, "x"), (2, "z")],
    );
    let change = diff(Some(&before), &after);
    let default = Filter::new(Projects::from_names(["default"]), None);
    // Segment 1 did not change, but `a` now uses it: the client gets it first.
    assert_eq!(
        kinds(&events_of(&change, &default)),
        ["segment-updated 1", "feature-updated a"]
    );
    let checkout = Filter::new(Projects::from_names(["checkout"]), None);
    assert_eq!(kinds(&events_of(&change, &checkout)), ["segment-updated 2"]);
    let gone = doc(&[("a", "default", true, &[])], &[]);
    let removal = diff(Some(&after), &gone);
    assert_eq!(
        kinds(&events_of(&removal, &checkout)),
        [
            "feature-removed b",
            "segment-removed 1",
            "segment-removed 2"
        ]
    );
}

#[test]
fn nothing_for_a_filter_is_no_frame() {
    let before = doc(&[("a", "default", true, &[])], &[]);
    let after = doc(&[("a", "default", false, &[])], &[]);
    let change = diff(Some(&before), &after);
    let other = Filter::new(Projects::from_names(["checkout"]), None);
    let r = render(&change, &other);
    assert!(r.events.is_empty() && r.frame.is_empty());
}

#[test]
fn frames_are_server_sent_events() {
    let f = frame("unleash-updated", 12, &[b"{\"a\":1}", b"", b"{\"b\":2}"]);
    assert_eq!(
        String::from_utf8(f).unwrap(),
        "event: unleash-updated\nid: 12\ndata: {\"events\":[{\"a\":1},{\"b\":2}]}\n\n"
    );
}

#[test]
fn event_ids_are_read_from_headers() {
    assert_eq!(parse_id("42"), Some(42));
    assert_eq!(parse_id("\"42\""), Some(42));
    assert_eq!(parse_id("W/\"42\""), Some(42));
    assert_eq!(parse_id(" 7 "), Some(7));
    for bad in [
        "",
        "\"\"",
        "-1",
        "4x",
        "\"abc\"",
        "123456789012345678901234",
    ] {
        assert_eq!(parse_id(bad), None, "{bad}");
    }
}

proptest::proptest! {
    #[test]
    fn parse_id_never_panics_and_round_trips(n: u64, junk in ".{0,30}") {
        proptest::prop_assert_eq!(parse_id(&n.to_string()), Some(n));
        proptest::prop_assert_eq!(parse_id(&format!("\"{n}\"")), Some(n));
        let _ = parse_id(&junk);
    }
}
