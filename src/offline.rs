//! Offline mode: features from a local file, in the Client API format or Unleash Edge's simple
//! format, published for every configured environment, and re-read when the file changes. A
//! broken file keeps the last good snapshot; its error is logged once and counted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;

use crate::document::{Document, DocumentError};
use crate::publish::Publisher;
use crate::watch::Stamp;

/// A features file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Document {
        path: PathBuf,
        source: DocumentError,
    },
    #[error("{path}: {problem}")]
    Format { path: PathBuf, problem: String },
}

/// Reads and parses a features file.
pub fn load(path: &Path) -> Result<Document, LoadError> {
    let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&bytes).map_err(|e| match e {
        ParseError::Document(source) => LoadError::Document {
            path: path.to_path_buf(),
            source,
        },
        ParseError::Format(problem) => LoadError::Format {
            path: path.to_path_buf(),
            problem,
        },
    })
}

enum ParseError {
    Document(DocumentError),
    Format(String),
}

fn parse(bytes: &[u8]) -> Result<Document, ParseError> {
    let not_an_object = || {
        ParseError::Format(
            "expected a JSON object: a Client API response ({\"version\":2,\"features\":[...]}) \
             or the simple format ({\"flag\":{\"enabled\":true}})"
                .into(),
        )
    };
    // The top level's keys, values left unparsed: a large Client API document is read once,
    // by `Document::parse`, never as a whole JSON tree.
    let top: BTreeMap<String, &RawValue> = match serde_json::from_slice(bytes) {
        Ok(top) => top,
        Err(e) if e.classify() == serde_json::error::Category::Data => return Err(not_an_object()),
        Err(e) => return Err(ParseError::Document(DocumentError::Json(e))),
    };
    if top.contains_key("features") {
        return Document::parse(bytes).map_err(ParseError::Document);
    }
    let flags: Map<String, Value> =
        serde_json::from_slice(bytes).map_err(|e| ParseError::Document(DocumentError::Json(e)))?;
    let converted = simple_to_client(&flags).map_err(ParseError::Format)?;
    let text =
        serde_json::to_vec(&converted).map_err(|e| ParseError::Document(DocumentError::Json(e)))?;
    Document::parse(&text).map_err(ParseError::Document)
}

/// Unleash Edge's simple format: `{"flag":{"enabled":true,"variant":"blue"}}`. Each flag becomes
/// a feature in project `default` with the default strategy and, when `variant` is given, that
/// one variant.
fn simple_to_client(flags: &Map<String, Value>) -> Result<Value, String> {
    let mut features = Vec::with_capacity(flags.len());
    for (name, spec) in flags {
        let Value::Object(spec) = spec else {
            return Err(format!(
                "flag {name:?}: expected {{\"enabled\": true|false, \"variant\": \"name\"}}"
            ));
        };
        if let Some(unknown) = spec.keys().find(|k| *k != "enabled" && *k != "variant") {
            return Err(format!(
                "flag {name:?}: unknown key {unknown:?} (the simple format has \"enabled\" and \"variant\")"
            ));
        }
        let enabled = match spec.get("enabled") {
            Some(Value::Bool(b)) => *b,
            _ => return Err(format!("flag {name:?}: \"enabled\" must be true or false")),
        };
        let variants = match spec.get("variant") {
            None | Some(Value::Null) => json!([]),
            Some(Value::String(v)) if !v.is_empty() => json!([{
                "name": v, "weight": 1000, "weightType": "variable", "stickiness": "default"
            }]),
            Some(_) => {
                return Err(format!(
                    "flag {name:?}: \"variant\" must be a non-empty string"
                ))
            }
        };
        features.push(json!({
            "name": name,
            "type": "release",
            "enabled": enabled,
            "project": "default",
            "stale": false,
            "impressionData": false,
            "strategies": [{"name": "default", "constraints": [], "parameters": {}}],
            "variants": variants,
        }));
    }
    Ok(json!({"version": 2, "features": features, "segments": []}))
}

/// Loads the file and publishes it for every environment. On failure the previous snapshots
/// stay; the failure is counted.
pub fn reload(publisher: &Publisher, path: &Path) -> Result<usize, LoadError> {
    match load(path) {
        Ok(document) => {
            let count = document.features.len();
            for env in publisher.environments() {
                publisher.publish_blocking(&env, document.clone());
            }
            Ok(count)
        }
        Err(e) => {
            publisher.load_failed("file");
            Err(e)
        }
    }
}

/// Checks the file every `interval` and reloads it when it changed. Runs until `cancel`.
pub async fn watch(
    publisher: std::sync::Arc<Publisher>,
    path: PathBuf,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut last = Stamp::of(&path);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let now = Stamp::of(&path);
        if now == last {
            continue;
        }
        last = now;
        let reloaded = tokio::task::spawn_blocking({
            let publisher = publisher.clone();
            let path = path.clone();
            move || reload(&publisher, &path)
        })
        .await;
        match reloaded {
            Ok(Ok(count)) => {
                tracing::info!(path = %path.display(), features = count, "features file reloaded");
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "features file changed but cannot be used; still serving the last good features");
            }
            Err(e) => tracing::error!(error = %e, "features reload task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(doc: &Document) -> Vec<&str> {
        doc.features.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn reads_the_client_api_format() {
        let doc = parse(br#"{"version":2,"features":[{"name":"a","enabled":true}]}"#)
            .ok()
            .unwrap();
        assert_eq!(names(&doc), ["a"]);
    }

    #[test]
    fn converts_the_simple_format() {
        let doc = parse(br#"{"on":{"enabled":true,"variant":"blue"},"off":{"enabled":false}}"#)
            .ok()
            .unwrap();
        assert_eq!(names(&doc), ["off", "on"]);
        let on = doc
            .features
            .iter()
            .find(|f| f.name == "on")
            .unwrap()
            .typed()
            .unwrap();
        assert!(on.enabled);
        assert_eq!(on.variants.as_ref().unwrap()[0].name, "blue");
    }

    #[test]
    fn says_what_is_wrong() {
        let err = |b: &[u8]| match parse(b) {
            Err(ParseError::Format(p)) => p,
            Err(ParseError::Document(d)) => d.to_string(),
            Ok(_) => panic!("accepted"),
        };
        assert!(err(b"[1]").contains("expected a JSON object"));
        assert!(err(br#"{"a":{"enabled":"yes"}}"#).contains("\"enabled\" must be true or false"));
        assert!(err(br#"{"a":{"enabled":true,"colour":"x"}}"#).contains("unknown key"));
        assert!(err(br#"{"a":1}"#).contains("flag \"a\""));
        assert!(err(b"{").contains("not a features document"));
    }
}
