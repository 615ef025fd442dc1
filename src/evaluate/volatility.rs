//! What makes a Frontend API answer vary while the snapshot stays the same: chance and the
//! clock. [`Classifier`] reads each flag as it is compiled and finds where unleash-yggdrasil
//! (0.21.7) draws at random or reads the time; [`Volatility`] answers, per request, whether any
//! of that is in play, and until when a date constraint leaves an answer right.
//!
//! Every input the engine reads, and why a remembered answer keyed on the context (see
//! `memo.rs`) stays right for it:
//! - `userId`, `sessionId`, `appName`, `environment`, `remoteAddress` and the properties: part
//!   of the key. The server fills `environment` (the token's) and `remoteAddress` (the peer)
//!   before the key is made, so they are in it too. Every operator on them (`IN`, `NOT_IN`,
//!   `STR_*`, `NUM_*`, `SEMVER_*`, `DATE_*`, `IN_CIDR`, with `inverted` and `caseInsensitive`)
//!   is a function of the value and the constraint: the same key, the same result.
//! - `currentTime`: a client's is part of the key. Without one the server sets the request's
//!   instant, so the clock decides: the date operators (`DATE_AFTER`, `DATE_BEFORE`) flip only
//!   at the instants their values name (kept as boundaries: an answer is remembered until the
//!   next one); every other operator on it (strings, regular expressions, numbers, versions,
//!   lists), a rollout sticky on `currentTime` and a variant override on `currentTime` can
//!   change any millisecond: [`Need::Clock`], evaluated afresh on every poll like chance.
//!   (A *variant* stickiness named `currentTime` is a property for the engine: a field need.)
//! - Chance: `gradualRolloutRandom`; a `flexibleRollout` below 100% sticky on `random`, or on
//!   `default` without `userId` and `sessionId` (the engine falls back to `random[10000]`);
//!   several variants whose stickiness value the context lacks (the engine then draws).
//! - The host name (`applicationHostname`): the process's own, fixed while it runs.
//! - Segments: their constraints are read like a strategy's, for every flag that uses them.
//! - Dependencies: a flag inherits everything that makes a flag it depends on vary (its
//!   enabled state and its variant both count).
//! - The snapshot itself: its revision is part of the key.

use std::collections::{HashMap, HashSet};

use unleash_types::client_features::{
    ClientFeature, Constraint, Context, Operator, Override, Segment, Variant,
};

use crate::token::Projects;

/// Where a request's `currentTime` came from: the client's is part of the remembered key; the
/// server's is the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    Given,
    Server,
}

impl Clock {
    /// The clock of a context as the client sent it (before the server sets the time).
    pub fn of(context: &Context) -> Clock {
        if context.current_time.is_some() {
            Clock::Given
        } else {
            Clock::Server
        }
    }
}

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

/// A value a flag's result depends on that a remembered key may lack: without it, the engine
/// draws at random or reads the clock.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Need {
    /// `userId`, or else `sessionId` (default stickiness).
    AnyId,
    /// One field, named as the engine reads a variant's stickiness (`userId`, `sessionId`,
    /// `environment`, `appName`, `remoteAddress`, otherwise a property).
    Field(Box<str>),
    /// A `currentTime` the client gave: without it the result follows the clock.
    Clock,
}

impl Need {
    fn met(&self, ctx: &Context, clock: Clock) -> bool {
        match self {
            Need::AnyId => ctx.user_id.is_some() || ctx.session_id.is_some(),
            Need::Clock => clock == Clock::Given,
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

/// When chance or the clock decides a flag's result: always, or for a context missing a value
/// one of its rules reads.
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

    /// Whether chance or the clock may decide the result for this context.
    pub fn decides(&self, ctx: &Context, clock: Clock) -> bool {
        self.always || self.needs.iter().any(|n| !n.met(ctx, clock))
    }

    pub fn is_none(&self) -> bool {
        !self.always && self.needs.is_empty()
    }

    fn need(&mut self, need: Need) {
        if !self.needs.contains(&need) {
            self.needs.push(need);
        }
    }

    /// Adds what makes `other` vary; whether anything was new.
    fn absorb(&mut self, other: &Chance) -> bool {
        let before = (self.always, self.needs.len());
        self.always |= other.always;
        for n in &other.needs {
            self.need(n.clone());
        }
        before != (self.always, self.needs.len())
    }
}

/// Whether a constraint reads the clock in a way no boundary captures: any operator on
/// `currentTime` but the two date ones.
fn reads_the_clock(c: &Constraint) -> bool {
    c.context_name == "currentTime"
        && !matches!(c.operator, Operator::DateAfter | Operator::DateBefore)
}

fn overrides_on_the_clock(variants: &[Variant]) -> bool {
    variants
        .iter()
        .flat_map(|v| v.overrides.iter().flatten())
        .any(|o: &Override| o.context_name == "currentTime")
}

/// Where unleash-yggdrasil draws at random or reads the clock for this flag (see the module
/// comment). `clock_segments`: the segments with a constraint that reads the clock.
fn chance_of(f: &ClientFeature, clock_segments: &HashSet<i32>) -> Chance {
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
                    Some("currentTime") => c.need(Need::Clock),
                    // Another field: a context without it is simply not in the rollout.
                    Some(_) => {}
                }
            }
            _ => {}
        }
        let clock_constraint = s.constraints.iter().flatten().any(reads_the_clock);
        let clock_segment = s
            .segments
            .iter()
            .flatten()
            .any(|id| clock_segments.contains(id));
        if clock_constraint || clock_segment {
            c.need(Need::Clock);
        }
        // Strategy variants have no overrides.
        if s.variants.as_ref().is_some_and(|v| v.len() > 1) {
            c.need(Need::of_variant_stickiness(Some(
                param("stickiness").unwrap_or("default"),
            )));
        }
    }
    if let Some(variants) = f.variants.as_ref() {
        if variants.len() > 1 {
            let first = variants.first().and_then(|v| v.stickiness.as_deref());
            c.need(Need::of_variant_stickiness(first));
        }
        if overrides_on_the_clock(variants) {
            c.need(Need::Clock);
        }
    }
    c
}

/// Collects, one feature at a time, what [`Volatility`] needs: each flag's own chance, its
/// dependencies, and the instants of its `currentTime` date constraints. Segments first
/// ([`Classifier::add_segments`]), then the features in document order.
#[derive(Debug, Default)]
pub struct Classifier {
    /// Per flag in document order: name, project, own chance.
    flags: Vec<(String, String, Chance)>,
    /// (flag index, the names of the flags it depends on), for flags with dependencies.
    dependencies: Vec<(usize, Vec<String>)>,
    boundaries: Vec<i64>,
    /// Segments with a constraint that reads the clock.
    clock_segments: HashSet<i32>,
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
        self.flags.push((
            name.to_string(),
            project.to_string(),
            chance_of(f, &self.clock_segments),
        ));
        let constraints = f
            .strategies
            .iter()
            .flatten()
            .flat_map(|s| s.constraints.iter().flatten());
        self.boundaries_of(constraints);
    }

    /// The segments: their date constraints, and which read the clock otherwise. Before the
    /// features that use them.
    pub fn add_segments(&mut self, segments: &[Segment]) {
        for s in segments {
            if s.constraints.iter().any(reads_the_clock) {
                self.clock_segments.insert(s.id);
            }
        }
        self.boundaries_of(segments.iter().flat_map(|s| s.constraints.iter()));
    }

    fn boundaries_of<'a>(&mut self, constraints: impl Iterator<Item = &'a Constraint>) {
        for c in constraints {
            if c.context_name == "currentTime"
                && matches!(c.operator, Operator::DateAfter | Operator::DateBefore)
            {
                let values = c.value.iter().chain(c.values.iter().flatten());
                for value in values {
                    // The engine's own reading of a date (`str::parse`), and the strict one.
                    let t = value
                        .trim()
                        .parse::<chrono::DateTime<chrono::Utc>>()
                        .map(|t| t.timestamp_millis())
                        .or_else(|_| {
                            chrono::DateTime::parse_from_rfc3339(value.trim())
                                .map(|t| t.timestamp_millis())
                        });
                    if let Ok(t) = t {
                        self.boundaries.push(t);
                    }
                }
            }
        }
    }

    /// The snapshot's volatility and each flag's chance (document order). A flag depending on
    /// a flag that varies varies too.
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
        c.add_segments(segments);
        for f in features {
            c.add(&f.name, f.project.as_deref().unwrap_or("default"), Some(f));
        }
        c.finish()
    }

    /// Whether the answer for `projects` and `context` is partly chance or the clock's.
    pub fn by_chance(&self, projects: &Projects, context: &Context, clock: Clock) -> bool {
        let unmet = |needs: &Vec<Need>| needs.iter().any(|n| !n.met(context, clock));
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
        let server = Clock::Server;
        assert!(v.by_chance(&p(&["a"]), &ctx(Some("alice")), server));
        assert!(v.by_chance(&p(&["b"]), &ctx(None), server));
        assert!(
            !v.by_chance(&p(&["b"]), &ctx(Some("alice")), server),
            "default stickiness on userId"
        );
        assert!(!v.by_chance(&p(&["c"]), &ctx(None), server));
        assert!(
            v.by_chance(&p(&["d"]), &ctx(Some("alice")), server),
            "depends on a random flag"
        );
        assert!(v.by_chance(&Projects::All, &ctx(Some("alice")), server));
        // Variants sticky on a property: chance without it, not with it.
        let mut tenant = ctx(Some("alice"));
        assert!(v.by_chance(&p(&["e"]), &tenant, server));
        tenant.properties = Some([("tenant".into(), "acme".into())].into());
        assert!(!v.by_chance(&p(&["e"]), &tenant, server));
        // A strategy's variants stick on its `stickiness` parameter (default here), whatever
        // the variants say.
        let mut session = ctx(None);
        assert!(v.by_chance(&p(&["f"]), &session, server));
        session.session_id = Some("s".into());
        assert!(!v.by_chance(&p(&["f"]), &session, server));
    }

    /// Every way the clock reaches a result but the date operators: string and regular
    /// expression constraints (in a strategy and in a segment), a rollout sticky on
    /// `currentTime`, overrides on `currentTime` (on any variant), and a flag
    /// depending on one of those. With the client's own time, none of it varies.
    #[test]
    fn the_clock_is_found_where_it_is() {
        let f = features(
            r#"[
            {"name":"prefix","project":"a","enabled":true,"strategies":[{"name":"default","constraints":[
              {"contextName":"currentTime","operator":"STR_STARTS_WITH","values":["2026-12-07T19:5"]}]}]},
            {"name":"regex","project":"b","enabled":true,"strategies":[{"name":"default","constraints":[
              {"contextName":"currentTime","operator":"REGEX","value":":[0-2]"}]}]},
            {"name":"segment","project":"c","enabled":true,"strategies":[{"name":"default","segments":[7]}]},
            {"name":"sticky","project":"d","enabled":true,"strategies":[{"name":"flexibleRollout","parameters":{"rollout":"50","stickiness":"currentTime","groupId":"g"}}]},
            {"name":"override","project":"e","enabled":true,"strategies":[{"name":"default"}],
             "variants":[{"name":"x","weight":1000,"stickiness":"userId","overrides":[{"contextName":"currentTime","values":["2030-01-01T00:00:00.000Z"]}]}]},
            {"name":"override-second","project":"f","enabled":true,"strategies":[{"name":"default"}],
             "variants":[{"name":"x","weight":500,"stickiness":"userId"},{"name":"y","weight":500,"stickiness":"userId","overrides":[{"contextName":"currentTime","values":["x"]}]}]},
            {"name":"child","project":"g","enabled":true,"strategies":[{"name":"default"}],"dependencies":[{"feature":"prefix"}]},
            {"name":"dates","project":"h","enabled":true,"strategies":[{"name":"default","constraints":[
              {"contextName":"currentTime","operator":"DATE_AFTER","value":"2030-01-01T00:00:00Z"}]}]},
            {"name":"variant-property","project":"i","enabled":true,"strategies":[{"name":"default"}],
             "variants":[{"name":"x","weight":500,"stickiness":"currentTime"},{"name":"y","weight":500,"stickiness":"currentTime"}]}
        ]"#,
        );
        let segments: Vec<Segment> = serde_json::from_str(
            r#"[{"id":7,"constraints":[{"contextName":"currentTime","operator":"STR_ENDS_WITH","values":["0Z"]}]}]"#,
        )
        .unwrap();
        let (v, chance) = Volatility::of(&f, &segments);
        let user = ctx(Some("alice"));
        for (i, project) in ["a", "b", "c", "d", "e", "f", "g"].iter().enumerate() {
            let p = Projects::from_names([*project]);
            assert!(v.by_chance(&p, &user, Clock::Server), "{project}");
            assert!(chance[i].decides(&user, Clock::Server), "{project}");
            assert!(!v.by_chance(&p, &user, Clock::Given), "{project}");
        }
        let dates = Projects::from_names(["h"]);
        assert!(!v.by_chance(&dates, &user, Clock::Server), "a boundary");
        // A variant stickiness named `currentTime` is a property for the engine.
        let p = Projects::from_names(["i"]);
        assert!(v.by_chance(&p, &user, Clock::Given));
        let mut with = user.clone();
        with.properties = Some([("currentTime".into(), "t".into())].into());
        assert!(!v.by_chance(&p, &with, Clock::Server));
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
}
