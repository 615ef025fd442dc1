//! The operator's surface under `/internal-backstage/`: `explain` (why a token is served or
//! refused, for whoever holds it), and Unleash Edge's inspection endpoints in Edge's shapes
//! (PROTOCOL.md §7), served only with the configured `backstage.token`. Tokens are always shown
//! redacted.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::*;
use crate::token::{Scope, Token};

fn scope_json(scope: &Scope) -> Value {
    json!({ "environment": scope.environment, "projects": scope.projects.names() })
}

fn redacted(raw: &str) -> String {
    Token::parse(raw).map_or_else(|_| "<not a token>".into(), |t| t.redacted())
}

fn iso(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn json_ok(value: &Value) -> HttpResponse {
    let mut r = Response::new(Reply::full(value.to_string()));
    r.headers_mut().insert(CONTENT_TYPE, JSON);
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `POST /internal-backstage/explain`: the token in `Authorization`, as flagpost resolved it,
/// which startup tokens cover it or what is missing, and what it would be served.
pub(super) async fn explain(app: &App, req: Request<Incoming>) -> Result<HttpResponse, ApiError> {
    let header = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    let shown = header
        .and_then(|h| std::str::from_utf8(h).ok())
        .map(|h| redacted(h.trim().trim_start_matches("Bearer ").trim()));
    let (resolved, source) = app.auth.explain(header).await;
    let access = match resolved {
        Ok(access) => access,
        Err(e) => {
            let refusal = ApiError::Auth(e);
            return Ok(json_ok(&json!({
                "token": shown,
                "valid": false,
                "source": source,
                "answer": answer_json(&refusal),
            })));
        }
    };
    let startup = app.startup_tokens();
    let in_env: Vec<_> = startup
        .iter()
        .filter(|s| s.live && s.scope.environment == access.scope.environment)
        .collect();
    let covered_by: Vec<String> = in_env
        .iter()
        .filter(
            |s| match &s.scope.projects.intersect(&access.scope.projects) {
                Projects::All => true,
                Projects::Some(set) => !set.is_empty(),
            },
        )
        .map(|s| s.token.redacted())
        .collect();
    let api = match access.kind {
        TokenKind::Client => "/api/client/features",
        TokenKind::Frontend => "/api/frontend",
    };
    let mut body = json!({
        "token": access.token.redacted(),
        "valid": true,
        "kind": access.kind.as_str(),
        "scope": scope_json(&access.scope),
        "source": source,
        "serving": {
            "environment": access.scope.environment,
            "projects": app.store.serving(&access.scope.environment).as_ref().map(|p| p.names()),
            "startup_tokens": in_env.iter().map(|s| json!({
                "token": s.token.redacted(),
                "projects": s.scope.projects.names(),
            })).collect::<Vec<_>>(),
        },
        "covered_by": covered_by,
        "api": api,
    });
    if let (Value::Object(body), Value::Object(verdict)) = (&mut body, gate_verdict(app, &access)) {
        body.extend(verdict);
    }
    Ok(json_ok(&body))
}

/// Whether the gate admits the token's scope (or what it misses), how many flags it would be
/// served, and the answer it would get.
fn gate_verdict(app: &App, access: &crate::auth::Access) -> Value {
    let gate = app.store.admit(&access.scope);
    let (covered, missing) = match &gate {
        Ok(_) | Err(GateError::NotReady { .. }) => (true, Value::Null),
        Err(GateError::NotCovered {
            environment,
            missing,
        }) => (
            false,
            json!({ "environment": environment, "projects": missing }),
        ),
    };
    let served = match &gate {
        Ok(Some(snapshot)) => json!(snapshot
            .features()
            .iter()
            .filter(|f| access.scope.projects.contains(&f.project))
            .count()),
        _ => Value::Null,
    };
    let answer = match gate {
        Ok(Some(_)) => json!({ "status": 200 }),
        Ok(None) => answer_json(&ApiError::Gate(GateError::NotReady {
            environment: access.scope.environment.clone(),
        })),
        Err(e) => answer_json(&ApiError::Gate(e)),
    };
    json!({
        "covered": covered,
        "missing": missing,
        "features_served": served,
        "answer": answer,
    })
}

fn answer_json(e: &ApiError) -> Value {
    let response = e.clone().into_response();
    let status = response.status().as_u16();
    json!({ "status": status, "error": e.code(), "message": e.message() })
}

/// Opens a backstage endpoint: served only with `backstage.token`, and unless turned off.
fn open(app: &App, headers: &HeaderMap, enabled: bool, name: &str) -> Result<(), ApiError> {
    let settings = &app.config.backstage;
    let Some(secret) = settings.token.as_ref().filter(|_| enabled) else {
        return Err(ApiError::NotFound(format!(
            "/internal-backstage/{name} is not served: it needs backstage.token (and is not turned off)."
        )));
    };
    let given = headers
        .get(http::header::AUTHORIZATION)
        .map(HeaderValue::as_bytes)
        .map(|h| h.strip_prefix(b"Bearer ").unwrap_or(h));
    match given {
        None => Err(ApiError::Backstage { missing: true }),
        Some(g) if secret.ct_eq(g) => Ok(()),
        Some(_) => Err(ApiError::Backstage { missing: false }),
    }
}

/// The four inspection endpoints.
pub(super) fn inspect(
    app: &App,
    route: Route,
    headers: &HeaderMap,
) -> Result<HttpResponse, ApiError> {
    let b = &app.config.backstage;
    match route {
        Route::BackstageTokens => {
            open(app, headers, b.tokens, "tokens")?;
            Ok(json_ok(&tokens(app)))
        }
        Route::BackstageFeatures => {
            open(app, headers, b.features, "features")?;
            Ok(features(app))
        }
        Route::BackstageMetricsBatch => {
            open(app, headers, b.metrics_batch, "metricsbatch")?;
            Ok(json_ok(&app.usage.peek()))
        }
        _ => {
            open(app, headers, b.instance_data, "instancedata")?;
            Ok(json_ok(&instance_data(app)))
        }
    }
}

/// Edge's `{"tokenRefreshes":[…],"tokenValidationStatus":[…],"invalidTokenCount":n}`.
fn tokens(app: &App) -> Value {
    let refreshes: Vec<Value> = app
        .startup_tokens()
        .into_iter()
        .map(|s| {
            let next = s
                .last_success
                .filter(|_| s.polled && !s.interval.is_zero())
                .map(|t| iso(t + s.interval));
            json!({
                "token": s.token.redacted(),
                "environment": s.scope.environment,
                "projects": s.scope.projects.names(),
                "status": if s.live { "Validated" } else { "Refused" },
                "polled": s.polled,
                "etag": s.etag,
                "next_refresh": next,
                "last_refreshed": s.last_success.map(iso),
                "last_check": s.last_success.map(iso),
                "last_feature_count": s.features,
                "revision_id": s.revision,
                "failure_count": s.failures,
            })
        })
        .collect();
    let known = app.auth.known_tokens();
    let invalid = known.iter().filter(|(_, v)| v.is_none()).count();
    let statuses: Vec<Value> = known
        .iter()
        .map(|(raw, verdict)| match verdict {
            Some((kind, scope)) => json!({
                "token": redacted(raw),
                "token_type": kind.as_str(),
                "environment": scope.environment,
                "projects": scope.projects.names(),
                "status": "Validated",
            }),
            None => json!({ "token": redacted(raw), "status": "Invalid" }),
        })
        .collect();
    json!({
        "tokenRefreshes": refreshes,
        "tokenValidationStatus": statuses,
        "invalidTokenCount": invalid,
    })
}

/// Edge's `{"<environment>": <Client API body>}`, every project.
fn features(app: &App) -> HttpResponse {
    let mut out = String::from("{");
    let mut envs = app.store.environments();
    envs.sort();
    let mut first = true;
    for env in envs {
        let Some(snapshot) = app.store.snapshot(&env) else {
            continue;
        };
        if !first {
            out.push(',');
        }
        first = false;
        crate::json::push_str(&mut out, &env);
        out.push(':');
        let body = snapshot.client_body(&Projects::All, None);
        out.push_str(std::str::from_utf8(&body.bytes).unwrap_or("null"));
    }
    out.push('}');
    let mut r = Response::new(Reply::full(out));
    r.headers_mut().insert(CONTENT_TYPE, JSON);
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Edge's `{"this_instance":{…},"connected_instances":[…]}`.
fn instance_data(app: &App) -> Value {
    let environments: Vec<Value> = {
        let mut envs = app.store.environments();
        envs.sort();
        envs.into_iter()
            .map(|env| {
                let snapshot = app.store.snapshot(&env);
                json!({
                    "environment": env,
                    "features": snapshot.as_ref().map(|s| s.features().len()),
                    "revision": snapshot.as_ref().map(|s| s.revision()),
                    "loaded_at": snapshot.as_ref().map(|s| iso(s.built_at())),
                })
            })
            .collect()
    };
    json!({
        "this_instance": {
            "identifier": app.config.instance_id,
            "app_name": app.config.app_name,
            "edge_version": concat!("flagpost ", env!("CARGO_PKG_VERSION")),
            "mode": app.config.mode.name(),
            "started": iso(app.started),
            "ready": app.check_readiness().is_ok(),
            "fleet_role": app.fleet_role(),
            "connected_streaming_clients": app.streams.open(),
            "environments": environments,
        },
        "connected_instances": app.downstream.list(),
    })
}

/// `POST /api/client/metrics/edge`: a downstream Unleash Edge (or flagpost) reports its
/// instance data with a client token. Kept bounded (see [`crate::server::downstream`]) and
/// shown as `connected_instances` in `/internal-backstage/instancedata`. 202, as Edge answers.
pub(super) async fn downstream_instance(
    app: &App,
    req: http::Request<hyper::body::Incoming>,
) -> Result<HttpResponse, ApiError> {
    let (access, _) = super::admit(app, req.headers(), crate::token::TokenKind::Client).await?;
    let (parts, incoming) = req.into_parts();
    let bytes = super::read_body(
        app,
        &parts.headers,
        incoming,
        app.config.server.max_metrics_body_size,
    )
    .await?;
    app.downstream
        .record(&bytes, &access.scope.environment)
        .map_err(|e| ApiError::BadRequest(format!("Bad instance data: {e}.")))?;
    let mut r = http::Response::new(super::super::body::Reply::empty());
    *r.status_mut() = http::StatusCode::ACCEPTED;
    Ok(r)
}
