//! Remembered Frontend API ETags: a conditional poll whose answer cannot have changed is
//! answered 304 without evaluating anything.
//!
//! The answer to a Frontend API request is a function of the snapshot (its environment and
//! revision), the token's projects, the listing, and the context, except for what chance and
//! the clock decide. A Frontend API ETag is made of two hashes: of the toggles chance does not
//! decide, and of those it does (random stickiness; default stickiness without `userId` or
//! `sessionId`; `gradualRolloutRandom`; flags depending on them: see [`Volatility`]). flagpost
//! remembers, per (environment, revision, projects, listing, canonical context), the first hash
//! (a 128-bit hash of the key → 64 bits and how long it holds; no bodies) in a bounded moka
//! cache. A conditional request whose key is remembered evaluates only the flags chance decides
//! (usually none) and is answered 304 when the ETag they make with the remembered hash matches.
//! Answers that depend on the time (date constraints on `currentTime` when the client does not
//! send one) are remembered only until the next date any constraint names.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::time::Duration;

use unleash_types::client_features::{ClientFeature, Context, Operator, Segment};

use super::Listing;
use crate::token::Projects;

/// What in a snapshot makes answers vary without the snapshot changing.
#[derive(Debug, Default)]
pub struct Volatility {
    /// Projects with a flag whose result is chance for every context.
    always: HashSet<String>,
    /// Projects with a flag whose result is chance for a context without `userId` and
    /// `sessionId` (default stickiness).
    without_ids: HashSet<String>,
    /// Every instant (Unix ms) a `currentTime` date constraint names, sorted.
    boundaries: Vec<i64>,
    /// Each flag's chance, by name.
    by_name: std::collections::HashMap<String, Chance>,
}

impl Chance {
    /// Whether chance decides the result for a context with or without an id.
    pub fn decides(self, has_ids: bool) -> bool {
        match self {
            Chance::None => false,
            Chance::WithoutIds => !has_ids,
            Chance::Always => true,
        }
    }
}

/// Whether chance decides a flag's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Chance {
    #[default]
    None,
    WithoutIds,
    Always,
}

fn stickiness(s: Option<&str>) -> Chance {
    match s.map(str::trim) {
        Some("random") => Chance::Always,
        None | Some("") | Some("default") => Chance::WithoutIds,
        // A custom field (userId, sessionId, a property): stable for a context.
        Some(_) => Chance::None,
    }
}

fn chance_of(f: &ClientFeature) -> Chance {
    let mut c = Chance::None;
    for s in f.strategies.iter().flatten() {
        let param = |k: &str| {
            s.parameters
                .as_ref()
                .and_then(|p| p.get(k))
                .map(String::as_str)
        };
        match s.name.as_str() {
            "gradualRolloutRandom" => c = c.max(Chance::Always),
            "flexibleRollout" if param("rollout").is_none_or(|r| r.trim() != "100") => {
                c = c.max(stickiness(param("stickiness")));
            }
            _ => {}
        }
        if s.variants.as_ref().is_some_and(|v| v.len() > 1) {
            for v in s.variants.iter().flatten() {
                c = c.max(stickiness(v.stickiness.as_deref()));
            }
        }
    }
    if f.variants.as_ref().is_some_and(|v| v.len() > 1) {
        for v in f.variants.iter().flatten() {
            c = c.max(stickiness(v.stickiness.as_deref()));
        }
    }
    c
}

impl Volatility {
    /// Classifies every flag (a flag depending on a chancy one is chancy too) and collects the
    /// instants of the `currentTime` date constraints of flags and segments.
    pub fn of(features: &[ClientFeature], segments: &[Segment]) -> Volatility {
        let mut chance: std::collections::HashMap<&str, Chance> = features
            .iter()
            .map(|f| (f.name.as_str(), chance_of(f)))
            .collect();
        // Dependencies, to a fixed point (bounded by the chain length).
        for _ in 0..features.len().min(16) {
            let mut changed = false;
            for f in features {
                let parents = f.dependencies.iter().flatten();
                let worst = parents
                    .filter_map(|d| chance.get(d.feature.as_str()).copied())
                    .max()
                    .unwrap_or(Chance::None);
                let own = chance.get(f.name.as_str()).copied().unwrap_or(Chance::None);
                if worst > own {
                    chance.insert(f.name.as_str(), worst);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
        let mut v = Volatility {
            by_name: chance.iter().map(|(k, c)| (k.to_string(), *c)).collect(),
            ..Volatility::default()
        };
        for f in features {
            let project = f.project.clone().unwrap_or_else(|| "default".into());
            match chance.get(f.name.as_str()) {
                Some(Chance::Always) => {
                    v.always.insert(project);
                }
                Some(Chance::WithoutIds) => {
                    v.without_ids.insert(project);
                }
                _ => {}
            }
        }
        let constraints = features
            .iter()
            .flat_map(|f| f.strategies.iter().flatten())
            .flat_map(|s| s.constraints.iter().flatten())
            .chain(segments.iter().flat_map(|s| s.constraints.iter()));
        for c in constraints {
            if c.context_name == "currentTime"
                && matches!(c.operator, Operator::DateAfter | Operator::DateBefore)
            {
                let values = c.value.iter().chain(c.values.iter().flatten());
                for value in values {
                    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value.trim()) {
                        v.boundaries.push(t.timestamp_millis());
                    }
                }
            }
        }
        v.boundaries.sort_unstable();
        v.boundaries.dedup();
        v
    }

    /// A flag's chance (none for a flag the engine could not read).
    pub fn chance(&self, name: &str) -> Chance {
        self.by_name.get(name).copied().unwrap_or_default()
    }

    /// Whether the answer for `projects` and `context` is partly chance.
    pub fn by_chance(&self, projects: &Projects, context: &Context) -> bool {
        let has_ids = context.user_id.is_some() || context.session_id.is_some();
        let touches = |set: &HashSet<String>| match projects {
            Projects::All => !set.is_empty(),
            Projects::Some(list) => list.iter().any(|p| set.contains(p)),
        };
        touches(&self.always) || (!has_ids && touches(&self.without_ids))
    }

    /// Until when (Unix ms) an answer computed at `now` stays right as far as the clock goes:
    /// the next instant a date constraint names (an answer computed at such an instant is not
    /// kept at all: whether it counts as before or after is the engine's business).
    pub fn stable_until(&self, now: i64) -> i64 {
        let i = self.boundaries.partition_point(|b| *b < now);
        self.boundaries.get(i).copied().unwrap_or(i64::MAX)
    }
}

/// The remembered answers: per key, the hash of the part of the answer chance does not decide,
/// and until when it holds.
pub struct Memo {
    cache: Option<moka::sync::Cache<u128, (u64, i64)>>,
}

impl std::fmt::Debug for Memo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memo")
            .field("entries", &self.cache.as_ref().map(|c| c.entry_count()))
            .finish()
    }
}

/// A request's place in the memo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key(u128);

impl Memo {
    /// At most `size` entries (0: nothing remembered), each for at most `ttl`.
    pub fn new(size: u64, ttl: Duration) -> Memo {
        Memo {
            cache: (size > 0).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(size)
                    .time_to_live(ttl)
                    .build()
            }),
        }
    }

    pub fn enabled(&self) -> bool {
        self.cache.is_some()
    }

    /// The key of a request: everything its answer depends on but chance and the clock. The
    /// context is taken before the server sets `currentTime` (a client-given one is part of it).
    pub fn key(
        (environment, revision): (&str, u64),
        projects: &Projects,
        listing: Listing,
        context: &Context,
    ) -> Key {
        let mut h = Xxh3Hasher(xxhash_rust::xxh3::Xxh3::new());
        environment.hash(&mut h);
        revision.hash(&mut h);
        match projects {
            Projects::All => 0u8.hash(&mut h),
            Projects::Some(set) => {
                1u8.hash(&mut h);
                set.hash(&mut h);
            }
        }
        (listing == Listing::All).hash(&mut h);
        for field in [
            &context.user_id,
            &context.session_id,
            &context.environment,
            &context.app_name,
            &context.current_time,
            &context.remote_address,
        ] {
            field.hash(&mut h);
        }
        let mut properties: Vec<(&String, &String)> = context.properties.iter().flatten().collect();
        properties.sort_unstable();
        properties.hash(&mut h);
        Key(h.0.digest128())
    }

    /// The stable part's hash remembered for `key`, if still valid at `now` (Unix ms).
    pub fn get(&self, key: Key, now: i64) -> Option<u64> {
        let (stable, until) = self.cache.as_ref()?.get(&key.0)?;
        (now < until).then_some(stable)
    }

    pub fn put(&self, key: Key, stable: u64, until: i64) {
        if let Some(c) = &self.cache {
            // A repeated unconditional poll finds what it would write: no write.
            if c.get(&key.0) != Some((stable, until)) {
                c.insert(key.0, (stable, until));
            }
        }
    }

    /// Entries now (after pending maintenance).
    pub fn entries(&self) -> u64 {
        self.cache.as_ref().map_or(0, |c| {
            c.run_pending_tasks();
            c.entry_count()
        })
    }
}

/// `Hasher` over xxh3 (128-bit digest read directly).
struct Xxh3Hasher(xxhash_rust::xxh3::Xxh3);

impl Hasher for Xxh3Hasher {
    fn finish(&self) -> u64 {
        self.0.digest()
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features(json: &str) -> Vec<ClientFeature> {
        serde_json::from_str(json).unwrap()
    }

    fn ctx(user: Option<&str>) -> Context {
        Context {
            user_id: user.map(str::to_string),
            ..Context::default()
        }
    }

    #[test]
    fn chance_is_found_where_it_is() {
        let f = features(
            r#"[
            {"name":"random","project":"a","enabled":true,"strategies":[{"name":"flexibleRollout","parameters":{"rollout":"50","stickiness":"random","groupId":"g"}}]},
            {"name":"default","project":"b","enabled":true,"strategies":[{"name":"flexibleRollout","parameters":{"rollout":"50","stickiness":"default","groupId":"g"}}]},
            {"name":"user","project":"c","enabled":true,"strategies":[{"name":"flexibleRollout","parameters":{"rollout":"50","stickiness":"userId","groupId":"g"}}]},
            {"name":"full","project":"c","enabled":true,"strategies":[{"name":"flexibleRollout","parameters":{"rollout":"100","stickiness":"random","groupId":"g"}}]},
            {"name":"child","project":"d","enabled":true,"strategies":[{"name":"default"}],"dependencies":[{"feature":"random"}]}
        ]"#,
        );
        let v = Volatility::of(&f, &[]);
        let p = |names: &[&str]| Projects::from_names(names.iter().copied());
        assert!(v.by_chance(&p(&["a"]), &ctx(Some("alice"))));
        assert!(v.by_chance(&p(&["b"]), &ctx(None)));
        assert!(
            !v.by_chance(&p(&["b"]), &ctx(Some("alice"))),
            "default stickiness on userId"
        );
        assert!(!v.by_chance(&p(&["c"]), &ctx(None)));
        assert!(
            v.by_chance(&p(&["d"]), &ctx(Some("alice"))),
            "depends on a random flag"
        );
        assert!(v.by_chance(&Projects::All, &ctx(Some("alice"))));
    }

    #[test]
    fn date_constraints_bound_how_long_an_answer_stays_right() {
        let f = features(
            r#"[{"name":"t","enabled":true,"strategies":[{"name":"default","constraints":[
              {"contextName":"currentTime","operator":"DATE_AFTER","value":"2030-01-01T00:00:00Z"},
              {"contextName":"currentTime","operator":"DATE_BEFORE","value":"2020-01-01T00:00:00.000Z"}]}]}]"#,
        );
        let v = Volatility::of(&f, &[]);
        let t2020 = 1_577_836_800_000;
        let t2030 = 1_893_456_000_000;
        assert_eq!(v.stable_until(0), t2020);
        assert_eq!(
            v.stable_until(t2020),
            t2020,
            "at the instant itself: not kept"
        );
        assert_eq!(v.stable_until(t2020 + 1), t2030);
        assert_eq!(v.stable_until(t2030 + 1), i64::MAX);
    }

    #[test]
    fn keys_differ_by_everything_an_answer_depends_on() {
        let base = Memo::key(
            ("dev", 1),
            &Projects::All,
            Listing::Enabled,
            &ctx(Some("a")),
        );
        let mut with_props = ctx(Some("a"));
        with_props.properties = Some([("k".into(), "v".into()), ("x".into(), "y".into())].into());
        let mut reordered = ctx(Some("a"));
        reordered.properties = Some([("x".into(), "y".into()), ("k".into(), "v".into())].into());
        for other in [
            Memo::key(
                ("prod", 1),
                &Projects::All,
                Listing::Enabled,
                &ctx(Some("a")),
            ),
            Memo::key(
                ("dev", 2),
                &Projects::All,
                Listing::Enabled,
                &ctx(Some("a")),
            ),
            Memo::key(
                ("dev", 1),
                &Projects::from_names(["a"]),
                Listing::Enabled,
                &ctx(Some("a")),
            ),
            Memo::key(("dev", 1), &Projects::All, Listing::All, &ctx(Some("a"))),
            Memo::key(
                ("dev", 1),
                &Projects::All,
                Listing::Enabled,
                &ctx(Some("b")),
            ),
            Memo::key(("dev", 1), &Projects::All, Listing::Enabled, &with_props),
        ] {
            assert_ne!(base, other);
        }
        assert_eq!(
            Memo::key(("dev", 1), &Projects::All, Listing::Enabled, &with_props),
            Memo::key(("dev", 1), &Projects::All, Listing::Enabled, &reordered),
            "property order does not matter"
        );
        let memo = Memo::new(10, Duration::from_secs(60));
        memo.put(base, 42, 1_000);
        assert_eq!(memo.get(base, 999), Some(42));
        assert_eq!(memo.get(base, 1_000), None, "past its date boundary");
        assert_eq!(Memo::new(0, Duration::from_secs(1)).get(base, 0), None);
    }
}
