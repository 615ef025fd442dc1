//! Generated-input properties that guard every copy flagpost keeps of what unleash-yggdrasil
//! knows: its walk of the compiled flags (`engine.rs`), which results chance or the clock
//! decides (`volatility.rs`), which flags need no context (`document::context_free`), and the
//! JSON flagpost writes by hand (Frontend toggles, Client API bodies, delta hydrations, SSE
//! frames). Whole flag sets are generated: strategies of every built-in kind, constraints with
//! every operator on every kind of field (`currentTime` values made from the instants the
//! properties evaluate at), segments, variants with every stickiness and overrides,
//! dependencies, several projects, odd names and payloads; and contexts with any subset of the
//! fields. `PROPTEST_CASES` raises the number of cases (the defaults are below).

use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::{json, Value};
use unleash_types::client_features::{ClientFeatures, ClientFeaturesDelta, Context};
use unleash_yggdrasil::{EngineState, UpdateMessage};

use super::generate::*;
use super::*;
use crate::snapshot::{Filter, Snapshot};

fn parsed(set: &Value) -> (Document, FrontendView, EngineState) {
    let document = Document::parse(set.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("a generated flag set does not parse: {e}"));
    let (view, _) = FrontendView::compile(&document);
    let theirs = EngineState::default();
    let typed: ClientFeatures =
        serde_json::from_value(set.clone()).unwrap_or_else(|e| panic!("{e}"));
    theirs.take_state(UpdateMessage::FullResponse(typed));
    (document, view, theirs)
}

/// yggdrasil's answer for a flag, as a Frontend API toggle object built with serde.
fn their_toggle(theirs: &EngineState, feature: &crate::document::Feature, ctx: &Context) -> Value {
    let v = theirs.get_variant(&feature.name, ctx, &None);
    let mut variant = json!({"name": v.name, "enabled": v.enabled,
        "feature_enabled": v.feature_enabled, "featureEnabled": v.feature_enabled});
    if let Some(p) = &v.payload {
        variant["payload"] = json!({"type": p.payload_type, "value": p.value});
    }
    json!({"name": feature.name, "enabled": v.feature_enabled,
        "impressionData": feature.impression_data, "variant": variant})
}

/// Cases per property: 1,024, or `PROPTEST_CASES`.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// Draws of yggdrasil's answer: more than one when it draws at random.
const DRAWS: usize = 8;

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// The toggles flagpost serves are, field for field, what yggdrasil's `EngineState` answers
    /// (built with serde), for every flag and context, except where the engine draws at
    /// random; there flagpost must treat the result as chance too. The clock is fixed here,
    /// so the clock's flags are compared as well.
    #[test]
    fn served_toggles_are_yggdrasils(
        set in flag_set(),
        contexts in proptest::collection::vec(context(), 1..4),
        offset in proptest::sample::select(OFFSETS),
    ) {
        let (document, view, theirs) = parsed(&set);
        for ctx in contexts {
            let clock = Clock::of(&ctx);
            let mut fixed = ctx.clone();
            fix_current_time_at(&mut fixed, instant(t0() + offset));
            let body = frontend_answer((&view, &document), &Projects::All, &fixed, clock, Listing::All).body;
            let served: Value = serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{e}"));
            let served = served["toggles"].as_array().cloned().unwrap_or_default();
            prop_assert_eq!(served.len(), document.features.len());
            for (i, (feature, toggle)) in document.features.iter().zip(&served).enumerate() {
                let draws: Vec<Value> =
                    (0..DRAWS).map(|_| their_toggle(&theirs, feature, &fixed)).collect();
                let random = draws.iter().any(|d| d != &draws[0]);
                // Chance alone (the clock is fixed here).
                if view.chance[i].decides(&fixed, Clock::Given) {
                    continue;
                }
                prop_assert!(!random, "yggdrasil draws {:?} at random for {:?}, flagpost does not treat it as chance: {:?}", feature.name, fixed, draws);
                prop_assert_eq!(toggle, &draws[0], "{:?} with {:?}", feature.name, fixed);
            }
        }
    }

    /// The memo's invariant: for any flag set, context and instant t, the stable part of the
    /// answer at t is the stable part at every t' between t and the instant the memo says the
    /// answer holds until (and the same when evaluated again at t: chance is not in it).
    #[test]
    fn the_stable_part_holds_until_the_memo_says(
        set in flag_set(),
        ctx in context(),
        offset in proptest::sample::select(OFFSETS),
    ) {
        let (document, view, _) = parsed(&set);
        let clock = Clock::of(&ctx);
        let now = t0() + offset;
        let until = if clock == Clock::Given { i64::MAX } else { view.volatility().stable_until(now) };
        let at = |ms: i64, projects: &Projects, listing| {
            let mut c = ctx.clone();
            fix_current_time_at(&mut c, instant(ms));
            frontend_answer((&view, &document), projects, &c, clock, listing).stable
        };
        let later: Vec<i64> = OFFSETS
            .iter()
            .map(|o| now + o)
            .chain([now + 400 * 86_400_000])
            .filter(|t| *t < until)
            .collect();
        for projects in [
            Projects::All,
            Projects::from_names(["default"]),
            Projects::from_names(["a", "b"]),
        ] {
            for listing in [Listing::Enabled, Listing::All] {
                let stable = at(now, &projects, listing);
                for t in &later {
                    prop_assert_eq!(at(*t, &projects, listing), stable,
                        "{:?} {:?}: at {} and {} (held until {})", projects, listing, now, t, until);
                }
            }
        }
    }

    /// A flag flagpost evaluates once as context-free gets, from yggdrasil, the answer it
    /// gives an empty context, for every context (every draw).
    #[test]
    fn context_free_flags_are_context_free_for_yggdrasil(
        set in flag_set(),
        contexts in proptest::collection::vec(context(), 1..4),
    ) {
        let (document, _, theirs) = parsed(&set);
        let mut empty = Context::default();
        fix_current_time_at(&mut empty, instant(t0()));
        for feature in document.features.iter().filter(|f| f.context_free) {
            let expected = their_toggle(&theirs, feature, &empty);
            for ctx in &contexts {
                let mut fixed = ctx.clone();
                fix_current_time_at(&mut fixed, instant(t0()));
                for _ in 0..DRAWS {
                    prop_assert_eq!(&their_toggle(&theirs, feature, &fixed), &expected,
                        "{:?} with {:?}", feature.name, fixed);
                }
            }
        }
    }

    /// The Client API body and the delta hydration are their serde twins (and read as
    /// Unleash's own types), for any flag set, project filter and name prefix; the SSE frame
    /// carrying the hydration has one data line, which holds no line break.
    #[test]
    fn bodies_and_frames_are_their_serde_twins(
        set in flag_set(),
        projects in proptest::collection::btree_set(pick(&["default", "a", "b"]), 0..3),
        prefix in proptest::option::of(pick(&["f", "ÆØ", "new\n", ""])),
        revision in 1u64..=u64::from(u32::MAX),
    ) {
        let document = Document::parse(set.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let (mut snapshot, _) = Snapshot::build("development", document);
        snapshot.set_revision(revision);
        let projects = if projects.is_empty() { Projects::All } else { Projects::from_names(projects.iter().map(String::as_str)) };
        let empty = Vec::new();
        let features: Vec<Value> = set["features"].as_array().unwrap_or(&empty).iter()
            .filter(|f| {
                let (name, project) = (f["name"].as_str().unwrap_or(""), f["project"].as_str().unwrap_or(""));
                projects.contains(project) && prefix.as_deref().is_none_or(|p| name.starts_with(p))
            })
            .cloned()
            .collect();
        let used: std::collections::BTreeSet<i64> = features.iter()
            .flat_map(|f| f["strategies"].as_array().cloned().unwrap_or_default())
            .flat_map(|s| s["segments"].as_array().cloned().unwrap_or_default())
            .filter_map(|id| id.as_i64())
            .collect();
        let segments: Vec<Value> = set["segments"].as_array().unwrap_or(&empty).iter()
            .filter(|s| s["id"].as_i64().is_some_and(|id| used.contains(&id)))
            .cloned()
            .collect();
        let mut query = json!({"environment": "development", "inlineSegmentConstraints": false});
        if let Projects::Some(list) = &projects {
            query["project"] = json!(list);
        }
        if let Some(p) = &prefix {
            query["namePrefix"] = json!(p);
        }
        let twin = json!({"version": 2, "features": features, "segments": segments, "query": query});
        let body = snapshot.client_body(&projects, prefix.as_deref());
        let ours: Value = serde_json::from_slice(&body.bytes).unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(&ours, &twin);
        prop_assert!(serde_json::from_slice::<ClientFeatures>(&body.bytes).is_ok());

        let filter = Filter::new(projects.clone(), prefix.clone());
        let hydration = snapshot.hydration(&filter);
        let ours: Value = serde_json::from_slice(&hydration.bytes).unwrap_or_else(|e| panic!("{e}"));
        let twin = json!({"events": [{"type": "hydration", "eventId": revision,
            "features": twin["features"], "segments": twin["segments"]}]});
        prop_assert_eq!(&ours, &twin);
        let typed = serde_json::from_slice::<ClientFeaturesDelta>(&hydration.bytes);
        prop_assert!(typed.is_ok(), "Unleash's types refuse it: {:?}", typed);
        let events = ours["events"].to_string();
        let inner = events.trim_start_matches('[').trim_end_matches(']');
        let frame = crate::delta::frame("unleash-connected", revision, &[inner.as_bytes()]);
        let text = String::from_utf8(frame).unwrap_or_default();
        let lines: Vec<&str> = text.trim_end_matches("\n\n").split('\n').collect();
        prop_assert_eq!(lines.len(), 3, "{}", text);
        prop_assert!(!text.contains('\r'));
        let data = lines.get(2).and_then(|l| l.strip_prefix("data: ")).unwrap_or("");
        let data: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}"));
        prop_assert_eq!(data, json!({"events": ours["events"]}));
    }

    /// The events of a change (old flag set → new), as one filter sees them, read as Unleash's
    /// own types (u32 ids) and applied by Unleash's own `apply_delta` to what the filter saw
    /// before, give exactly the features the filter sees after, and every segment they use;
    /// the SSE frame carrying them has one data line and the change's id.
    #[test]
    fn change_events_bring_a_client_from_one_set_to_the_next(
        (old, new) in (flag_set(), flag_set(), 0u8..4).prop_map(|(old, other, how)| {
            // Another set, or this one with only its segments changed, or with every other
            // feature replaced (so unchanged features meet changed segments and moves).
            let new = match how {
                0 => other,
                1 => json!({"version": 2, "features": old["features"], "segments": other["segments"]}),
                _ => {
                    let empty = Vec::new();
                    let theirs = other["features"].as_array().unwrap_or(&empty);
                    let features: Vec<Value> = old["features"].as_array().unwrap_or(&empty).iter()
                        .enumerate()
                        .map(|(i, f)| match theirs.get(i) {
                            Some(t) if i % 2 == 1 => json!(t),
                            _ => f.clone(),
                        })
                        .collect();
                    json!({"version": 2, "features": features, "segments": if how == 2 { old["segments"].clone() } else { other["segments"].clone() }})
                }
            };
            (old, new)
        }),
        projects in proptest::collection::btree_set(pick(&["default", "a", "b"]), 0..3),
        prefix in proptest::option::of(pick(&["f", "ÆØ", ""])),
        revision in 1u64..=u64::from(u32::MAX),
    ) {
        let before = Document::parse(old.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let after = Document::parse(new.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
        let projects = if projects.is_empty() { Projects::All } else { Projects::from_names(projects.iter().map(String::as_str)) };
        let filter = Filter::new(projects.clone(), prefix.clone());
        // What the filter sees of a set, typed as Unleash's client does.
        let seen = |set: &Value| -> ClientFeatures {
            let empty = Vec::new();
            let features: Vec<Value> = set["features"].as_array().unwrap_or(&empty).iter()
                .filter(|f| filter.admits(f["project"].as_str().unwrap_or(""), f["name"].as_str().unwrap_or("")))
                .cloned()
                .collect();
            serde_json::from_value(json!({"version": 2, "features": features,
                "segments": set["segments"].clone()})).unwrap_or_else(|e| panic!("{e}"))
        };
        let mut change = crate::change::diff(Some(&before), &after);
        change.revision = revision;
        let rendered = crate::delta::render(&change, &filter);
        let mut client = seen(&old);
        if !rendered.frame.is_empty() {
            let text = String::from_utf8(rendered.frame.to_vec()).unwrap_or_default();
            let lines: Vec<&str> = text.trim_end_matches("\n\n").split('\n').collect();
            prop_assert_eq!(lines.len(), 3, "{}", text);
            let id_line = format!("id: {revision}");
            prop_assert_eq!(lines.get(1).copied(), Some(id_line.as_str()));
            let data = lines.get(2).and_then(|l| l.strip_prefix("data: ")).unwrap_or("");
            let delta = serde_json::from_str::<ClientFeaturesDelta>(data);
            prop_assert!(delta.is_ok(), "Unleash's types refuse it: {:?} {}", delta, data);
            let delta = delta.unwrap_or_else(|e| panic!("{e}"));
            prop_assert!(delta.events.iter().all(|e| u64::from(e.get_event_id()) == revision));
            client.apply_delta(&delta);
        }
        let expected = seen(&new);
        let by_name = |c: &ClientFeatures| -> std::collections::BTreeMap<String, Value> {
            c.features.iter().map(|f| (f.name.clone(), serde_json::to_value(f).unwrap_or_default())).collect()
        };
        prop_assert_eq!(by_name(&client), by_name(&expected));
        // Every segment the new features use is there, as it is now.
        let segments = |c: &ClientFeatures| -> std::collections::BTreeMap<i32, Value> {
            c.segments.iter().flatten().map(|s| (s.id, serde_json::to_value(s).unwrap_or_default())).collect()
        };
        let (have, want) = (segments(&client), segments(&expected));
        for id in expected.features.iter()
            .flat_map(|f| f.strategies.iter().flatten())
            .flat_map(|s| s.segments.iter().flatten())
        {
            prop_assert_eq!(have.get(id), want.get(id), "segment {}", id);
        }
    }

    /// Any string written by hand as JSON reads back as itself, as serde reads it.
    #[test]
    fn hand_written_json_strings_read_back(s in any::<String>()) {
        let mut out = String::new();
        crate::json::push_str(&mut out, &s);
        prop_assert_eq!(serde_json::from_str::<String>(&out).ok(), Some(s.clone()));
        prop_assert!(!out.contains('\n') && !out.contains('\r'));
    }
}

/// The generators reach what the properties are for: clock constraints, random draws,
/// context-free flags, dependencies and odd names all occur.
#[test]
fn the_generators_reach_every_kind_of_flag() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for _ in 0..200 {
        let set = flag_set()
            .new_tree(&mut runner)
            .map(|t| t.current())
            .unwrap_or(Value::Null);
        let text = set.to_string();
        for (what, needle) in [
            ("clock constraint", "\"contextName\":\"currentTime\""),
            ("random rollout", "\"stickiness\":\"random\""),
            ("dependency", "\"dependencies\""),
            ("override", "\"overrides\""),
            ("odd name", "quote\\\"d"),
            ("regex", "\"REGEX\""),
        ] {
            if text.contains(needle) {
                *seen.entry(what).or_default() += 1;
            }
        }
        let (document, _, _) = parsed(&set);
        if document
            .features
            .iter()
            .any(|f| f.context_free && f.typed().is_ok_and(|t| t.enabled))
        {
            *seen.entry("context-free and on").or_default() += 1;
        }
    }
    for what in [
        "clock constraint",
        "random rollout",
        "dependency",
        "override",
        "odd name",
        "regex",
        "context-free and on",
    ] {
        assert!(
            seen.get(what).copied().unwrap_or(0) >= 10,
            "{what}: {seen:?}"
        );
    }
}
