//! The bodies SDKs post: usage metrics (`/api/client/metrics`), registrations
//! (`/api/client/register`) and bulk metrics from a downstream flagpost or Unleash Edge
//! (`/api/client/metrics/bulk`). Validated by hand so that a 400 names the bad field.

use std::collections::BTreeMap;

use chrono::{DateTime, Timelike, Utc};
use serde_json::{Map, Value};

/// Most flags in one metrics body, and most rows in one bulk body.
pub const MAX_ROWS: usize = 10_000;
/// Longest app, instance, flag or variant name kept.
pub const MAX_NAME: usize = 512;

/// One flag's usage in one hour for one app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub app: String,
    pub flag: String,
    /// Start of the hour (Unix seconds, UTC).
    pub hour: i64,
    /// The environment the sender named (bulk rows); `None` for SDK metrics.
    pub environment: Option<String>,
    pub yes: u64,
    pub no: u64,
    pub variants: BTreeMap<String, u64>,
}

/// A registration: the body as sent (unknown fields kept), with the names flagpost keys it by.
#[derive(Debug, Clone, PartialEq)]
pub struct Registration {
    pub app: String,
    pub instance: String,
    pub environment: Option<String>,
    pub fields: Map<String, Value>,
}

/// What a body can be wrong with: the field, and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {problem}")]
pub struct BodyError {
    pub field: String,
    pub problem: String,
}

fn bad(field: impl Into<String>, problem: impl Into<String>) -> BodyError {
    BodyError {
        field: field.into(),
        problem: problem.into(),
    }
}

/// Most values (of any kind, at any depth) in one body. A metrics body for [`MAX_ROWS`] flags
/// with a few variants each has well under this.
pub const MAX_VALUES: usize = 16 * MAX_ROWS;
/// Deepest nesting of objects and arrays accepted (a usage body needs 4).
pub const MAX_DEPTH: usize = 16;

/// Walks the body once without building anything, refusing it as soon as one object or array
/// has more than [`MAX_ROWS`] entries, the body more than [`MAX_VALUES`] values, or nesting
/// deeper than [`MAX_DEPTH`]. Only then is a tree built, so a body refused for its counts
/// never costs much more than its own bytes.
fn scan(bytes: &[u8]) -> Result<(), BodyError> {
    use serde::de::DeserializeSeed;
    let state = ScanState {
        values: std::cell::Cell::new(0),
        refused: std::cell::RefCell::new(None),
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let walked = Scan {
        state: &state,
        depth: 0,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    match walked {
        Ok(()) => Ok(()),
        Err(e) => Err(state
            .refused
            .take()
            .unwrap_or_else(|| bad("body", format!("is not valid JSON: {e}")))),
    }
}

struct ScanState {
    values: std::cell::Cell<usize>,
    refused: std::cell::RefCell<Option<BodyError>>,
}

#[derive(Clone, Copy)]
struct Scan<'a> {
    state: &'a ScanState,
    depth: usize,
}

impl Scan<'_> {
    fn refuse<E: serde::de::Error>(&self, problem: String) -> E {
        *self.state.refused.borrow_mut() = Some(bad("body", problem.clone()));
        E::custom(problem)
    }

    fn value<E: serde::de::Error>(&self) -> Result<(), E> {
        let n = self.state.values.get() + 1;
        self.state.values.set(n);
        if n > MAX_VALUES {
            return Err(self.refuse(format!("has more than {MAX_VALUES} values")));
        }
        Ok(())
    }

    fn inner<E: serde::de::Error>(&self) -> Result<Scan<'_>, E> {
        self.value()?;
        if self.depth >= MAX_DEPTH {
            return Err(self.refuse(format!("nests deeper than {MAX_DEPTH} levels")));
        }
        Ok(Scan {
            state: self.state,
            depth: self.depth + 1,
        })
    }

    fn entry<E: serde::de::Error>(&self, n: usize) -> Result<(), E> {
        if n > MAX_ROWS {
            return Err(self.refuse(format!(
                "has an object or array with more than {MAX_ROWS} entries"
            )));
        }
        Ok(())
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for Scan<'_> {
    type Value = ();
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Scan<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.value()
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.value()
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.value()
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.value()
    }
    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<(), E> {
        self.value()
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.value()
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        let mut n = 0;
        while seq.next_element_seed(inner)?.is_some() {
            n += 1;
            inner.entry(n)?;
        }
        Ok(())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.inner()?;
        let mut n = 0;
        while map.next_key::<serde::de::IgnoredAny>()?.is_some() {
            map.next_value_seed(inner)?;
            n += 1;
            inner.entry(n)?;
        }
        Ok(())
    }
}

fn object(bytes: &[u8]) -> Result<Map<String, Value>, BodyError> {
    scan(bytes)?;
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(bad("body", "must be a JSON object")),
        Err(e) => Err(bad("body", format!("is not valid JSON: {e}"))),
    }
}

fn name(map: &Map<String, Value>, key: &str, path: &str) -> Result<String, BodyError> {
    match map.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= MAX_NAME => Ok(s.clone()),
        Some(Value::String(s)) if s.len() > MAX_NAME => {
            Err(bad(path, format!("is longer than {MAX_NAME} characters")))
        }
        Some(Value::String(_)) => Err(bad(path, "must not be empty")),
        Some(_) => Err(bad(path, "must be a string")),
        None => Err(bad(path, "is required")),
    }
}

fn optional_name(
    map: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<String>, BodyError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => name(map, key, path).map(Some),
    }
}

fn count(value: Option<&Value>, path: &str) -> Result<u64, BodyError> {
    match value {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| bad(path, "must be a whole number, 0 or more")),
        Some(_) => Err(bad(path, "must be a number")),
    }
}

fn variants(value: Option<&Value>, path: &str) -> Result<BTreeMap<String, u64>, BodyError> {
    let mut out = BTreeMap::new();
    match value {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (variant, n) in map {
                if variant.is_empty() || variant.len() > MAX_NAME {
                    return Err(bad(path, "has an empty or too long variant name"));
                }
                out.insert(
                    variant.clone(),
                    count(Some(n), &format!("{path}.{variant}"))?,
                );
            }
        }
        Some(_) => return Err(bad(path, "must be an object of variant counts")),
    }
    Ok(out)
}

fn timestamp(value: Option<&Value>, path: &str) -> Result<DateTime<Utc>, BodyError> {
    match value {
        Some(Value::String(s)) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                bad(
                    path,
                    "must be an RFC 3339 date, e.g. 2026-11-28T04:19:03.998Z",
                )
            }),
        Some(_) => Err(bad(path, "must be a date string")),
        None => Err(bad(path, "is required")),
    }
}

/// The start of `t`'s hour, in Unix seconds.
pub fn hour_of(t: DateTime<Utc>) -> i64 {
    let t = t
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(t);
    t.timestamp()
}

/// Parses SDK usage metrics: `{"appName", "instanceId", "bucket": {"start", "stop",
/// "toggles": {flag: {"yes", "no", "variants"}}}}`. Returns the app's rows (hour from
/// `bucket.start`).
pub fn metrics(bytes: &[u8]) -> Result<Vec<Row>, BodyError> {
    let map = object(bytes)?;
    let app = name(&map, "appName", "appName")?;
    let Some(Value::Object(bucket)) = map.get("bucket") else {
        return Err(bad("bucket", "is required and must be an object"));
    };
    let start = timestamp(bucket.get("start"), "bucket.start")?;
    timestamp(bucket.get("stop"), "bucket.stop")?;
    let Some(Value::Object(toggles)) = bucket.get("toggles") else {
        return Err(bad("bucket.toggles", "is required and must be an object"));
    };
    if toggles.len() > MAX_ROWS {
        return Err(bad(
            "bucket.toggles",
            format!("has more than {MAX_ROWS} flags"),
        ));
    }
    let hour = hour_of(start);
    let mut rows = Vec::with_capacity(toggles.len());
    for (flag, stats) in toggles {
        let path = format!("bucket.toggles.{flag}");
        if flag.is_empty() || flag.len() > MAX_NAME {
            return Err(bad(path, "has an empty or too long flag name"));
        }
        let Value::Object(stats) = stats else {
            return Err(bad(path, "must be an object with yes, no and variants"));
        };
        rows.push(Row {
            app: app.clone(),
            flag: flag.clone(),
            hour,
            environment: None,
            yes: count(stats.get("yes"), &format!("{path}.yes"))?,
            no: count(stats.get("no"), &format!("{path}.no"))?,
            variants: variants(stats.get("variants"), &format!("{path}.variants"))?,
        });
    }
    Ok(rows)
}

/// Parses a registration (`appName` required; `instanceId` defaults to "default").
pub fn registration(bytes: &[u8]) -> Result<Registration, BodyError> {
    registration_of(object(bytes)?, "")
}

fn registration_of(map: Map<String, Value>, prefix: &str) -> Result<Registration, BodyError> {
    let app = name(&map, "appName", &format!("{prefix}appName"))?;
    let instance = optional_name(&map, "instanceId", &format!("{prefix}instanceId"))?
        .unwrap_or_else(|| "default".into());
    let environment = optional_name(&map, "environment", &format!("{prefix}environment"))?;
    if map.len() > 64 {
        return Err(bad(prefix.trim_end_matches('.'), "has more than 64 fields"));
    }
    Ok(Registration {
        app,
        instance,
        environment,
        fields: map,
    })
}

/// Parses bulk metrics: `{"applications": [...], "metrics": [{"featureName", "appName",
/// "environment", "timestamp", "yes", "no", "variants"}]}`.
pub fn bulk(bytes: &[u8]) -> Result<(Vec<Registration>, Vec<Row>), BodyError> {
    let mut map = object(bytes)?;
    let apps = match map.remove("applications") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list,
        Some(_) => return Err(bad("applications", "must be an array")),
    };
    let metrics = match map.remove("metrics") {
        Some(Value::Array(list)) => list,
        Some(_) => return Err(bad("metrics", "must be an array")),
        None => return Err(bad("metrics", "is required")),
    };
    if apps.len() > MAX_ROWS || metrics.len() > MAX_ROWS {
        return Err(bad("body", format!("has more than {MAX_ROWS} entries")));
    }
    let mut registrations = Vec::with_capacity(apps.len());
    for (i, app) in apps.into_iter().enumerate() {
        let Value::Object(app) = app else {
            return Err(bad(format!("applications[{i}]"), "must be an object"));
        };
        registrations.push(registration_of(app, &format!("applications[{i}]."))?);
    }
    let mut rows = Vec::with_capacity(metrics.len());
    for (i, row) in metrics.into_iter().enumerate() {
        let path = format!("metrics[{i}]");
        let Value::Object(row) = row else {
            return Err(bad(path, "must be an object"));
        };
        rows.push(Row {
            app: name(&row, "appName", &format!("{path}.appName"))?,
            flag: name(&row, "featureName", &format!("{path}.featureName"))?,
            hour: hour_of(timestamp(
                row.get("timestamp"),
                &format!("{path}.timestamp"),
            )?),
            environment: optional_name(&row, "environment", &format!("{path}.environment"))?,
            yes: count(row.get("yes"), &format!("{path}.yes"))?,
            no: count(row.get("no"), &format!("{path}.no"))?,
            variants: variants(row.get("variants"), &format!("{path}.variants"))?,
        });
    }
    Ok((registrations, rows))
}

#[cfg(test)]
#[path = "body_tests.rs"]
mod tests;
