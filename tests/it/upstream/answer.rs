//! How the fake answers a request: the script first, then the scripted misbehaviour, then
//! each endpoint as the Unleash server does (messages and statuses from the captures).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::{json_response, Behaviour, FakeToken, Recorded, Scripted, State};

const NO_TOKEN: &str = "This endpoint requires an API token. Please add an authorization header to your request with a valid token";
const WRONG_TYPE: &str = "invalid token: expected a different token type for this endpoint";

fn message(status: u16, text: &str) -> Response<Full<Bytes>> {
    json_response(status, json!({ "message": text }))
}

pub(super) async fn answer(
    state: Arc<Mutex<State>>,
    req: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let (behaviour, only_features, script) = {
        let mut s = state.lock().unwrap();
        s.requests.push(Recorded {
            method: parts.method.to_string(),
            path: path.clone(),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
        (s.behaviour.clone(), s.only_features, s.script.clone())
    };
    match script.and_then(|script| (script.0)(&parts, &body)) {
        Some(Scripted::Respond(r)) => return r,
        Some(Scripted::Hang) => std::future::pending::<()>().await,
        None => {}
    }
    let is_features = parts.uri.path() == "/api/client/features";
    if is_features || !only_features {
        if let Some(r) = misbehave(behaviour, is_features).await {
            return r;
        }
    }
    let auth = parts
        .headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).to_string());
    let token = {
        let s = state.lock().unwrap();
        auth.as_ref()
            .and_then(|a| s.tokens.iter().find(|t| &t.secret == a))
            .cloned()
    };
    match (parts.method.as_str(), parts.uri.path()) {
        ("POST", "/edge/validate") => validate(&state.lock().unwrap(), token, &parts, &body),
        ("GET", "/api/client/features") => {
            let Some(t) = token else {
                return message(401, NO_TOKEN);
            };
            if t.kind != "client" {
                return message(403, WRONG_TYPE);
            }
            features(&state.lock().unwrap(), &t, &parts)
        }
        ("POST", "/api/client/register")
        | ("POST", "/api/client/metrics")
        | ("POST", "/api/client/metrics/bulk") => {
            let Some(t) = token else {
                return message(401, NO_TOKEN);
            };
            if t.kind != "client" {
                return message(403, WRONG_TYPE);
            }
            intake(&mut state.lock().unwrap(), parts.uri.path())
        }
        _ => message(
            404,
            &format!(
                "The path you were looking for ({}) is not available.",
                parts.uri.path()
            ),
        ),
    }
}

/// The scripted misbehaviour: a delay before answering, or an answer instead of the real one.
async fn misbehave(behaviour: Behaviour, is_features: bool) -> Option<Response<Full<Bytes>>> {
    match behaviour {
        Behaviour::Slow(d) => tokio::time::sleep(d).await,
        Behaviour::Status(code) => return Some(message(code, "scripted failure")),
        Behaviour::Garbage if is_features => {
            let mut r = Response::new(Full::new(Bytes::from_static(
                b"{\"version\":2,\"features\":[{\"name\":",
            )));
            r.headers_mut().insert(
                "content-type",
                "application/json; charset=utf-8".parse().unwrap(),
            );
            return Some(r);
        }
        _ => {}
    }
    None
}

/// `POST /edge/validate`: the known tokens among those asked about (a client or frontend
/// token may not ask).
fn validate(
    s: &State,
    token: Option<FakeToken>,
    parts: &Parts,
    body: &[u8],
) -> Response<Full<Bytes>> {
    if matches!(&token, Some(t) if t.kind == "client" || t.kind == "frontend") {
        return message(403, WRONG_TYPE);
    }
    let ok_type = parts
        .headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !ok_type {
        return message(415, "We do not accept the content-type you provided");
    }
    let Ok(asked) = serde_json::from_slice::<Value>(body) else {
        return message(400, "Request validation failed");
    };
    let Some(list) = asked["tokens"].as_array() else {
        return message(
            400,
            "Request validation failed: your request body or params contain invalid data.",
        );
    };
    let known: Vec<Value> = list
        .iter()
        .filter_map(|t| t.as_str())
        .filter_map(|t| s.tokens.iter().find(|k| k.secret == t))
        .map(|k| {
            json!({"token": k.secret, "type": k.kind, "projects": k.projects, "environment": k.environment})
        })
        .collect();
    json_response(200, json!({ "tokens": known }))
}

/// `GET /api/client/features` for client token `t`: its environment's features in its
/// projects, with the server's ETag (a 304 with no headers when it matches).
fn features(s: &State, t: &FakeToken, parts: &Parts) -> Response<Full<Bytes>> {
    let all = t.projects.iter().any(|p| p == "*");
    let features: Vec<Value> = s
        .features
        .get(&t.environment)
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| all || t.projects.iter().any(|p| f["project"] == p.as_str()))
        .collect();
    let query_hash = format!(
        "{:08x}",
        fxhash(&format!("{}:{:?}", t.environment, t.projects))
    );
    let etag = format!("\"{query_hash}:{}:v1\"", s.revision);
    let inm = parts
        .headers
        .get("if-none-match")
        .and_then(|v| v.to_str().ok());
    if inm == Some(etag.as_str()) {
        // Like the real server: a 304 with no headers at all.
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        return r;
    }
    let body = json!({
        "version": 2,
        "features": features,
        "segments": s.segments.get(&t.environment).cloned().unwrap_or_default(),
        "query": {"environment": t.environment, "inlineSegmentConstraints": false},
        "meta": {"revisionId": s.revision, "etag": etag, "queryHash": query_hash},
    });
    let mut r = json_response(200, body);
    r.headers_mut().insert("etag", etag.parse().unwrap());
    r.headers_mut()
        .insert("vary", "Accept-Encoding".parse().unwrap());
    r
}

/// Registrations and usage from a client token: 202, or for bulk usage the next scripted
/// status.
fn intake(s: &mut State, path: &str) -> Response<Full<Bytes>> {
    let status = if path == "/api/client/metrics/bulk" && !s.metrics_status.is_empty() {
        s.metrics_status.remove(0)
    } else {
        202
    };
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

fn fxhash(s: &str) -> u32 {
    s.bytes().fold(0x811c9dc5u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x01000193)
    })
}
