//! The Frontend API answer: toggles written straight to bytes, each flag evaluated at most
//! once, with the two hashes its ETag is made of (see `memo.rs`).

use unleash_types::client_features::Context;

use super::{Clock, Evaluation, FrontendView, Listing, Prepared};
use crate::document::Document;
use crate::json;
use crate::token::Projects;

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

/// Writes `{"toggles":[...]}` for the flags of `projects`, each evaluated at most once (not at
/// all when its result cannot depend on the context). `clock` says where the context's
/// `currentTime` came from: with the server's, what reads it varies like chance.
pub fn frontend_answer(
    (view, document): (&FrontendView, &Document),
    projects: &Projects,
    context: &Context,
    clock: Clock,
    listing: Listing,
) -> Answer {
    // Without a flag chance decides in scope (the common case), the stable part is the whole
    // body, hashed in one go at the end.
    let split = view.volatility().by_chance(projects, context, clock);
    let mut out = String::with_capacity(view.size_hint);
    out.push_str("{\"toggles\":[");
    let mut first = true;
    let mut stable = xxhash_rust::xxh3::Xxh3::new();
    let mut chance = xxhash_rust::xxh3::Xxh3::new();
    let mut emit = |i: usize| {
        let Some(prepared) = view.prepared.get(i) else {
            return;
        };
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
            let result = view.engine.evaluate_at(i, context);
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
        let by_chance = view
            .chance
            .get(i)
            .is_some_and(|c| c.decides(context, clock));
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
    clock: Clock,
    listing: Listing,
) -> u64 {
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
        if !c.decides(context, clock) || !projects.contains(&feature.project) {
            continue;
        }
        toggle.clear();
        let result = view.engine.evaluate_at(i, context);
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

fn write_prepared(out: &mut String, prepared: &Prepared, result: &Evaluation<'_>) {
    out.push_str("{\"name\":");
    out.push_str(&prepared.name);
    write_rest(out, prepared.impression_data, result);
}

/// Writes one toggle object, as in PROTOCOL.md §4.
pub fn write_toggle(out: &mut String, name: &str, impression_data: bool, result: &Evaluation<'_>) {
    out.push_str("{\"name\":");
    json::push_str(out, name);
    write_rest(out, impression_data, result);
}

/// Everything of a toggle object after its name.
fn write_rest(out: &mut String, impression_data: bool, result: &Evaluation<'_>) {
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
    json::push_str(out, result.variant_name());
    out.push_str(",\"enabled\":");
    out.push_str(if result.variant_enabled() {
        "true"
    } else {
        "false"
    });
    out.push_str(",\"feature_enabled\":");
    out.push_str(enabled);
    out.push_str(",\"featureEnabled\":");
    out.push_str(enabled);
    if let Some(payload) = result.payload() {
        out.push_str(",\"payload\":{\"type\":");
        json::push_str(out, &payload.payload_type);
        out.push_str(",\"value\":");
        json::push_str(out, &payload.value);
        out.push('}');
    }
    out.push_str("}}");
}
