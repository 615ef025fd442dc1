//! Downstream instances: an Unleash Edge (or another flagpost) using this flagpost as its
//! upstream reports its instance data to `POST /api/client/metrics/edge`. What it reports is
//! hostile until bounded: only a few fields are kept, each string cut to 256 bytes, at most
//! 1,000 instances, each forgotten 15 minutes after its last report. They are shown as
//! `connected_instances` in `/internal-backstage/instancedata`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{json, Value};

/// Most downstream instances remembered.
const MAX_INSTANCES: u64 = 1000;
/// How long an instance is shown after its last report (Edge reports every minute).
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// Longest string kept from a report.
const MAX_TEXT: usize = 256;

#[derive(Debug)]
pub struct Downstream {
    instances: moka::sync::Cache<String, Value>,
}

impl Default for Downstream {
    fn default() -> Self {
        Downstream {
            instances: moka::sync::Cache::builder()
                .max_capacity(MAX_INSTANCES)
                .time_to_live(FORGET_AFTER)
                .build(),
        }
    }
}

/// The fields of Unleash Edge's instance data that are kept. Edge writes them in camelCase;
/// the snake_case spellings are read too.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reported {
    identifier: String,
    #[serde(alias = "app_name")]
    app_name: Option<String>,
    region: Option<String>,
    #[serde(alias = "edge_version")]
    edge_version: Option<String>,
    started: Option<String>,
    #[serde(alias = "connected_streaming_clients")]
    connected_streaming_clients: Option<u64>,
    #[serde(default, alias = "connected_edges")]
    connected_edges: Vec<serde::de::IgnoredAny>,
}

fn cut(s: &str) -> &str {
    if s.len() <= MAX_TEXT {
        return s;
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or("")
}

impl Downstream {
    /// Records a report made with a token of `environment`.
    pub fn record(&self, body: &[u8], environment: &str) -> Result<(), String> {
        let r: Reported = serde_json::from_slice(body).map_err(|e| e.to_string())?;
        let identifier = r.identifier.trim();
        if identifier.is_empty() {
            return Err("`identifier` is empty".into());
        }
        let text = |v: &Option<String>| v.as_deref().map(cut).map(str::to_string);
        let entry = json!({
            "identifier": cut(identifier),
            "app_name": text(&r.app_name),
            "region": text(&r.region),
            "edge_version": text(&r.edge_version),
            "started": text(&r.started),
            "connected_streaming_clients": r.connected_streaming_clients,
            "connected_edges": r.connected_edges.len(),
            "environment": cut(environment),
            "last_report": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        });
        self.instances.insert(cut(identifier).to_string(), entry);
        Ok(())
    }

    /// The instances reported recently in Unleash Edge's own shape (camelCase), to forward
    /// upstream as `connectedEdges`; what was not kept is left out.
    pub fn as_edge_reports(&self) -> Vec<Value> {
        self.list()
            .into_iter()
            .map(|v| {
                let field = |k: &str| v.get(k).cloned().unwrap_or(Value::Null);
                json!({
                    "identifier": field("identifier"),
                    "appName": field("app_name"),
                    "region": field("region"),
                    "edgeVersion": field("edge_version"),
                    "started": field("started"),
                    "connectedStreamingClients": field("connected_streaming_clients"),
                    "connectedEdges": [],
                })
            })
            .collect()
    }

    /// The instances reported recently, by identifier.
    pub fn list(&self) -> Vec<Value> {
        let mut all: Vec<(String, Value)> = self
            .instances
            .iter()
            .map(|(k, v)| (k.as_ref().clone(), v))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.into_iter().map(|(_, v)| v).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_kept_bounded_and_listed_by_identifier() {
        let d = Downstream::default();
        let long = "x".repeat(10_000);
        // Edge's own camelCase shape (as Edge 20.1 sends it), and the snake_case spelling.
        let body = json!({"identifier": "edge-b", "appName": long, "edgeVersion": "20.1.0",
            "connectedEdges": [{}, {}], "processMetrics": {"cpu": 1}, "unknown": true,
            "traffic": {"get": {}}, "connectedStreamingClients": 3});
        d.record(body.to_string().as_bytes(), "production").unwrap();
        d.record(
            br#"{"identifier":"edge-a","app_name":"snake"}"#,
            "development",
        )
        .unwrap();
        let list = d.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["identifier"], "edge-a");
        assert_eq!(list[1]["app_name"].as_str().unwrap().len(), MAX_TEXT);
        assert_eq!(list[1]["connected_edges"], 2);
        assert_eq!(list[1]["edge_version"], "20.1.0");
        assert_eq!(list[1]["connected_streaming_clients"], 3);
        assert_eq!(list[0]["app_name"], "snake");
        let reports = d.as_edge_reports();
        assert_eq!(reports[1]["edgeVersion"], "20.1.0");
        assert_eq!(reports[1]["connectedEdges"], json!([]));
        assert_eq!(list[1]["environment"], "production");
        assert!(d.record(b"{}", "development").is_err());
        assert!(d.record(br#"{"identifier":" "}"#, "development").is_err());
        assert!(d.record(b"not json", "development").is_err());
    }
}
