//! Frontend evaluation: the SDK context read from a query string or a JSON body (PROTOCOL.md §4),
//! Unleash's own engine (`unleash-yggdrasil`, wrapped here so nothing else sees it), and the
//! Frontend API response written straight to bytes.

use std::collections::HashMap;

use serde_json::{Map, Value};
use unleash_types::client_features::{ClientFeatures, Context};
use unleash_yggdrasil::{EngineState, ExtendedVariantDef};

use crate::document::Document;
use crate::json;
use crate::token::Projects;

/// Most context fields (including properties) one request may carry.
pub const MAX_CONTEXT_FIELDS: usize = 256;

/// A context that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    #[error("the query string is not valid UTF-8 after percent-decoding (parameter {0:?})")]
    QueryNotUtf8(String),
    #[error("`{0}` is not a property: write properties[name]=value")]
    BadPropertyKey(String),
    #[error("the body is not valid JSON: {0}")]
    Json(String),
    #[error("the body must be a JSON object (the context, or {{\"context\": {{...}}}})")]
    NotAnObject,
    #[error("context field `{0}` must be a string, a number or a boolean")]
    BadField(String),
    #[error("`context` must be an object of context fields (e.g. {{\"context\": {{\"userId\": \"42\"}}}}), not {0}")]
    ContextNotObject(&'static str),
    #[error("`properties` must be an object of property values, not {0}")]
    PropertiesNotObject(&'static str),
    #[error("the context has more than {MAX_CONTEXT_FIELDS} fields")]
    TooManyFields,
}

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
}

impl FrontendView {
    /// Compiles `document`. Returns the warnings for flags the engine could not compile (they
    /// evaluate as off).
    pub fn compile(document: &Document) -> (FrontendView, Vec<String>) {
        let (engine, warnings) = Engine::compile(document);
        let prepared = engine.prepare(document);
        let size_hint = 64 + prepared.iter().map(|p| p.size_hint()).sum::<usize>();
        let view = FrontendView {
            engine,
            prepared,
            size_hint,
        };
        (view, warnings)
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// One flag's result: `enabled` and the variant come from a single evaluation, so they agree
/// even for random rollouts.
pub type Evaluation = ExtendedVariantDef;

impl Engine {
    /// Compiles every feature of `document`. Returns the warnings for flags the engine could not
    /// compile (they evaluate as off).
    pub fn compile(document: &Document) -> (Engine, Vec<String>) {
        let state = EngineState::default();
        let features = ClientFeatures {
            version: 2,
            features: document
                .features
                .iter()
                .filter_map(|f| f.typed().ok())
                .collect(),
            segments: Some(
                document
                    .segments
                    .iter()
                    .map(|s| s.typed().clone())
                    .collect(),
            ),
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

/// Reads a context from a query string (without the `?`). `appName`, `environment`, `userId`,
/// `sessionId`, `remoteAddress`, `currentTime` are fields; `properties[key]=value` and any other
/// key are properties.
pub fn context_from_query(query: &str) -> Result<Context, ContextError> {
    let mut context = empty_context();
    let mut properties = HashMap::new();
    for (key, value) in query_pairs(query)? {
        if let Some(rest) = key.strip_prefix("properties[") {
            match rest.strip_suffix(']') {
                Some(name) if !name.is_empty() && !name.contains(['[', ']']) => {
                    properties.insert(name.to_string(), value);
                }
                _ => return Err(ContextError::BadPropertyKey(key)),
            }
        } else if key == "properties" {
            return Err(ContextError::BadPropertyKey(key));
        } else if !set_field(&mut context, &key, value.clone()) {
            properties.insert(key, value);
        }
    }
    if !properties.is_empty() {
        context.properties = Some(properties);
    }
    Ok(context)
}

/// Splits and decodes a query string (`application/x-www-form-urlencoded`), at most
/// [`MAX_CONTEXT_FIELDS`] pairs.
pub fn query_pairs(query: &str) -> Result<Vec<(String, String)>, ContextError> {
    let mut pairs = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        if pairs.len() == MAX_CONTEXT_FIELDS {
            return Err(ContextError::TooManyFields);
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(k).ok_or_else(|| ContextError::QueryNotUtf8(lossy(k)))?;
        let value = percent_decode(v).ok_or_else(|| ContextError::QueryNotUtf8(key.clone()))?;
        pairs.push((key, value));
    }
    Ok(pairs)
}

/// Reads a context from a JSON body: the context itself, or `{"context": {...}}`. An empty
/// body is an empty context.
pub fn context_from_json(body: &[u8]) -> Result<Context, ContextError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(empty_context());
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| ContextError::Json(e.to_string()))?;
    let Value::Object(mut object) = value else {
        return Err(ContextError::NotAnObject);
    };
    if let Some(inner) = object.remove("context") {
        match inner {
            Value::Object(inner) => object = inner,
            // No context given, as with no `context` key at all.
            Value::Null => {}
            other => return Err(ContextError::ContextNotObject(json_kind(&other))),
        }
    }
    let mut context = empty_context();
    let mut properties = HashMap::new();
    if let Some(props) = object.remove("properties") {
        match props {
            Value::Object(props) => read_properties(props, &mut properties)?,
            Value::Null => {}
            other => return Err(ContextError::PropertiesNotObject(json_kind(&other))),
        }
    }
    if object.len() + properties.len() > MAX_CONTEXT_FIELDS {
        return Err(ContextError::TooManyFields);
    }
    for (key, value) in object {
        let Some(text) = scalar(&key, value)? else {
            continue;
        };
        if !set_field(&mut context, &key, text.clone()) {
            properties.insert(key, text);
        }
    }
    if !properties.is_empty() {
        context.properties = Some(properties);
    }
    Ok(context)
}

/// Sets `currentTime` to now (RFC 3339, milliseconds) unless the caller gave one. Without it
/// the engine reads and formats the clock for every date constraint it evaluates; read once
/// per request, every flag of one answer is evaluated at the same instant, and faster.
pub fn fix_current_time(context: &mut Context) {
    if context.current_time.is_none() {
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ");
        context.current_time = Some(now.to_string());
    }
}

/// What kind of JSON value this is, for error messages.
fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn read_properties(
    props: Map<String, Value>,
    out: &mut HashMap<String, String>,
) -> Result<(), ContextError> {
    if props.len() > MAX_CONTEXT_FIELDS {
        return Err(ContextError::TooManyFields);
    }
    for (key, value) in props {
        let field = format!("properties.{key}");
        if let Some(text) = scalar(&field, value)? {
            out.insert(key, text);
        }
    }
    Ok(())
}

fn scalar(key: &str, value: Value) -> Result<Option<String>, ContextError> {
    match value {
        Value::String(s) => Ok(Some(s)),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        Value::Null => Ok(None),
        Value::Array(_) | Value::Object(_) => Err(ContextError::BadField(key.to_string())),
    }
}

fn empty_context() -> Context {
    Context {
        properties: None,
        ..Context::default()
    }
}

fn set_field(context: &mut Context, key: &str, value: String) -> bool {
    let slot = match key {
        "appName" => &mut context.app_name,
        "environment" => &mut context.environment,
        "userId" => &mut context.user_id,
        "sessionId" => &mut context.session_id,
        "remoteAddress" => &mut context.remote_address,
        "currentTime" => &mut context.current_time,
        _ => return false,
    };
    *slot = Some(value);
    true
}

fn lossy(s: &str) -> String {
    s.chars().take(64).collect()
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte; a `%` not
/// followed by two hex digits stays as it is. `None` when the bytes are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains(['%', '+']) {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).and_then(|h| {
                    std::str::from_utf8(h)
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                });
                match hex {
                    Some(v) if bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit) => {
                        out.push(v);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
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
    (view, document): (&FrontendView, &Document),
    projects: &Projects,
    context: &Context,
    listing: Listing,
) -> Vec<u8> {
    let mut out = String::with_capacity(view.size_hint);
    out.push_str("{\"toggles\":[");
    let mut first = true;
    for (feature, prepared) in document.features.iter().zip(&view.prepared) {
        if !projects.contains(&feature.project) {
            continue;
        }
        if let Some((enabled, json)) = &prepared.fixed {
            if listing == Listing::All || *enabled {
                if !first {
                    out.push(',');
                }
                first = false;
                out.push_str(json);
            }
            continue;
        }
        let result = view.engine.evaluate(&feature.name, context);
        if listing == Listing::Enabled && !result.feature_enabled {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        write_prepared(&mut out, prepared, &result);
    }
    out.push_str("]}");
    out.into_bytes()
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
    use proptest::prelude::*;

    #[test]
    fn query_fields_and_properties() {
        let c = context_from_query(
            "appName=web&environment=development&userId=alice&sessionId=s-1\
             &properties%5Bcountry%5D=NO&properties[appVersion]=1.3.0&tier=pro&remoteAddress=10.0.0.1\
             &currentTime=2024-01-01T00%3A00%3A00Z&name=a+b",
        )
        .unwrap();
        assert_eq!(c.app_name.as_deref(), Some("web"));
        assert_eq!(c.environment.as_deref(), Some("development"));
        assert_eq!(c.user_id.as_deref(), Some("alice"));
        assert_eq!(c.session_id.as_deref(), Some("s-1"));
        assert_eq!(c.remote_address.as_deref(), Some("10.0.0.1"));
        assert_eq!(c.current_time.as_deref(), Some("2024-01-01T00:00:00Z"));
        let p = c.properties.unwrap();
        assert_eq!(p["country"], "NO");
        assert_eq!(p["appVersion"], "1.3.0");
        assert_eq!(p["tier"], "pro");
        assert_eq!(p["name"], "a b");
    }

    #[test]
    fn bad_queries_are_named() {
        assert_eq!(
            context_from_query("properties[=x").err(),
            Some(ContextError::BadPropertyKey("properties[".into()))
        );
        assert!(context_from_query("properties[a][b]=x").is_err());
        assert!(context_from_query("properties=x").is_err());
        assert!(matches!(
            context_from_query("userId=%ff%fe"),
            Err(ContextError::QueryNotUtf8(k)) if k == "userId"
        ));
        assert_eq!(
            context_from_query("userId=100%")
                .unwrap()
                .user_id
                .as_deref(),
            Some("100%")
        );
        let many = (0..=MAX_CONTEXT_FIELDS)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>();
        assert_eq!(
            context_from_query(&many.join("&")).err(),
            Some(ContextError::TooManyFields)
        );
    }

    #[test]
    fn json_flat_or_wrapped() {
        let flat =
            context_from_json(br#"{"userId":"u","properties":{"a":"1","n":2,"b":true},"x":"y"}"#)
                .unwrap();
        assert_eq!(flat.user_id.as_deref(), Some("u"));
        let p = flat.properties.unwrap();
        assert_eq!(
            (
                p["a"].as_str(),
                p["n"].as_str(),
                p["b"].as_str(),
                p["x"].as_str()
            ),
            ("1", "2", "true", "y")
        );
        let wrapped = context_from_json(br#"{"context":{"sessionId":"s","userId":42}}"#).unwrap();
        assert_eq!(wrapped.session_id.as_deref(), Some("s"));
        assert_eq!(wrapped.user_id.as_deref(), Some("42"));
        assert!(context_from_json(b"  ").unwrap().user_id.is_none());
    }

    #[test]
    fn bad_json_is_named() {
        assert!(matches!(
            context_from_json(b"{"),
            Err(ContextError::Json(_))
        ));
        assert_eq!(
            context_from_json(b"[1]").err(),
            Some(ContextError::NotAnObject)
        );
        assert_eq!(
            context_from_json(br#"{"userId":{"a":1}}"#).err(),
            Some(ContextError::BadField("userId".into()))
        );
        assert_eq!(
            context_from_json(br#"{"properties":{"a":[1]}}"#).err(),
            Some(ContextError::BadField("properties.a".into()))
        );
        assert_eq!(
            context_from_json(br#"{"context":"x"}"#).err(),
            Some(ContextError::ContextNotObject("a string"))
        );
        let five = context_from_json(br#"{"context":5}"#)
            .unwrap_err()
            .to_string();
        assert!(
            five.contains("`context` must be an object") && five.ends_with("not a number"),
            "{five}"
        );
        assert_eq!(
            context_from_json(br#"{"properties":true}"#).err(),
            Some(ContextError::PropertiesNotObject("a boolean"))
        );
    }

    #[test]
    fn the_clock_is_read_once_and_a_given_time_is_kept() {
        let mut context = Context::default();
        let before = chrono::Utc::now();
        fix_current_time(&mut context);
        let set = context.current_time.clone().unwrap();
        let parsed = chrono::DateTime::parse_from_rfc3339(&set).unwrap();
        let drift = parsed.with_timezone(&chrono::Utc) - before;
        assert!(drift.num_milliseconds().abs() < 60_000, "{set}");
        let mut given = Context {
            current_time: Some("2030-01-01T00:00:00Z".into()),
            ..Context::default()
        };
        fix_current_time(&mut given);
        assert_eq!(given.current_time.as_deref(), Some("2030-01-01T00:00:00Z"));
    }

    #[test]
    fn a_null_context_is_no_context() {
        let null = context_from_json(br#"{"context":null}"#).unwrap();
        let none = context_from_json(b"{}").unwrap();
        assert_eq!(format!("{null:?}"), format!("{none:?}"));
        let with_null_field = context_from_json(br#"{"context":null,"userId":"7"}"#).unwrap();
        assert_eq!(with_null_field.user_id.as_deref(), Some("7"));
    }

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

    proptest! {
        #[test]
        fn query_parser_never_panics(q in "\\PC{0,200}") {
            let _ = context_from_query(&q);
        }

        #[test]
        fn json_parser_never_panics(b in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = context_from_json(&b);
        }

        #[test]
        fn query_round_trips_properties(
            props in proptest::collection::btree_map("[a-zA-Z0-9 _.%+&=-]{1,10}", "\\PC{0,12}", 0..8)
        ) {
            let enc = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
            let q = props.iter().map(|(k, v)| format!("properties%5B{}%5D={}", enc(k), enc(v))).collect::<Vec<_>>().join("&");
            let props_ok = props.keys().all(|k| !k.contains(['[', ']']));
            prop_assume!(props_ok);
            let c = context_from_query(&q).unwrap();
            let got = c.properties.unwrap_or_default();
            prop_assert_eq!(got.len(), props.len());
            for (k, v) in &props { prop_assert_eq!(got.get(k), Some(v)); }
        }
    }
}
