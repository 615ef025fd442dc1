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

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::time::Duration;

use unleash_types::client_features::{ClientFeature, Constraint, Context, Operator, Segment};

use super::Listing;
use crate::token::Projects;

/// What in a snapshot makes answers vary without the snapshot changing.
#[derive(Debug, Default)]
pub struct Volatility {
    /// Projects with a flag whose result is chance for every context.
    always: HashSet<String>,
    /// Per project, the context values without which one of its flags is left to chance.
    needs: HashMap<String, Vec<Need>>,
    /// Every instant (Unix ms) a `currentTime` date constraint names, sorted.
    boundaries: Vec<i64>,
}

/// A context value a flag's stickiness hashes: without it, the engine draws at random.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Need {
    /// `userId`, or else `sessionId` (default stickiness).
    AnyId,
    /// One field, named as the engine reads a variant's stickiness (`userId`, `sessionId`,
    /// `environment`, `appName`, `remoteAddress`, otherwise a property).
    Field(Box<str>),
}

impl Need {
    fn met(&self, ctx: &Context) -> bool {
        match self {
            Need::AnyId => ctx.user_id.is_some() || ctx.session_id.is_some(),
            Need::Field(name) => match name.as_ref() {
                "userId" => ctx.user_id.is_some(),
                "sessionId" => ctx.session_id.is_some(),
                "environment" => ctx.environment.is_some(),
                "appName" => ctx.app_name.is_some(),
                "remoteAddress" => ctx.remote_address.is_some(),
                other => ctx
                    .properties
                    .as_ref()
                    .is_some_and(|p| p.contains_key(other)),
            },
        }
    }

    /// A variant stickiness, as the engine reads it to pick the value it hashes.
    fn of_variant_stickiness(stickiness: Option<&str>) -> Need {
        match stickiness {
            None | Some("default") => Need::AnyId,
            Some(field) => Need::Field(field.into()),
        }
    }
}

/// When chance decides a flag's result: always, or for a context missing a value one of its
/// stickiness settings hashes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chance {
    always: bool,
    needs: Vec<Need>,
}

impl Chance {
    pub const NONE: Chance = Chance {
        always: false,
        needs: Vec::new(),
    };

    /// Whether chance may decide the result for this context.
    pub fn decides(&self, ctx: &Context) -> bool {
        self.always || self.needs.iter().any(|n| !n.met(ctx))
    }

    pub fn is_none(&self) -> bool {
        !self.always && self.needs.is_empty()
    }

    fn need(&mut self, need: Need) {
        if !self.needs.contains(&need) {
            self.needs.push(need);
        }
    }

    /// Adds what makes `other` chance; whether anything was new.
    fn absorb(&mut self, other: &Chance) -> bool {
        let before = (self.always, self.needs.len());
        self.always |= other.always;
        for n in &other.needs {
            self.need(n.clone());
        }
        before != (self.always, self.needs.len())
    }
}

/// Where unleash-yggdrasil draws at random (mirrors its strategy upgrade and variant choice):
/// `gradualRolloutRandom`; a `flexibleRollout` below 100% with `random` stickiness, or with
/// default stickiness for a context without `userId` and `sessionId`; a choice between
/// several variants whose stickiness value the context lacks (a strategy's variants stick on
/// the strategy's `stickiness` parameter, the flag's own on the first variant's).
fn chance_of(f: &ClientFeature) -> Chance {
    let mut c = Chance::default();
    for s in f.strategies.iter().flatten() {
        let param = |k: &str| {
            s.parameters
                .as_ref()
                .and_then(|p| p.get(k))
                .map(String::as_str)
        };
        match s.name.as_str() {
            "gradualRolloutRandom" => c.always = true,
            "flexibleRollout" if param("rollout").is_none_or(|r| r.trim() != "100") => {
                match param("stickiness").map(str::trim) {
                    Some("random") => c.always = true,
                    None | Some("") | Some("default") => c.need(Need::AnyId),
                    // Another field: a context without it is simply not in the rollout.
                    Some(_) => {}
                }
            }
            _ => {}
        }
        if s.variants.as_ref().is_some_and(|v| v.len() > 1) {
            c.need(Need::of_variant_stickiness(Some(
                param("stickiness").unwrap_or("default"),
            )));
        }
    }
    if let Some(variants) = f.variants.as_ref().filter(|v| v.len() > 1) {
        let first = variants.first().and_then(|v| v.stickiness.as_deref());
        c.need(Need::of_variant_stickiness(first));
    }
    c
}

/// Collects, one feature at a time, what [`Volatility`] needs: each flag's own chance, its
/// dependencies, and the instants of its `currentTime` date constraints.
#[derive(Debug, Default)]
pub struct Classifier {
    /// Per flag in document order: name, project, own chance.
    flags: Vec<(String, String, Chance)>,
    /// (flag index, the names of the flags it depends on), for flags with dependencies.
    dependencies: Vec<(usize, Vec<String>)>,
    boundaries: Vec<i64>,
}

impl Classifier {
    /// The next flag in document order (`None`: it cannot be read; the engine keeps it off).
    pub fn add(&mut self, name: &str, project: &str, feature: Option<&ClientFeature>) {
        let Some(f) = feature else {
            self.flags
                .push((name.to_string(), project.to_string(), Chance::NONE));
            return;
        };
        let parents: Vec<String> = f
            .dependencies
            .iter()
            .flatten()
            .map(|d| d.feature.clone())
            .collect();
        if !parents.is_empty() {
            self.dependencies.push((self.flags.len(), parents));
        }
        self.flags
            .push((name.to_string(), project.to_string(), chance_of(f)));
        let constraints = f
            .strategies
            .iter()
            .flatten()
            .flat_map(|s| s.constraints.iter().flatten());
        self.boundaries_of(constraints);
    }

    /// The segments' date constraints.
    pub fn add_segments(&mut self, segments: &[Segment]) {
        self.boundaries_of(segments.iter().flat_map(|s| s.constraints.iter()));
    }

    fn boundaries_of<'a>(&mut self, constraints: impl Iterator<Item = &'a Constraint>) {
        for c in constraints {
            if c.context_name == "currentTime"
                && matches!(c.operator, Operator::DateAfter | Operator::DateBefore)
            {
                let values = c.value.iter().chain(c.values.iter().flatten());
                for value in values {
                    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(value.trim()) {
                        self.boundaries.push(t.timestamp_millis());
                    }
                }
            }
        }
    }

    /// The snapshot's volatility and each flag's chance (document order). A flag depending on
    /// a chancy one is chancy too.
    pub fn finish(mut self) -> (Volatility, Vec<Chance>) {
        let mut chance: Vec<Chance> = self.flags.iter().map(|(_, _, c)| c.clone()).collect();
        let index: HashMap<&str, usize> = self
            .flags
            .iter()
            .enumerate()
            .map(|(i, (name, _, _))| (name.as_str(), i))
            .collect();
        // To a fixed point (bounded by the chain length).
        for _ in 0..self.dependencies.len().min(16) {
            let mut changed = false;
            for (i, parents) in &self.dependencies {
                let mut inherited = Chance::default();
                for p in parents {
                    if let Some(c) = index.get(p.as_str()).and_then(|&j| chance.get(j)) {
                        inherited.absorb(c);
                    }
                }
                if let Some(own) = chance.get_mut(*i) {
                    changed |= own.absorb(&inherited);
                }
            }
            if !changed {
                break;
            }
        }
        let mut v = Volatility::default();
        for ((_, project, _), c) in self.flags.iter().zip(&chance) {
            if c.always {
                v.always.insert(project.clone());
            }
            if !c.needs.is_empty() {
                let needs = v.needs.entry(project.clone()).or_default();
                for n in &c.needs {
                    if !needs.contains(n) {
                        needs.push(n.clone());
                    }
                }
            }
        }
        self.boundaries.sort_unstable();
        self.boundaries.dedup();
        v.boundaries = self.boundaries;
        (v, chance)
    }
}

impl Volatility {
    /// Classifies `features` (see [`Classifier`]).
    #[cfg(test)]
    pub fn of(features: &[ClientFeature], segments: &[Segment]) -> (Volatility, Vec<Chance>) {
        let mut c = Classifier::default();
        for f in features {
            c.add(&f.name, f.project.as_deref().unwrap_or("default"), Some(f));
        }
        c.add_segments(segments);
        c.finish()
    }

    /// Whether the answer for `projects` and `context` is partly chance.
    pub fn by_chance(&self, projects: &Projects, context: &Context) -> bool {
        let unmet = |needs: &Vec<Need>| needs.iter().any(|n| !n.met(context));
        match projects {
            Projects::All => !self.always.is_empty() || self.needs.values().any(unmet),
            Projects::Some(list) => list
                .iter()
                .any(|p| self.always.contains(p) || self.needs.get(p).is_some_and(unmet)),
        }
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
            {"name":"child","project":"d","enabled":true,"strategies":[{"name":"default"}],"dependencies":[{"feature":"random"}]},
            {"name":"custom","project":"e","enabled":true,"strategies":[{"name":"default"}],
             "variants":[{"name":"x","weight":500,"stickiness":"tenant"},{"name":"y","weight":500,"stickiness":"tenant"}]},
            {"name":"strategy","project":"f","enabled":true,"strategies":[{"name":"default",
             "variants":[{"name":"x","weight":500,"stickiness":"userId"},{"name":"y","weight":500,"stickiness":"userId"}]}]}
        ]"#,
        );
        let (v, _) = Volatility::of(&f, &[]);
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
        // Variants sticky on a property: chance without it, not with it.
        let mut tenant = ctx(Some("alice"));
        assert!(v.by_chance(&p(&["e"]), &tenant));
        tenant.properties = Some([("tenant".into(), "acme".into())].into());
        assert!(!v.by_chance(&p(&["e"]), &tenant));
        // A strategy's variants stick on its `stickiness` parameter (default here), whatever
        // the variants say.
        let mut session = ctx(None);
        assert!(v.by_chance(&p(&["f"]), &session));
        session.session_id = Some("s".into());
        assert!(!v.by_chance(&p(&["f"]), &session));
    }

    #[test]
    fn date_constraints_bound_how_long_an_answer_stays_right() {
        let f = features(
            r#"[{"name":"t","enabled":true,"strategies":[{"name":"default","constraints":[
              {"contextName":"currentTime","operator":"DATE_AFTER","value":"2030-01-01T00:00:00Z"},
              {"contextName":"currentTime","operator":"DATE_BEFORE","value":"2020-01-01T00:00:00.000Z"}]}]}]"#,
        );
        let (v, _) = Volatility::of(&f, &[]);
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
