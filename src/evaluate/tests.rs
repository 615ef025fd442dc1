use super::*;
use serde_json::Value;

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
    let all: Value = serde_json::from_slice(&frontend_response(
        (&view, &doc),
        &Projects::All,
        &ctx,
        Listing::All,
    ))
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
    let enabled: Value = serde_json::from_slice(&frontend_response(
        (&view, &doc),
        &Projects::All,
        &ctx,
        Listing::Enabled,
    ))
    .unwrap();
    assert_eq!(enabled["toggles"].as_array().unwrap().len(), 1);
    let none: Value = serde_json::from_slice(&frontend_response(
        (&view, &doc),
        &Projects::from_names(["other"]),
        &ctx,
        Listing::All,
    ))
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
            let answer = frontend_answer((&view, &doc), &projects, &ctx, listing);
            let chance = chance_part((&view, &doc), &projects, &ctx, listing);
            assert_eq!(answer.chance, chance, "{projects:?} {listing:?}");
            assert!(view.volatility().by_chance(&projects, &ctx));
        }
    }
    // The stable part does not depend on the chance flags.
    let a = frontend_answer((&view, &doc), &Projects::All, &ctx, Listing::All);
    let p = frontend_answer(
        (&view, &doc),
        &Projects::from_names(["p", "q"]),
        &ctx,
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
            r.feature_enabled, r.enabled,
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
/// every flag of the client specification and the example features.
#[test]
fn context_free_flags_really_are() {
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
    files.push(root.join("examples/features.json"));
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
    for file in files {
        let value: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let state = if value.get("state").is_some() {
            &value["state"]
        } else {
            &value
        };
        let Ok(document) = Document::parse(state.to_string().as_bytes()) else {
            continue;
        };
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
                    assert_eq!(
                        &out.as_str(),
                        &json.as_ref(),
                        "{}: {}",
                        file.display(),
                        feature.name
                    );
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
