//! Frontend evaluation: the SDK context read from a query string or a JSON body (PROTOCOL.md §4),
//! the flags as `unleash-yggdrasil` compiles them, walked by flagpost's own evaluation
//! (`engine.rs`; elsewhere only the engine's spec version and strategy names are read), and
//! the Frontend API response written straight to bytes.

mod context;
mod engine;
mod memo;
mod response;
mod volatility;

use crate::document::Document;
use crate::json;
use crate::token::Projects;
use context::empty_context;
pub use context::{
    context_from_json, context_from_query, fix_current_time_at, query_pairs, ContextError,
    MAX_CONTEXT_FIELDS,
};
pub use engine::{Engine, Evaluation};
pub use memo::{Key as MemoKey, Memo};
pub use response::{chance_part, etag_of_parts, frontend_answer, write_toggle, Answer};
pub use volatility::{Chance, Classifier, Clock, Volatility};

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
        let segments = document.typed_segments();
        let mut classifier = Classifier::default();
        classifier.add_segments(&segments);
        let (engine, warnings) = Engine::build(document, &segments, |f, typed| {
            classifier.add(&f.name, &f.project, typed)
        });
        drop(segments);
        let (volatility, chance) = classifier.finish();
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
        // A flag evaluated once (its result fixed) is never chance's.
        let chance: Vec<Chance> = chance
            .into_iter()
            .zip(&prepared)
            .map(|(c, p)| if p.fixed.is_some() { Chance::NONE } else { c })
            .collect();
        let chancy = chance
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.is_none())
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
            .enumerate()
            .map(|(i, f)| {
                let mut name = String::with_capacity(f.name.len() + 2);
                json::push_str(&mut name, &f.name);
                let impression_data = f.impression_data;
                let fixed = f.context_free.then(|| {
                    let result = self.evaluate_at(i, &empty);
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

#[cfg(test)]
mod generate;
#[cfg(test)]
mod properties;
