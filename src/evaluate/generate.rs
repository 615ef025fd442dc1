//! Generators of whole flag sets and contexts for the properties in `properties.rs`:
//! strategies of every built-in kind, constraints with every operator on every kind of field
//! (`currentTime` values made from the instants the properties evaluate at), segments, variants
//! with every stickiness and overrides, dependencies, several projects, odd names and payloads;
//! contexts with any subset of the fields.

use proptest::prelude::*;
use serde_json::{json, Value};
use unleash_types::client_features::Context;

use super::fix_current_time_at;

/// The instant the properties evaluate around: half a second before a minute, an hour and a
/// day turn, so prefixes and patterns of the time string flip between the instants below.
pub(super) const T0: &str = "2026-12-07T23:59:59.500Z";
/// Offsets from `T0` (ms) the properties evaluate at.
pub(super) const OFFSETS: &[i64] = &[
    0, 1, 499, 500, 501, 1_000, 59_999, 60_500, 3_600_000, 86_400_000,
];

pub(super) fn t0() -> i64 {
    chrono::DateTime::parse_from_rfc3339(T0).map_or(0, |t| t.timestamp_millis())
}

pub(super) fn instant(ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

/// The time string the server puts in a context at `ms`.
pub(super) fn time_string(ms: i64) -> String {
    let mut c = Context::default();
    fix_current_time_at(&mut c, instant(ms));
    c.current_time.unwrap_or_default()
}

pub(super) const FIELDS: &[&str] = &[
    "userId",
    "sessionId",
    "appName",
    "environment",
    "remoteAddress",
    "currentTime",
    "currentTime",
    "country",
    "appVersion",
    "tier",
];

pub(super) const OPERATORS: &[&str] = &[
    "IN",
    "NOT_IN",
    "STR_STARTS_WITH",
    "STR_ENDS_WITH",
    "STR_CONTAINS",
    "NUM_EQ",
    "NUM_GT",
    "NUM_GTE",
    "NUM_LT",
    "NUM_LTE",
    "DATE_AFTER",
    "DATE_BEFORE",
    "SEMVER_EQ",
    "SEMVER_GT",
    "SEMVER_GTE",
    "SEMVER_LT",
    "SEMVER_LTE",
    "IN_CIDR",
    "REGEX",
];

/// Values a context carries (and constraints compare with).
pub(super) const VALUES: &[&str] = &[
    "1",
    "7",
    "42",
    "1500",
    "alice",
    "Alice",
    "",
    " spaced ",
    "ÆØÅ",
    "a\"b\\c",
    "x\ny",
    "1.5",
    "-3",
    "2.0.0",
    "1.10.0-beta.1",
    "10.0.0.1",
    "192.168.1.7",
    "2001:db8::1",
    "10.0.0.0/8",
    "NO",
    "no",
    "pro",
    "web",
    "development",
    "production",
    "^a",
    "[",
];

pub(super) fn pick(list: &'static [&'static str]) -> impl Strategy<Value = String> + Clone {
    proptest::sample::select(list).prop_map(str::to_string)
}

/// Values made from the instants the properties evaluate at: prefixes, suffixes and pieces of
/// their time strings, regular expressions, and dates exactly at or near them.
pub(super) fn time_value() -> impl Strategy<Value = String> {
    (0u8..4).prop_flat_map(time_value_of_kind)
}

/// The time string of one of the instants the properties evaluate at, exactly.
pub(super) fn exact_time() -> impl Strategy<Value = String> {
    let base = t0();
    proptest::sample::select(OFFSETS).prop_map(move |o| time_string(base + o))
}

/// [`time_value`] of one kind: 0 a prefix, 1 a suffix, 2 a pattern, 3 a date.
pub(super) fn time_value_of_kind(kind: u8) -> impl Strategy<Value = String> {
    let base = t0();
    (proptest::sample::select(OFFSETS), 0usize..26, -2i64..3).prop_map(
        move |(offset, cut, shift)| {
            let text = time_string(base + offset);
            let cut = cut.min(text.len());
            match kind {
                0 => text.get(..cut).unwrap_or("").to_string(),
                1 => text.get(cut..).unwrap_or("").to_string(),
                2 => ["T23:59", ":59\\.", "T00", "\\.5", "^2026-12-0[78]", "0Z$"]
                    .get(cut % 6)
                    .copied()
                    .unwrap_or("")
                    .to_string(),
                // A date at the instant, or a millisecond either side.
                _ => {
                    let at = instant(base + offset + shift);
                    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
                }
            }
        },
    )
}

/// A constraint's values as Unleash sends them for its operator (`value` for the single-value
/// operators, `values` for the lists), made from the instants the properties evaluate at when
/// it is on `currentTime`; one in eight is anything at all, in either shape.
pub(super) fn values_for(operator: &str, clock: bool) -> BoxedStrategy<(Vec<String>, bool)> {
    let list = |s: BoxedStrategy<String>| {
        proptest::collection::vec(s, 1..4)
            .prop_map(|v| (v, false))
            .boxed()
    };
    let one = |s: BoxedStrategy<String>| s.prop_map(|v| (vec![v], true)).boxed();
    let strings = if clock {
        prop_oneof![3 => time_value(), 1 => pick(VALUES)].boxed()
    } else {
        pick(VALUES).boxed()
    };
    let typed = match operator {
        "IN" | "NOT_IN" | "STR_STARTS_WITH" | "STR_ENDS_WITH" | "STR_CONTAINS" => list(strings),
        "NUM_EQ" | "NUM_GT" | "NUM_GTE" | "NUM_LT" | "NUM_LTE" => {
            one(pick(&["0", "1", "7", "42", "1500", "1.5", "-3"]).boxed())
        }
        "DATE_AFTER" | "DATE_BEFORE" => one(time_value_of_kind(3).boxed()),
        "SEMVER_EQ" | "SEMVER_GT" | "SEMVER_GTE" | "SEMVER_LT" | "SEMVER_LTE" => {
            one(pick(&["1.0.0", "2.0.0", "1.10.0-beta.1", "3.1.4"]).boxed())
        }
        "IN_CIDR" => list(pick(&["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]).boxed()),
        _ if clock => one(time_value_of_kind(2).boxed()),
        _ => one(pick(&["^a", "[0-9]+", "ÆØ", "^$", "x\\ny"]).boxed()),
    };
    let anything = (proptest::collection::vec(pick(VALUES), 0..4), any::<bool>());
    prop_oneof![7 => typed, 1 => anything].boxed()
}

pub(super) fn constraint() -> impl Strategy<Value = Value> {
    (pick(FIELDS), pick(OPERATORS)).prop_flat_map(|(field, operator)| {
        let values = values_for(&operator, field == "currentTime");
        (values, any::<bool>(), any::<bool>()).prop_map(
            move |((values, single), inverted, case_insensitive)| {
                let mut c = json!({"contextName": field, "operator": operator,
                    "inverted": inverted, "caseInsensitive": case_insensitive});
                if single {
                    c["value"] = json!(values.first().cloned().unwrap_or_default());
                } else {
                    c["values"] = json!(values);
                }
                c
            },
        )
    })
}

pub(super) fn payload() -> impl Strategy<Value = Option<Value>> {
    proptest::option::of(
        (pick(&["string", "json", "csv"]), pick(VALUES))
            .prop_map(|(t, v)| json!({"type": t, "value": v})),
    )
}

pub(super) const STICKINESS: &[&str] = &[
    "default",
    "userId",
    "sessionId",
    "random",
    "currentTime",
    "country",
    "appName",
    "remoteAddress",
];

pub(super) fn variants(overrides: bool) -> impl Strategy<Value = Vec<Value>> {
    let one = (
        pick(&["red", "blue", "grün", "a\"b"]),
        1i32..1000,
        proptest::option::of(pick(STICKINESS)),
        payload(),
        proptest::collection::vec(
            (
                pick(FIELDS),
                proptest::collection::vec(prop_oneof![pick(VALUES), exact_time()], 1..3),
            ),
            0..(if overrides { 2 } else { 1 }),
        ),
    )
        .prop_map(|(name, weight, stickiness, payload, overrides)| {
            let mut v = json!({"name": name, "weight": weight, "weightType": "variable"});
            if let Some(s) = stickiness {
                v["stickiness"] = json!(s);
            }
            if let Some(p) = payload {
                v["payload"] = p;
            }
            if !overrides.is_empty() {
                v["overrides"] = overrides
                    .into_iter()
                    .map(|(field, values)| json!({"contextName": field, "values": values}))
                    .collect();
            }
            v
        });
    prop_oneof![1 => Just(Vec::new()), 1 => proptest::collection::vec(one, 1..4)]
}

pub(super) fn strategy() -> impl Strategy<Value = Value> {
    let percent = || pick(&["0", "1", "33", "50", "99", "100"]);
    let kind = prop_oneof![
        4 => Just(("default".to_string(), json!({}))),
        1 => proptest::collection::vec(pick(VALUES), 1..4)
            .prop_map(|ids| ("userWithId".into(), json!({"userIds": ids.join(",")}))),
        1 => percent().prop_map(|p| (
            "gradualRolloutUserId".into(),
            json!({"percentage": p, "groupId": "g"})
        )),
        1 => percent().prop_map(|p| (
            "gradualRolloutSessionId".into(),
            json!({"percentage": p, "groupId": "g"})
        )),
        1 => percent().prop_map(|p| ("gradualRolloutRandom".into(), json!({"percentage": p}))),
        1 => (percent(), pick(STICKINESS), pick(&["g", "f0", ""])).prop_map(|(r, s, g)| (
            "flexibleRollout".into(),
            json!({"rollout": r, "stickiness": s, "groupId": g})
        )),
        1 => Just((
            "remoteAddress".into(),
            json!({"IPs": "10.0.0.1, 192.168.1.0/24"})
        )),
        1 => Just((
            "applicationHostname".into(),
            json!({"hostNames": "localhost,other"})
        )),
        1 => Just(("myCustomStrategy".into(), json!({"anything": "x"}))),
    ];
    (
        kind,
        prop_oneof![
            Just(Vec::new()),
            proptest::collection::vec(constraint(), 1..3)
        ],
        prop_oneof![2 => Just(Vec::new()), 1 => proptest::collection::vec(1i32..4, 1..3)],
        variants(false),
    )
        .prop_map(|((name, parameters), constraints, segments, variants)| {
            let mut s = json!({"name": name, "parameters": parameters, "constraints": constraints});
            if !segments.is_empty() {
                s["segments"] = json!(segments);
            }
            if !variants.is_empty() {
                s["variants"] = json!(variants);
            }
            s
        })
}

/// Flag names: plain and odd (quotes, backslashes, control characters, non-ASCII).
pub(super) const NAMES: &[&str] = &[
    "f0",
    "f1",
    "ÆØÅ.flag",
    "quote\"d",
    "back\\slash",
    "tab\there",
    "new\nline",
    "emoji😀",
];

pub(super) fn feature(index: usize, count: usize) -> impl Strategy<Value = Value> {
    (
        pick(&["default", "a", "b"]),
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(strategy(), 0..3),
        variants(true),
        proptest::collection::vec(
            (
                0..count,
                proptest::option::of(any::<bool>()),
                proptest::option::of(proptest::collection::vec(
                    pick(&["red", "blue", "disabled"]),
                    0..2,
                )),
            ),
            0..(if index % 2 == 1 { 2 } else { 1 }),
        ),
        any::<bool>(),
    )
        .prop_map(
            move |(project, enabled, impression, strategies, variants, deps, x)| {
                let mut f = json!({"name": NAMES.get(index).copied().unwrap_or("f"),
                "project": project, "enabled": enabled || x, "impressionData": impression,
                "strategies": strategies, "variants": variants, "type": "release",
                "stale": false});
                let deps: Vec<Value> = deps
                    .into_iter()
                    .filter(|(on, _, _)| *on != index)
                    .map(|(on, enabled, variants)| {
                        let mut d = json!({"feature": NAMES.get(on).copied().unwrap_or("f")});
                        if let Some(e) = enabled {
                            d["enabled"] = json!(e);
                        }
                        if let Some(v) = variants {
                            d["variants"] = json!(v);
                        }
                        d
                    })
                    .collect();
                if !deps.is_empty() {
                    f["dependencies"] = json!(deps);
                }
                f
            },
        )
}

/// A whole flag set: 1 to 8 features and the three segments strategies may name.
pub(super) fn flag_set() -> impl Strategy<Value = Value> {
    (1..=NAMES.len()).prop_flat_map(|count| {
        let features: Vec<_> = (0..count).map(|i| feature(i, count)).collect();
        let segments = proptest::collection::vec(proptest::collection::vec(constraint(), 1..3), 3);
        (features, segments).prop_map(|(features, segments)| {
            let segments: Vec<Value> = segments
                .into_iter()
                .enumerate()
                .map(|(i, constraints)| json!({"id": i + 1, "constraints": constraints}))
                .collect();
            json!({"version": 2, "features": features, "segments": segments})
        })
    })
}

/// A context with any subset of the fields (a `currentTime` of its own now and then).
pub(super) fn context() -> impl Strategy<Value = Context> {
    let value = || proptest::option::of(pick(VALUES));
    let base = t0();
    (
        (value(), value(), value(), value(), value()),
        proptest::option::weighted(
            0.2,
            proptest::sample::select(OFFSETS).prop_map(move |o| time_string(base + o)),
        ),
        proptest::collection::hash_map(
            pick(&["country", "appVersion", "tier", "currentTime", "random"]),
            pick(VALUES),
            0..3,
        ),
    )
        .prop_map(
            |((user, session, app, environment, address), time, properties)| Context {
                user_id: user,
                session_id: session,
                app_name: app,
                environment,
                remote_address: address,
                current_time: time,
                properties: (!properties.is_empty()).then_some(properties),
            },
        )
}
