//! Frontend evaluation: the SDK context read from a query string or a JSON body (PROTOCOL.md §4),
//! Unleash's own engine (`unleash-yggdrasil`, wrapped here so nothing else sees it), and the
//! Frontend API response written straight to bytes.

use unleash_types::client_features::{ClientFeature, ClientFeatures, Context, Segment};
use unleash_yggdrasil::{EngineState, ExtendedVariantDef};

mod context;
mod memo;

use crate::document::Document;
use crate::json;
use crate::token::Projects;
use context::empty_context;
pub use context::{
    context_from_json, context_from_query, fix_current_time, query_pairs, ContextError,
    MAX_CONTEXT_FIELDS,
};
pub use memo::{Key as MemoKey, Memo, Volatility};

/// The compiled flags of one snapshot.
pub struct Engine {
    state: EngineState,
}

/// A document compiled for the Frontend API: the engine, every flag prepared (in document
/// order), and the size of a response listing them all. A snapshot holds one.
pub struct FrontendView {
    engine: Engine,
    prepared: Vec<Prepared>,
    size_hint: usize,
    /// Per project, the indexes of its flags in document order: a project-scoped token walks
    /// only its own projects' flags.
    by_project: std::collections::HashMap<String, Vec<u32>>,
    volatility: Volatility,
}

impl FrontendView {
    /// Compiles `document`. Returns the warnings for flags the engine could not compile (they
    /// evaluate as off).
    pub fn compile(document: &Document) -> (FrontendView, Vec<String>) {
        let typed: Vec<ClientFeature> = document
            .features
            .iter()
            .filter_map(|f| f.typed().ok())
            .collect();
        let segments: Vec<Segment> = document
            .segments
            .iter()
            .map(|s| s.typed().clone())
            .collect();
        let volatility = Volatility::of(&typed, &segments);
        let (engine, warnings) = Engine::compile_typed(typed, segments);
        let prepared = engine.prepare(document);
        let size_hint = 64 + prepared.iter().map(|p| p.size_hint()).sum::<usize>();
        let mut by_project: std::collections::HashMap<String, Vec<u32>> =
            std::collections::HashMap::new();
        for (i, f) in document.features.iter().enumerate() {
            by_project
                .entry(f.project.clone())
                .or_default()
                .push(u32::try_from(i).unwrap_or(u32::MAX));
        }
        let view = FrontendView {
            engine,
            prepared,
            size_hint,
            by_project,
            volatility,
        };
        (view, warnings)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// What makes this snapshot's answers vary by chance or with the clock.
    pub fn volatility(&self) -> &Volatility {
        &self.volatility
    }

    /// The indexes of the flags of `projects`, in document order.
    fn indexes(&self, projects: &Projects, count: usize) -> Vec<u32> {
        match projects {
            Projects::All => (0..u32::try_from(count).unwrap_or(u32::MAX)).collect(),
            Projects::Some(set) => {
                let mut lists = set.iter().filter_map(|p| self.by_project.get(p));
                match (lists.next(), set.len()) {
                    (None, _) => Vec::new(),
                    (Some(one), 1) => one.clone(),
                    (Some(first), _) => {
                        let mut all = first.clone();
                        for list in lists {
                            all.extend_from_slice(list);
                        }
                        all.sort_unstable();
                        all
                    }
                }
            }
        }
    }
}

/// One flag's result: `enabled` and the variant come from a single evaluation, so they agree
/// even for random rollouts.
pub type Evaluation = ExtendedVariantDef;

impl Engine {
    /// Compiles every feature of `document`. Returns the warnings for flags the engine could not
    /// compile (they evaluate as off).
    pub fn compile(document: &Document) -> (Engine, Vec<String>) {
        Engine::compile_typed(
            document
                .features
                .iter()
                .filter_map(|f| f.typed().ok())
                .collect(),
            document
                .segments
                .iter()
                .map(|s| s.typed().clone())
                .collect(),
        )
    }

    fn compile_typed(
        features: Vec<ClientFeature>,
        segments: Vec<Segment>,
    ) -> (Engine, Vec<String>) {
        let state = EngineState::default();
        let features = ClientFeatures {
            version: 2,
            features,
            segments: Some(segments),
            query: None,
            meta: None,
        };
        let warnings = state
            .apply_client_features(features)
            .unwrap_or_default()
            .into_iter()
            .map(|w| format!("{}: {}", w.toggle_name, w.message))
            .collect();
        (Engine { state }, warnings)
    }

    /// Evaluates one flag once: `feature_enabled` is whether it is on, and the variant is the
    /// one chosen in the same evaluation.
    pub fn evaluate(&self, name: &str, context: &Context) -> Evaluation {
        self.state.get_variant(name, context, &None)
    }
}

/// Which flags a Frontend API response lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// `/api/frontend`: only enabled flags.
    Enabled,
    /// `/api/frontend/all`: every flag.
    All,
}

/// How one flag is written in Frontend API responses, prepared once per snapshot.
#[derive(Debug)]
pub struct Prepared {
    /// The name, as a JSON string.
    name: Box<str>,
    impression_data: bool,
    /// The whole toggle object and whether it is enabled, for a flag whose result cannot depend
    /// on the context (disabled, or on for everyone with no variants): evaluated once.
    fixed: Option<(bool, Box<str>)>,
}

impl Engine {
    /// Prepares every flag of `document` for the Frontend API (in document order).
    pub fn prepare(&self, document: &Document) -> Vec<Prepared> {
        let empty = empty_context();
        document
            .features
            .iter()
            .map(|f| {
                let mut name = String::with_capacity(f.name.len() + 2);
                json::push_str(&mut name, &f.name);
                let impression_data = f.impression_data;
                let fixed = f.context_free.then(|| {
                    let result = self.evaluate(&f.name, &empty);
                    let mut json = String::with_capacity(192);
                    write_toggle(&mut json, &f.name, impression_data, &result);
                    (result.feature_enabled, json.into_boxed_str())
                });
                Prepared {
                    name: name.into_boxed_str(),
                    impression_data,
                    fixed,
                }
            })
            .collect()
    }
}

/// Writes `{"toggles":[...]}` for the flags of `projects`, each evaluated at most once (not at
/// all when its result cannot depend on the context).
pub fn frontend_response(
    (view, document): (&FrontendView, &Document),
    projects: &Projects,
    context: &Context,
    listing: Listing,
) -> Vec<u8> {
    let mut out = String::with_capacity(view.size_hint);
    out.push_str("{\"toggles\":[");
    let mut first = true;
    let mut emit = |i: usize| {
        let (Some(feature), Some(prepared)) = (document.features.get(i), view.prepared.get(i))
        else {
            return;
        };
        if let Some((enabled, json)) = &prepared.fixed {
            if listing == Listing::All || *enabled {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(json);
            }
            return;
        }
        let result = view.engine.evaluate(&feature.name, context);
        if listing == Listing::Enabled && !result.feature_enabled {
            return;
        }
        if !first {
            out.push(',');
        }
        first = false;
        write_prepared(&mut out, prepared, &result);
    };
    // Only the token's projects' flags are walked (no per-flag project check).
    match projects {
        Projects::All => (0..document.features.len()).for_each(&mut emit),
        Projects::Some(set) if set.len() == 1 => {
            let list = set.iter().next().and_then(|p| view.by_project.get(p));
            for i in list.into_iter().flatten() {
                emit(*i as usize);
            }
        }
        Projects::Some(_) => {
            for i in view.indexes(projects, document.features.len()) {
                emit(i as usize);
            }
        }
    }
    out.push_str("]}");
    out.into_bytes()
}

impl Prepared {
    /// Roughly how many bytes this flag takes in a response.
    pub fn size_hint(&self) -> usize {
        match &self.fixed {
            Some((_, json)) => json.len() + 1,
            None => self.name.len() + 160,
        }
    }
}

fn write_prepared(out: &mut String, prepared: &Prepared, result: &Evaluation) {
    out.push_str("{\"name\":");
    out.push_str(&prepared.name);
    write_rest(out, prepared.impression_data, result);
}

/// Writes one toggle object, as in PROTOCOL.md §4.
pub fn write_toggle(out: &mut String, name: &str, impression_data: bool, result: &Evaluation) {
    out.push_str("{\"name\":");
    json::push_str(out, name);
    write_rest(out, impression_data, result);
}

/// Everything of a toggle object after its name.
fn write_rest(out: &mut String, impression_data: bool, result: &Evaluation) {
    let enabled = if result.feature_enabled {
        "true"
    } else {
        "false"
    };
    out.push_str(",\"enabled\":");
    out.push_str(enabled);
    out.push_str(",\"impressionData\":");
    out.push_str(if impression_data { "true" } else { "false" });
    out.push_str(",\"variant\":{\"name\":");
    json::push_str(out, &result.name);
    out.push_str(",\"enabled\":");
    out.push_str(if result.enabled { "true" } else { "false" });
    out.push_str(",\"feature_enabled\":");
    out.push_str(enabled);
    out.push_str(",\"featureEnabled\":");
    out.push_str(enabled);
    if let Some(payload) = &result.payload {
        out.push_str(",\"payload\":{\"type\":");
        json::push_str(out, &payload.payload_type);
        out.push_str(",\"value\":");
        json::push_str(out, &payload.value);
        out.push('}');
    }
    out.push_str("}}");
}

#[cfg(test)]
mod tests {
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
            let value: Value =
                serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
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
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/client-specification");
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
}
