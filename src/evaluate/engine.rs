//! Unleash's engine, kept lean: `unleash-yggdrasil` compiles each flag's strategies,
//! constraints and segments into its rule closures (`unleash_yggdrasil::compile`), and flagpost
//! keeps only those compiled flags, in document order, and walks them itself.
//!
//! yggdrasil's own `EngineState` also keeps a typed copy of every feature it was given (for its
//! delta and `get_state` calls, which flagpost does not use): at 10,000 flags that copy is
//! about 19 MiB of a snapshot's 55 (`cargo run --release --example memory`). It also loads its
//! state through an `ArcSwap` and looks the flag up by name on every evaluation; here a
//! response walks the flags by index.
//!
//! What follows mirrors `EngineState::get_variant` of unleash-yggdrasil 0.21.7 step by step
//! (enabled, dependencies, strategy variants, overrides, stickiness, the variant hash), and a
//! test compares both on the client specification and a generated flag set. Two differences,
//! both for data Unleash never sends: variants whose weights add up to 0 (yggdrasil divides by
//! zero and panics) get no variant, and negative weights count as 0.

use std::collections::{HashMap, HashSet};

use rand::Rng;
use unleash_types::client_features::{ClientFeature, Context, Override, Payload, Segment};
use unleash_yggdrasil::state::EnrichedContext;
use unleash_yggdrasil::strategy_parsing::normalized_hash;
use unleash_yggdrasil::{CompiledToggle, CompiledVariant};

use crate::document::{Document, Feature};

/// The seed of the variant hash (yggdrasil's `VARIANT_NORMALIZATION_SEED`, the same in every
/// Unleash SDK).
const VARIANT_SEED: u32 = 86_028_157;

/// The compiled flags of one snapshot, in document order.
pub struct Engine {
    toggles: Vec<CompiledToggle>,
    /// Indexes into `toggles`, sorted by flag name.
    by_name: Vec<u32>,
    /// Per flag, the index of each flag it depends on (in the order of its dependencies;
    /// `u32::MAX`: not in the document), so a dependency costs no lookup by name.
    parents: Vec<Box<[u32]>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("flags", &self.toggles.len())
            .finish()
    }
}

/// One flag's result: whether it is on, and the variant chosen in the same evaluation (none:
/// the `disabled` variant).
#[derive(Debug, Clone, Copy)]
pub struct Evaluation<'a> {
    pub feature_enabled: bool,
    variant: Option<&'a CompiledVariant>,
}

impl<'a> Evaluation<'a> {
    const OFF: Evaluation<'static> = Evaluation {
        feature_enabled: false,
        variant: None,
    };

    /// The variant's name (`disabled` when none applies).
    pub fn variant_name(&self) -> &'a str {
        self.variant.map_or("disabled", |v| v.name.as_str())
    }

    /// Whether a variant applies.
    pub fn variant_enabled(&self) -> bool {
        self.variant.is_some()
    }

    pub fn payload(&self) -> Option<&'a Payload> {
        self.variant.and_then(|v| v.payload.as_ref())
    }
}

/// The variants a strategy matched, with its group id.
type Matched<'a> = Option<(&'a [CompiledVariant], &'a str)>;

impl Engine {
    /// Compiles every feature of `document`. Returns the warnings for flags the engine could not
    /// compile (they evaluate as off).
    pub fn compile(document: &Document) -> (Engine, Vec<String>) {
        Engine::build(document, &document.typed_segments(), |_, _| {})
    }

    /// Compiles `document`'s features one at a time (each typed copy is dropped once its
    /// rules are compiled), showing each to `each` first (`None`: its JSON does not read as a
    /// feature; it evaluates as off).
    pub fn build(
        document: &Document,
        segments: &[Segment],
        mut each: impl FnMut(&Feature, Option<&ClientFeature>),
    ) -> (Engine, Vec<String>) {
        let segment_map: HashMap<i32, Segment> =
            segments.iter().map(|s| (s.id, s.clone())).collect();
        let mut warnings = Vec::new();
        let mut toggles = Vec::with_capacity(document.features.len());
        // A disabled flag is off whatever its rules say, so its rules are compiled only when
        // another flag depends on it (a dependency may ask for its variant).
        let mut parents: HashSet<String> = HashSet::new();
        let mut disabled: Vec<usize> = Vec::new();
        for (i, feature) in document.features.iter().enumerate() {
            let typed = feature.typed();
            each(feature, typed.as_ref().ok());
            let toggle = match typed {
                Ok(typed) => {
                    parents.extend(
                        typed
                            .dependencies
                            .iter()
                            .flatten()
                            .map(|d| d.feature.clone()),
                    );
                    if typed.enabled {
                        unleash_yggdrasil::compile(&typed, &segment_map, &mut warnings)
                    } else {
                        disabled.push(i);
                        CompiledToggle {
                            name: typed.name,
                            project: feature.project.clone(),
                            feature_type: typed.feature_type,
                            impression_data: feature.impression_data,
                            ..CompiledToggle::default()
                        }
                    }
                }
                Err(e) => {
                    warnings.push(unleash_yggdrasil::EvalWarning {
                        toggle_name: feature.name.clone(),
                        message: format!("cannot be read: {e}"),
                    });
                    CompiledToggle {
                        name: feature.name.clone(),
                        project: feature.project.clone(),
                        ..CompiledToggle::default()
                    }
                }
            };
            toggles.push(toggle);
        }
        for i in disabled {
            let (Some(feature), Some(slot)) = (document.features.get(i), toggles.get_mut(i)) else {
                continue;
            };
            if parents.contains(&feature.name) {
                if let Ok(typed) = feature.typed() {
                    *slot = unleash_yggdrasil::compile(&typed, &segment_map, &mut warnings);
                }
            }
        }
        let warnings = warnings
            .into_iter()
            .map(|w| format!("{}: {}", w.toggle_name, w.message))
            .collect();
        (Engine::indexed(toggles), warnings)
    }

    /// An engine over `toggles` (in document order), with its index by name and each
    /// toggle's parents resolved to indexes (`u32::MAX` for a parent not there).
    fn indexed(toggles: Vec<CompiledToggle>) -> Engine {
        let mut by_name: Vec<u32> = (0..u32::try_from(toggles.len()).unwrap_or(u32::MAX)).collect();
        by_name.sort_unstable_by(|a, b| name_at(&toggles, *a).cmp(name_at(&toggles, *b)));
        let mut engine = Engine {
            toggles,
            by_name,
            parents: Vec::new(),
        };
        engine.parents = engine
            .toggles
            .iter()
            .map(|t| {
                t.dependencies
                    .iter()
                    .map(|d| {
                        engine
                            .index_of(&d.feature)
                            .and_then(|i| u32::try_from(i).ok())
                            .unwrap_or(u32::MAX)
                    })
                    .collect()
            })
            .collect();
        engine
    }

    /// The index (in document order) of the flag named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.by_name
            .binary_search_by(|i| name_at(&self.toggles, *i).cmp(name))
            .ok()
            .and_then(|at| self.by_name.get(at))
            .map(|i| *i as usize)
    }

    /// Evaluates the flag named `name` (off when there is none); the tests' way in.
    #[cfg(test)]
    pub fn evaluate(&self, name: &str, context: &Context) -> Evaluation<'_> {
        match self.index_of(name) {
            Some(i) => self.evaluate_at(i, context),
            None => Evaluation::OFF,
        }
    }

    /// Evaluates the flag at `index` in document order, once: whether it is on and, when it
    /// is, its variant from the same evaluation (they agree even for random rollouts).
    pub fn evaluate_at(&self, index: usize, context: &Context) -> Evaluation<'_> {
        let Some(toggle) = self.toggles.get(index) else {
            return Evaluation::OFF;
        };
        let ctx = EnrichedContext::from(context, &toggle.name, None);
        let (enabled, matched) = self.variant_enabled(index, toggle, &ctx);
        Evaluation {
            feature_enabled: enabled,
            variant: if enabled {
                choose_variant(toggle, &ctx, matched)
            } else {
                None
            },
        }
    }

    /// Whether the flag is on, and the variants of the strategy that turned it on.
    fn variant_enabled<'a>(
        &self,
        index: usize,
        toggle: &'a CompiledToggle,
        ctx: &EnrichedContext<'_>,
    ) -> (bool, Matched<'a>) {
        if !toggle.enabled || !self.parents_satisfied(index, ctx) {
            return (false, None);
        }
        let matched = strategy_variants(toggle, ctx);
        if matched.is_some() {
            return (true, matched);
        }
        // A flag with strategy variants is on only through one of those strategies.
        if toggle
            .compiled_variant_strategy
            .as_ref()
            .is_some_and(|s| !s.is_empty())
        {
            return (false, None);
        }
        ((toggle.compiled_strategy)(ctx), None)
    }

    fn enabled(&self, index: usize, toggle: &CompiledToggle, ctx: &EnrichedContext<'_>) -> bool {
        toggle.enabled && self.parents_satisfied(index, ctx) && (toggle.compiled_strategy)(ctx)
    }

    /// Whether every flag `toggle` depends on is in the state it requires. Only one level: a
    /// parent that has dependencies itself fails the check.
    fn parents_satisfied(&self, index: usize, ctx: &EnrichedContext<'_>) -> bool {
        let Some(toggle) = self.toggles.get(index) else {
            return false;
        };
        let parents = self.parents.get(index).map_or(&[][..], |p| &p[..]);
        toggle
            .dependencies
            .iter()
            .zip(parents)
            .all(|(dependency, &at)| {
                let ctx = ctx.with_toggle_name(&toggle.name);
                let Some(parent) = self.toggles.get(at as usize) else {
                    return false;
                };
                if !parent.dependencies.is_empty() {
                    return false;
                }
                let parent_enabled = self.enabled(at as usize, parent, &ctx);
                let parent_variant = choose_variant(parent, &ctx, strategy_variants(parent, &ctx));
                let variant_satisfied = match (&dependency.variants, parent_variant) {
                    (Some(expected), Some(actual)) => {
                        expected.is_empty() || expected.contains(&actual.name)
                    }
                    _ => true,
                };
                variant_satisfied && parent_enabled == dependency.enabled.unwrap_or(true)
            })
    }
}

fn name_at(toggles: &[CompiledToggle], i: u32) -> &str {
    toggles.get(i as usize).map_or("", |t| t.name.as_str())
}

/// The variants of the first strategy with variants whose rule matches.
fn strategy_variants<'a>(toggle: &'a CompiledToggle, ctx: &EnrichedContext<'_>) -> Matched<'a> {
    toggle
        .compiled_variant_strategy
        .as_ref()?
        .iter()
        .find_map(|(rule, variants, group)| {
            rule(ctx).then_some((variants.as_slice(), group.as_str()))
        })
}

/// The strategy's variants when it has some, otherwise the flag's own.
fn choose_variant<'a>(
    toggle: &'a CompiledToggle,
    ctx: &EnrichedContext<'_>,
    matched: Matched<'a>,
) -> Option<&'a CompiledVariant> {
    match matched {
        Some((variants, group)) if !variants.is_empty() => resolve_variant(variants, group, ctx),
        _ => resolve_variant(&toggle.variants, &toggle.name, ctx),
    }
}

/// An overriding variant, or the one the stickiness hash (or chance, without a sticky value)
/// lands on.
fn resolve_variant<'a>(
    variants: &'a [CompiledVariant],
    group: &str,
    ctx: &EnrichedContext<'_>,
) -> Option<&'a CompiledVariant> {
    if variants.is_empty() {
        return None;
    }
    if let Some(overriding) = variant_override(variants, ctx) {
        return Some(overriding);
    }
    let weight = |v: &CompiledVariant| u32::try_from(v.weight).unwrap_or(0);
    let total = variants
        .iter()
        .fold(0u32, |sum, v| sum.saturating_add(weight(v)));
    if total == 0 {
        return None;
    }
    let stickiness = variants.first().and_then(|v| v.stickiness.as_deref());
    let target = match seed(stickiness, ctx) {
        Some(seed) => normalized_hash(group, seed, total, VARIANT_SEED).ok()?,
        None => rand::rng().random_range(1..=total),
    };
    let mut reached = 0u32;
    variants.iter().find(|v| {
        reached = reached.saturating_add(weight(v));
        reached >= target
    })
}

/// The context value a variant stickiness hashes.
fn seed<'a>(stickiness: Option<&str>, ctx: &EnrichedContext<'a>) -> Option<&'a str> {
    match stickiness {
        Some("default") | None => ctx.user_id.or(ctx.session_id),
        Some("userId") => ctx.user_id,
        Some("sessionId") => ctx.session_id,
        Some("environment") => ctx.environment,
        Some("appName") => ctx.app_name,
        Some("remoteAddress") => ctx.remote_address,
        Some(custom) => ctx.properties.as_ref().and_then(|p| p.get(custom)),
    }
}

/// The first variant with an override matching the context.
fn variant_override<'a>(
    variants: &'a [CompiledVariant],
    ctx: &EnrichedContext<'_>,
) -> Option<&'a CompiledVariant> {
    variants.iter().find(|v| {
        v.overrides.iter().flatten().any(|o| {
            override_value(o, ctx).is_some_and(|value| o.values.iter().any(|v| v == value))
        })
    })
}

fn override_value<'a>(o: &Override, ctx: &EnrichedContext<'a>) -> Option<&'a str> {
    match o.context_name.as_str() {
        "userId" => ctx.user_id,
        "sessionId" => ctx.session_id,
        "environment" => ctx.environment,
        "appName" => ctx.app_name,
        "currentTime" => ctx.current_time,
        "remoteAddress" => ctx.remote_address,
        name => ctx.properties.as_ref().and_then(|p| p.get(name)),
    }
}
