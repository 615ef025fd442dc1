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
    context_from_json, context_from_query, fix_current_time, fix_current_time_at, query_pairs,
    ContextError, MAX_CONTEXT_FIELDS,
};
pub use memo::{Chance, Key as MemoKey, Memo, Volatility};

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
    /// Each flag's chance (document order; none for a flag whose result is fixed).
    chance: Vec<Chance>,
    /// The flags chance may decide, in document order.
    chancy: Vec<u32>,
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
        let chance: Vec<Chance> = document
            .features
            .iter()
            .zip(&prepared)
            .map(|(f, p)| {
                if p.fixed.is_some() {
                    Chance::None
                } else {
                    volatility.chance(&f.name)
                }
            })
            .collect();
        let chancy = chance
            .iter()
            .enumerate()
            .filter(|(_, c)| **c != Chance::None)
            .map(|(i, _)| u32::try_from(i).unwrap_or(u32::MAX))
            .collect();
        let view = FrontendView {
            engine,
            prepared,
            size_hint,
            by_project,
            volatility,
            chance,
            chancy,
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
    parts: (&FrontendView, &Document),
    projects: &Projects,
    context: &Context,
    listing: Listing,
) -> Vec<u8> {
    frontend_answer(parts, projects, context, listing).body
}

/// A Frontend API answer, with the two hashes its ETag is made of: of the toggles chance does
/// not decide (`stable`), and of those it does (`chance`; see [`chance_part`]).
#[derive(Debug)]
pub struct Answer {
    pub body: Vec<u8>,
    pub stable: u64,
    pub chance: u64,
}

impl Answer {
    pub fn etag(&self) -> u64 {
        etag_of_parts(self.stable, self.chance)
    }
}

/// The ETag of an answer made of these two parts.
pub fn etag_of_parts(stable: u64, chance: u64) -> u64 {
    let mut bytes = [0u8; 16];
    let (a, b) = bytes.split_at_mut(8);
    a.copy_from_slice(&stable.to_le_bytes());
    b.copy_from_slice(&chance.to_le_bytes());
    xxhash_rust::xxh3::xxh3_64(&bytes)
}

/// The answer for the flags of `projects` (see [`frontend_response`]).
pub fn frontend_answer(
    (view, document): (&FrontendView, &Document),
    projects: &Projects,
    context: &Context,
    listing: Listing,
) -> Answer {
    let has_ids = context.user_id.is_some() || context.session_id.is_some();
    // Without a flag chance decides in scope (the common case), the stable part is the whole
    // body, hashed in one go at the end.
    let split = view.volatility().by_chance(projects, context);
    let mut out = String::with_capacity(view.size_hint);
    out.push_str("{\"toggles\":[");
    let mut first = true;
    let mut stable = xxhash_rust::xxh3::Xxh3::new();
    let mut chance = xxhash_rust::xxh3::Xxh3::new();
    let mut emit = |i: usize| {
        let (Some(feature), Some(prepared)) = (document.features.get(i), view.prepared.get(i))
        else {
            return;
        };
        let by_chance = view.chance.get(i).is_some_and(|c| c.decides(has_ids));
        let start = out.len();
        if let Some((enabled, json)) = &prepared.fixed {
            if listing == Listing::All || *enabled {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(json);
            }
        } else {
            let result = view.engine.evaluate(&feature.name, context);
            if listing == Listing::All || result.feature_enabled {
                if !first {
                    out.push(',');
                }
                first = false;
                write_prepared(&mut out, prepared, &result);
            }
        }
        if !split {
            return;
        }
        let written = out.get(start..).unwrap_or("").trim_start_matches(',');
        if by_chance {
            chance_entry(&mut chance, i, written);
        } else {
            // Toggle objects delimit themselves: no separator needed.
            stable.update(written.as_bytes());
        }
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
    let stable = if split {
        stable.digest()
    } else {
        xxhash_rust::xxh3::xxh3_64(out.as_bytes())
    };
    Answer {
        body: out.into_bytes(),
        stable,
        chance: chance.digest(),
    }
}

/// One flag chance decides, in the chance hash: its index and its toggle (empty when not
/// listed).
fn chance_entry(h: &mut xxhash_rust::xxh3::Xxh3, index: usize, toggle: &str) {
    h.update(&(index as u64).to_le_bytes());
    h.update(toggle.as_bytes());
    h.update(b",");
}

/// The chance hash of the answer for `projects` and `context`, evaluating only the flags
/// chance decides: with a remembered stable hash, the ETag of an answer without building it.
pub fn chance_part(
    (view, document): (&FrontendView, &Document),
    projects: &Projects,
    context: &Context,
    listing: Listing,
) -> u64 {
    let has_ids = context.user_id.is_some() || context.session_id.is_some();
    let mut chance = xxhash_rust::xxh3::Xxh3::new();
    let mut toggle = String::new();
    for &i in &view.chancy {
        let i = i as usize;
        let (Some(feature), Some(prepared), Some(c)) = (
            document.features.get(i),
            view.prepared.get(i),
            view.chance.get(i),
        ) else {
            continue;
        };
        if !c.decides(has_ids) || !projects.contains(&feature.project) {
            continue;
        }
        toggle.clear();
        let result = view.engine.evaluate(&feature.name, context);
        if listing == Listing::All || result.feature_enabled {
            write_prepared(&mut toggle, prepared, &result);
        }
        chance_entry(&mut chance, i, &toggle);
    }
    chance.digest()
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
