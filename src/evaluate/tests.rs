use super::*;
use serde_json::Value;
use unleash_types::client_features::Context;
use unleash_yggdrasil::EngineState;

#[test]
fn toggle_shape_matches_the_protocol() {
    let doc = Document::parse(
        br#"{"features":[{"name":"v","enabled":true,"impressionData":true,
            "strategies":[{"name":"default"}],
            "variants":[{"name":"B","weight":1000,"payload":{"type":"csv","value":"x,y"},"stickiness":"default"}]},
          {"name":"off","enabled":false,"strategies":[{"name":"default"}]}]}"#,
    )
    .unwrap();
    let (view, warnings) = FrontendView::compile(&doc);
    assert!(warnings.is_empty());
    let ctx = empty_context();
    let all: Value = serde_json::from_slice(
        &frontend_answer(
            (&view, &doc),
            &Projects::All,
            &ctx,
            Clock::Server,
            Listing::All,
        )
        .body,
    )
    .unwrap();
    assert_eq!(
        all,
        serde_json::json!({"toggles":[
            {"name":"v","enabled":true,"impressionData":true,
             "variant":{"name":"B","enabled":true,"feature_enabled":true,"featureEnabled":true,
                        "payload":{"type":"csv","value":"x,y"}}},
            {"name":"off","enabled":false,"impressionData":false,
             "variant":{"name":"disabled","enabled":false,"feature_enabled":false,"featureEnabled":false}}
        ]})
    );
    let enabled: Value = serde_json::from_slice(
        &frontend_answer(
            (&view, &doc),
            &Projects::All,
            &ctx,
            Clock::Server,
            Listing::Enabled,
        )
        .body,
    )
    .unwrap();
    assert_eq!(enabled["toggles"].as_array().unwrap().len(), 1);
    let none: Value = serde_json::from_slice(
        &frontend_answer(
            (&view, &doc),
            &Projects::from_names(["other"]),
            &ctx,
            Clock::Server,
            Listing::All,
        )
        .body,
    )
    .unwrap();
    assert_eq!(none, serde_json::json!({"toggles":[]}));
}

#[test]
fn the_chance_part_alone_gives_the_same_etag_as_the_whole_answer() {
    // Chance flags whose results happen to be fixed (a random rollout of 0%, alone or before
    // a default strategy), between ordinary ones, in two projects.
    let doc = Document::parse(
        br#"{"features":[
          {"name":"a","project":"p","enabled":true,"strategies":[{"name":"userWithId","parameters":{"userIds":"alice"}}]},
          {"name":"r0","project":"p","enabled":true,"strategies":[{"name":"flexibleRollout","parameters":{"rollout":"0","stickiness":"random","groupId":"g"}}]},
          {"name":"b","project":"q","enabled":true,"strategies":[{"name":"default"}]},
          {"name":"r1","project":"q","enabled":true,"strategies":[{"name":"flexibleRollout","parameters":{"rollout":"0","stickiness":"random","groupId":"g"}},{"name":"default"}]}
        ]}"#,
    )
    .unwrap();
    let (view, _) = FrontendView::compile(&doc);
    let mut ctx = empty_context();
    ctx.user_id = Some("alice".into());
    for projects in [
        Projects::All,
        Projects::from_names(["p"]),
        Projects::from_names(["q"]),
        Projects::from_names(["p", "q"]),
    ] {
        for listing in [Listing::Enabled, Listing::All] {
            let answer = frontend_answer((&view, &doc), &projects, &ctx, Clock::Server, listing);
            let chance = chance_part((&view, &doc), &projects, &ctx, Clock::Server, listing);
            assert_eq!(answer.chance, chance, "{projects:?} {listing:?}");
            assert!(view.volatility().by_chance(&projects, &ctx, Clock::Server));
        }
    }
    // The stable part does not depend on the chance flags.
    let a = frontend_answer(
        (&view, &doc),
        &Projects::All,
        &ctx,
        Clock::Server,
        Listing::All,
    );
    let p = frontend_answer(
        (&view, &doc),
        &Projects::from_names(["p", "q"]),
        &ctx,
        Clock::Server,
        Listing::All,
    );
    assert_eq!((a.stable, a.etag()), (p.stable, p.etag()));
}

#[test]
fn random_rollout_agrees_with_its_variant() {
    // 50% random rollout with variants: enabled and the variant must come from one evaluation.
    let doc = Document::parse(
        br#"{"features":[{"name":"r","enabled":true,
            "strategies":[{"name":"flexibleRollout","parameters":{"rollout":"50","stickiness":"random","groupId":"r"},
              "variants":[{"name":"x","weight":1000,"stickiness":"random"}]}]}]}"#,
    )
    .unwrap();
    let (view, _) = FrontendView::compile(&doc);
    let ctx = empty_context();
    let (mut on, mut off) = (0, 0);
    for _ in 0..400 {
        let r = view.engine().evaluate("r", &ctx);
        assert_eq!(
            r.feature_enabled,
            r.variant_enabled(),
            "variant disagrees with enabled: {r:?}"
        );
        if r.feature_enabled {
            on += 1
        } else {
            off += 1
        }
    }
    assert!(on > 0 && off > 0, "both outcomes seen ({on} on, {off} off)");
}

/// A flag prepared as context-free gives the same answer whatever the context: checked on
/// every flag of the client specification, the example features and a generated set.
#[test]
fn context_free_flags_really_are() {
    let contexts: Vec<Context> = [
        "",
        "userId=alice",
        "userId=123&sessionId=s1&remoteAddress=10.0.0.1&appName=web&environment=production",
        "currentTime=2001-01-01T00:00:00Z&properties[country]=NO&properties[tier]=pro",
        "sessionId=x&remoteAddress=127.0.0.1&properties[appVersion]=9.9.9",
    ]
    .iter()
    .map(|q| context_from_query(q).unwrap())
    .collect();
    let (mut checked, mut context_free) = (0, 0);
    for (file, state, _) in feature_sets() {
        let document = Document::parse(state.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{file} does not parse as a flag set: {e}"));
        let (view, _) = FrontendView::compile(&document);
        for (feature, prepared) in document.features.iter().zip(&view.prepared) {
            checked += 1;
            let Some((enabled, json)) = &prepared.fixed else {
                continue;
            };
            context_free += 1;
            for ctx in &contexts {
                for _ in 0..5 {
                    let result = view.engine().evaluate(&feature.name, ctx);
                    let mut out = String::new();
                    write_toggle(&mut out, &feature.name, feature.impression_data, &result);
                    assert_eq!(&out.as_str(), &json.as_ref(), "{file}: {}", feature.name);
                    assert_eq!(result.feature_enabled, *enabled);
                }
            }
        }
    }
    assert!(
        context_free > 10 && checked > context_free,
        "{context_free} of {checked}"
    );
}

/// Files 19 and 20 of the client specification describe the delta API, which flagpost does
/// not consume: they run through the engine directly.
#[test]
fn client_specification_delta_files_through_the_engine() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/client-specification");
    let mut ran = 0;
    for file in ["19-delta-api-hydration.json", "20-delta-api-events.json"] {
        let spec: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
        let engine = EngineState::default();
        let message: unleash_yggdrasil::UpdateMessage =
            serde_json::from_value(spec["state"].clone()).unwrap();
        engine.take_state(message);
        for case in spec["tests"].as_array().unwrap() {
            let context: Context = serde_json::from_value(case["context"].clone()).unwrap();
            let name = case["toggleName"].as_str().unwrap();
            let expected = case["expectedResult"].as_bool().unwrap();
            assert_eq!(
                engine.is_enabled(name, &context, &None),
                expected,
                "{file}: {}",
                case["description"]
            );
            ran += 1;
        }
    }
    assert_eq!(ran, 4);
}

/// The feature sets the engine tests run on: every client specification file with a features
/// state, the example features and a generated set (`gen_features.py --seed 7`), each with the
/// contexts its own test cases use.
fn feature_sets() -> Vec<(String, Value, Vec<Context>)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<std::path::PathBuf> =
        std::fs::read_dir(root.join("tests/client-specification"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(|c: char| c.is_ascii_digit())
            })
            .collect();
    files.sort();
    files.push(root.join("examples/features.json"));
    files.push(root.join("tests/fixtures/generated-200.json"));
    let mut sets = Vec::new();
    for file in files {
        let value: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let (state, cases) = match value.get("state") {
            Some(state) => (state.clone(), value.clone()),
            None => (value, Value::Null),
        };
        if state.get("features").is_none() {
            continue; // a delta file
        }
        let contexts = ["tests", "variantTests"]
            .iter()
            .flat_map(|k| cases[*k].as_array().cloned().unwrap_or_default())
            .map(|case| {
                serde_json::from_value(case["context"].clone()).unwrap_or_else(|e| {
                    panic!("{}: a case's context does not parse: {e}", file.display())
                })
            })
            .collect();
        sets.push((file.display().to_string(), state, contexts));
    }
    sets
}

/// flagpost's walk of the compiled flags gives exactly what yggdrasil's own `EngineState`
/// gives, for every flag of every set, with the sets' own contexts and a range of others
/// (flags chance decides are compared only where it does not).
#[test]
fn the_engine_agrees_with_yggdrasils_engine_state() {
    let mut extra: Vec<Context> = [
        "",
        "userId=123",
        "userId=7&appName=web&properties[region]=eu&properties[tier]=pro",
        "userId=123&sessionId=s1&remoteAddress=10.0.0.1&appName=bench&environment=production",
        "sessionId=sess-9&remoteAddress=192.168.1.7&properties[email]=a@example.com&properties[age]=30",
        "userId=1500&properties[appVersion]=2.3.1&properties[cartValue]=49&currentTime=2024-06-01T00:00:00Z",
        "remoteAddress=2001:db8::1&properties[email]=x+beta@getunleash.io&properties[region]=cn",
    ]
    .iter()
    .map(|q| context_from_query(q).unwrap())
    .collect();
    for user in 0..40 {
        extra.push(context_from_query(&format!("userId={}&sessionId=s{user}", user * 50)).unwrap());
    }
    let (mut compared, mut skipped) = (0, 0);
    for (file, state, contexts) in feature_sets() {
        let document = Document::parse(state.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{file} does not parse as a flag set: {e}"));
        let (view, _) = FrontendView::compile(&document);
        let theirs = EngineState::default();
        theirs.take_state(serde_json::from_value(state.clone()).unwrap());
        for ctx in contexts.iter().chain(&extra) {
            for (i, feature) in document.features.iter().enumerate() {
                if view.chance[i].decides(ctx, Clock::Server) {
                    skipped += 1;
                    continue;
                }
                let ours = view.engine().evaluate_at(i, ctx);
                let by_name = view.engine().evaluate(&feature.name, ctx);
                let expected = theirs.get_variant(&feature.name, ctx, &None);
                let got = (
                    ours.feature_enabled,
                    ours.variant_name(),
                    ours.variant_enabled(),
                    ours.payload(),
                );
                assert_eq!(
                    got,
                    (
                        expected.feature_enabled,
                        expected.name.as_str(),
                        expected.enabled,
                        expected.payload.as_ref()
                    ),
                    "{file}: {} with {ctx:?}",
                    feature.name
                );
                assert_eq!(by_name.feature_enabled, ours.feature_enabled);
                assert_eq!(by_name.variant_name(), ours.variant_name());
                compared += 1;
            }
        }
    }
    assert!(
        compared > 10_000 && skipped > 0,
        "{compared} compared, {skipped} skipped"
    );
}

/// Variants whose weights add up to nothing (Unleash never sends them) give no variant
/// instead of a division by zero; an unknown flag is off.
#[test]
fn weightless_variants_and_unknown_flags_are_off() {
    let doc = Document::parse(
        br#"{"features":[{"name":"w","enabled":true,"strategies":[{"name":"default"}],
            "variants":[{"name":"a","weight":0,"stickiness":"default"},{"name":"b","weight":-5}]}]}"#,
    )
    .unwrap();
    let (view, _) = FrontendView::compile(&doc);
    for q in ["", "userId=1"] {
        let r = view.engine().evaluate("w", &context_from_query(q).unwrap());
        assert!(r.feature_enabled);
        assert_eq!((r.variant_name(), r.variant_enabled()), ("disabled", false));
    }
    let r = view.engine().evaluate("nope", &empty_context());
    assert!(!r.feature_enabled && !r.variant_enabled());
}

/// flagpost's engine walk (`engine.rs`), the memo's idea of chance and the clock
/// (`volatility.rs`) and `document::context_free` are copies of what this version of
/// unleash-yggdrasil does. An upgrade changes the version here and fails this test: re-read
/// yggdrasil's `EngineState::get_variant`, `get_seed`, `lookup_override_context`,
/// `check_for_variant_override`, `strategy_upgrade.rs` (stickiness, rollouts, constraints) and
/// `strategy_parsing.rs` (what reads the clock or draws at random) against those three files,
/// run the generated-input properties (`evaluate::properties`) with more cases
/// (`PROPTEST_CASES=20000`), then change the version here.
#[test]
fn the_engine_copied_from_is_the_one_pinned() {
    assert_eq!(
        unleash_yggdrasil::CORE_VERSION,
        "0.21.7",
        "unleash-yggdrasil changed: re-check engine.rs, volatility.rs and context_free"
    );
}
