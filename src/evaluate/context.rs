//! The SDK context of a Frontend API request, from the query string or a JSON body, bounded
//! and with errors that say what is wrong.

use std::collections::HashMap;

use serde_json::{Map, Value};
use unleash_types::client_features::Context;

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

/// Sets `currentTime` to `now`, the instant the request was read at (RFC 3339, milliseconds),
/// unless the caller gave one. Without it the engine reads and formats the clock for every
/// date constraint it evaluates; read once per request, every flag of one answer is evaluated
/// at the same instant, and faster.
pub fn fix_current_time_at(context: &mut Context, now: chrono::DateTime<chrono::Utc>) {
    if context.current_time.is_none() {
        let now = now.format("%Y-%m-%dT%H:%M:%S%.3fZ");
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

pub(super) fn empty_context() -> Context {
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
        fix_current_time_at(&mut context, chrono::Utc::now());
        let set = context.current_time.clone().unwrap();
        let parsed = chrono::DateTime::parse_from_rfc3339(&set).unwrap();
        let drift = parsed.with_timezone(&chrono::Utc) - before;
        assert!(drift.num_milliseconds().abs() < 60_000, "{set}");
        let mut given = Context {
            current_time: Some("2030-01-01T00:00:00Z".into()),
            ..Context::default()
        };
        fix_current_time_at(&mut given, chrono::Utc::now());
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
