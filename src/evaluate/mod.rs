//! Frontend evaluation: the SDK context read from a query string or a JSON body (PROTOCOL.md §4),
//! Unleash's own engine (`unleash-yggdrasil`, wrapped here so nothing else sees it), and the
//! Frontend API response written straight to bytes.

use unleash_types::client_features::{ClientFeature, ClientFeatures, Context, Segment};
use unleash_yggdrasil::{EngineState, ExtendedVariantDef};

mod context;
mod memo;
mod response;

use crate::document::Document;
use crate::json;
use crate::token::Projects;
use context::empty_context;
pub use context::{
    context_from_json, context_from_query, fix_current_time, fix_current_time_at, query_pairs,
    ContextError, MAX_CONTEXT_FIELDS,
};
pub use memo::{Chance, Key as MemoKey, Memo, Volatility};
pub use response::{
    chance_part, etag_of_parts, frontend_answer, frontend_response, write_toggle, Answer,
};

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

#[cfg(test)]
mod tests;
