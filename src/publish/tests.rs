use super::*;
use crate::token::Projects;

fn doc(features: &[(&str, bool)], segments: &[(i32, &str)]) -> Document {
    let features: Vec<String> = features
        .iter()
        .map(|(name, on)| {
            format!(
                r#"{{"name":"{name}","enabled":{on},"project":"default","strategies":[{{"name":"default"}}]}}"#
            )
        })
        .collect();
    let segments: Vec<String> = segments
        .iter()
        .map(|(id, value)| {
            format!(
                r#"{{"id":{id},"constraints":[{{"contextName":"userId","operator":"IN","values":["{value}"]}}]}}"#
            )
        })
        .collect();
    let text = format!(
        r#"{{"version":2,"features":[{}],"segments":[{}]}}"#,
        features.join(","),
        segments.join(",")
    );
    Document::parse(text.as_bytes()).unwrap()
}

fn removed(c: &ChangeSet) -> Vec<&str> {
    c.features_removed.iter().map(|f| f.name.as_str()).collect()
}

#[test]
fn diff_names_what_was_added_changed_and_removed() {
    let a = doc(
        &[("a", true), ("b", true), ("c", true)],
        &[(1, "x"), (2, "y")],
    );
    let b = doc(
        &[("d", true), ("a", true), ("b", false)],
        &[(2, "z"), (3, "w")],
    );
    let changes = diff(Some(&a), &b);
    assert_eq!(changes.updated_names(), ["d", "b"]);
    assert_eq!(removed(&changes), ["c"]);
    assert_eq!(changes.segments_updated, [2, 3]);
    assert_eq!(changes.segments_removed, [1]);
    let first = diff(None, &a);
    assert_eq!(first.updated_names(), ["a", "b", "c"]);
    assert_eq!(first.segments_updated, [1, 2]);
    assert!(diff(Some(&a), &a).is_empty());
}

fn publisher(history: usize) -> (Arc<Store>, Arc<Publisher>) {
    let publisher = Arc::new(Publisher::new(
        Store::new([("development".to_string(), Projects::All)]),
        Arc::new(Metrics::new(&[])),
        history,
    ));
    (publisher.store(), publisher)
}

#[tokio::test]
async fn every_change_is_announced_once_in_revision_order() {
    let (store, publisher) = publisher(10);
    let mut rx = publisher.subscribe("development");
    publisher
        .publish("development", doc(&[("a", true)], &[]))
        .await;
    publisher
        .publish("development", doc(&[("a", true)], &[]))
        .await;
    publisher
        .publish("development", doc(&[("a", false), ("b", true)], &[]))
        .await;
    let first = rx.recv().await.unwrap();
    assert!(
        first.updated_names().is_empty(),
        "a first snapshot lists nothing"
    );
    // Without upstream revision ids, the counter starts at the time in seconds: an id every
    // SDK's types can hold (u32).
    assert!(
        first.revision > 1_600_000_000 && u32::try_from(first.revision).is_ok(),
        "{}",
        first.revision
    );
    // The unchanged publish announced nothing: the next one is one more.
    let second = rx.recv().await.unwrap();
    assert_eq!(second.revision, first.revision + 1);
    assert_eq!(second.updated_names(), ["a", "b"]);
    assert!(rx.try_recv().is_err(), "nothing else was announced");
    assert_eq!(publisher.revision("development"), second.revision);
    let snapshot = store.snapshot("development").unwrap();
    assert_eq!(snapshot.features().len(), 2);
    assert_eq!(snapshot.revision(), second.revision);
    // An environment flagpost does not serve is neither served nor announced.
    assert!(publisher
        .publish_blocking("staging", doc(&[("a", true)], &[]))
        .is_none());
    assert_eq!(publisher.revision("staging"), 0);
}

fn with_revision(mut d: Document, revision: u64) -> Document {
    d.revision = Some(revision);
    d
}

#[test]
fn upstream_revisions_are_the_ids_and_ids_only_grow() {
    let (_, publisher) = publisher(10);
    let p = |d| {
        publisher
            .publish_blocking("development", d)
            .unwrap()
            .revision
    };
    assert_eq!(p(with_revision(doc(&[("a", true)], &[]), 64)), 64);
    assert_eq!(p(with_revision(doc(&[("a", false)], &[]), 75)), 75);
    // Unchanged: no new id, whatever upstream says.
    assert_eq!(p(with_revision(doc(&[("a", false)], &[]), 80)), 75);
    // Upstream went back (a restored database): the id still grows.
    assert_eq!(p(with_revision(doc(&[("a", true)], &[]), 12)), 76);
    assert_eq!(p(doc(&[("b", true)], &[])), 77);
}

#[test]
fn a_held_revision_gets_what_was_missed_and_any_other_a_hydration() {
    let (_, publisher) = publisher(2);
    for (i, on) in [(10, true), (11, false), (12, true), (13, false)] {
        publisher.publish_blocking("development", with_revision(doc(&[("a", on)], &[]), i));
    }
    let since = |last| {
        publisher
            .since("development", last)
            .unwrap()
            .missed
            .map(|m| m.iter().map(|c| c.revision).collect::<Vec<_>>())
    };
    assert_eq!(since(Some(13)), Some(vec![]), "current");
    assert_eq!(since(Some(12)), Some(vec![13]));
    // 11 fell out of the history of 2.
    assert_eq!(since(Some(11)), None);
    assert_eq!(since(Some(99)), None);
    assert_eq!(since(None), None);
    assert!(publisher.since("staging", Some(13)).is_none());
    let (opened, mut rx) = publisher.open("development", Some(12)).unwrap();
    assert_eq!(opened.snapshot.revision(), 13);
    publisher.publish_blocking("development", with_revision(doc(&[("b", true)], &[]), 14));
    assert_eq!(rx.try_recv().unwrap().revision, 14);
}

#[test]
fn flags_the_engine_cannot_compile_are_counted_by_reason_and_the_revision_is_shown() {
    let store = Store::new([("development".to_string(), Projects::All)]);
    let metrics = Arc::new(Metrics::new(&[]));
    let publisher = Publisher::new(store, metrics.clone(), 4);
    // A segment that does not exist cannot be compiled: the flag is served off.
    let text = r#"{"version":2,"features":[
        {"name":"fine","enabled":true,"project":"default","strategies":[{"name":"default"}]},
        {"name":"no-segment","enabled":true,"project":"default",
         "strategies":[{"name":"default","segments":[404]}]}],
        "meta":{"revisionId":77}}"#;
    publisher.publish_blocking("development", Document::parse(text.as_bytes()).unwrap());
    let warnings = |reason: &str| {
        metrics
            .more
            .feature_state_warnings
            .with_label_values(&["development", reason])
            .get()
    };
    // Its rule cannot be compiled (off) and neither can its variants' (default variant).
    assert_eq!(warnings("always_off"), 1);
    assert_eq!(warnings("default_variant"), 1);
    assert_eq!(warnings("unreadable") + warnings("other"), 0);
    assert_eq!(
        metrics
            .more
            .last_applied_revision
            .with_label_values(&["development"])
            .get(),
        77
    );
}
