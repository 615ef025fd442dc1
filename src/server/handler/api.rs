//! The API handlers: usage and registrations, the Client API, the Frontend API, and
//! `/edge/validate`. Each goes through the parent module's one gate.

use super::*;

/// SDK usage metrics and registrations: validated, then aggregated; 202.
pub(super) async fn usage_api(
    app: &App,
    route: Route,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    use crate::usage::{body, Source};
    let (kind, source) = match route {
        Route::FrontendMetrics | Route::FrontendRegister => (TokenKind::Frontend, Source::Frontend),
        Route::ClientBulkMetrics => (TokenKind::Client, Source::Bulk),
        _ => (TokenKind::Client, Source::Client),
    };
    let (access, _) = admit(app, req.headers(), kind).await?;
    let (parts, incoming) = req.into_parts();
    let bytes = read_body(
        app,
        &parts.headers,
        incoming,
        app.config.server.max_metrics_body_size,
    )
    .await?;
    let bad = |e: body::BodyError| ApiError::BadRequest(format!("Bad usage body: {e}."));
    let env = access.scope.environment.as_str();
    let snapshot = app.store.snapshot(env);
    let known = |flag: &str| snapshot.as_ref().is_some_and(|s| s.feature(flag).is_some());
    match route {
        Route::ClientMetrics | Route::FrontendMetrics => {
            let rows = body::metrics(&bytes).map_err(bad)?;
            app.usage.record(env, source, rows, known);
        }
        Route::ClientBulkMetrics => {
            let (registrations, rows) = body::bulk(&bytes).map_err(bad)?;
            app.usage.record(env, source, rows, known);
            for r in registrations {
                app.usage.register(env, &access.scope.projects, source, r);
            }
        }
        _ => {
            let registration = body::registration(&bytes).map_err(bad)?;
            app.usage
                .register(env, &access.scope.projects, source, registration);
        }
    }
    let mut r = Response::new(Reply::empty());
    *r.status_mut() = StatusCode::ACCEPTED;
    Ok(r)
}

pub(super) async fn client_api(
    app: &App,
    matched: Matched,
    req: Request<Incoming>,
) -> Result<HttpResponse, ApiError> {
    let (access, snapshot) = admit_loaded(app, req.headers(), TokenKind::Client).await?;
    if let Some(name) = matched.name {
        let feature = snapshot
            .feature(&name)
            .filter(|f| access.scope.projects.contains(&f.project))
            .ok_or_else(|| ApiError::NotFound(format!("Could not find feature flag {name:?}.")))?;
        let body = feature.raw_json().as_bytes().to_vec();
        return Ok(conditional(req.headers(), body, false));
    }
    let filter = client_filter(&access, req.uri().query())?;
    let (parts, incoming) = req.into_parts();
    if parts.method == Method::POST {
        // Unleash Edge's POST is its GET: the body is read within the bound and not used.
        read_body(
            app,
            &parts.headers,
            incoming,
            app.config.server.max_body_size,
        )
        .await?;
    }
    let req = Request::from_parts(parts, ());
    let body = snapshot.client_body(&filter.projects, filter.name_prefix.as_deref());
    let mut r = if etag_matches(req.headers(), &body.etag) {
        not_modified(&body.etag, false)
    } else {
        let mut r = Response::new(Reply::full(body.bytes.clone()));
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, JSON);
        insert_etag(h, &body.etag);
        r
    };
    if app.streams.settings().advertise {
        // Polling SDKs that stream switch to /api/client/streaming.
        r.headers_mut()
            .insert(FETCH_MODE, HeaderValue::from_static("streaming"));
    }
    Ok(r)
}

const FETCH_MODE: http::HeaderName = http::HeaderName::from_static("fetch-mode");

/// The filter of a Client API request: the token's projects, narrowed by `project` (repeated,
/// comma-separated or `project[]`), and `namePrefix`.
pub(super) fn client_filter(access: &Access, query: Option<&str>) -> Result<Filter, ApiError> {
    let mut name_prefix = None;
    let mut asked: Option<Projects> = None;
    let pairs = evaluate::query_pairs(query.unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    for (key, value) in pairs {
        match key.as_str() {
            "namePrefix" if !value.is_empty() => name_prefix = Some(value),
            "project" | "project[]" => {
                let names =
                    Projects::from_names(value.split(',').map(str::trim).filter(|p| !p.is_empty()));
                match &mut asked {
                    Some(p) => p.extend(&names),
                    None => asked = Some(names),
                }
            }
            _ => {}
        }
    }
    let projects = match asked {
        Some(asked) => access.scope.projects.intersect(&asked),
        None => access.scope.projects.clone(),
    };
    Ok(Filter::new(projects, name_prefix))
}

pub(super) async fn frontend_api(
    app: &App,
    matched: Matched,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<HttpResponse, ApiError> {
    let (access, snapshot) = admit_loaded(app, req.headers(), TokenKind::Frontend).await?;
    let (parts, body) = req.into_parts();
    let mut context = frontend_context(app, &parts, body, &access, peer).await?;
    // A repeated conditional poll whose answer cannot have changed: 304 from the remembered
    // stable part and the flags chance decides (usually none), nothing else evaluated. Keyed
    // before the server sets the time (a client's is part of the key).
    let listing = match matched.route {
        Route::FrontendAll => Some(Listing::All),
        Route::Frontend => Some(Listing::Enabled),
        _ => None,
    };
    let instant = chrono::Utc::now();
    let Some(listing) = listing else {
        let name = matched.name.unwrap_or_default();
        return one_flag(&snapshot, &access, &name, context, instant, &parts.headers);
    };
    let view = snapshot.frontend();
    let clock = evaluate::Clock::of(&context);
    let now = instant.timestamp_millis();
    let projects = &access.scope.projects;
    let memo_key = app.etags.enabled().then(|| {
        evaluate::Memo::key(
            (&access.scope.environment, snapshot.revision()),
            projects,
            listing,
            &context,
        )
    });
    // The clock read once for the whole request: every date constraint sees the same instant,
    // the one the memo's validity is reckoned from.
    evaluate::fix_current_time_at(&mut context, instant);
    let parts_of = (view, snapshot.document());
    let remembered = memo_key
        .filter(|_| parts.headers.contains_key(IF_NONE_MATCH))
        .and_then(|key| app.etags.get(key, now));
    if let Some(stable) = remembered {
        let chance = evaluate::chance_part(parts_of, projects, &context, clock, listing);
        let etag = etag_value(evaluate::etag_of_parts(stable, chance));
        if etag_matches(&parts.headers, &etag) {
            let how = if view.volatility().by_chance(projects, &context, clock) {
                "spliced"
            } else {
                "remembered"
            };
            app.metrics
                .frontend_conditional
                .with_label_values(&[how])
                .inc();
            super::trace::note("flagpost.answer", how);
            return Ok(not_modified(&etag, true));
        }
    }
    let answer = evaluate::frontend_answer(parts_of, projects, &context, clock, listing);
    super::trace::note("flagpost.answer", "evaluated");
    if let Some(key) = memo_key {
        // Right until the clock passes the next date a constraint names (unless the client
        // fixed the time itself).
        let until = if clock == evaluate::Clock::Given {
            i64::MAX
        } else {
            view.volatility().stable_until(now)
        };
        app.etags.put(key, answer.stable, until);
        app.metrics
            .frontend_conditional
            .with_label_values(&["evaluated"])
            .inc();
    }
    let etag = etag_value(answer.etag());
    Ok(conditional_tagged(&parts.headers, answer.body, etag, true))
}

/// `POST /edge/validate` (`{"tokens":[...]}`): the tokens flagpost itself would serve, with
/// their type, environment and projects. Tokens outside its serving scope are left out, as
/// unknown ones are.
pub(super) async fn edge_validate(
    app: &App,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<HttpResponse, ApiError> {
    #[derive(serde::Deserialize)]
    struct Body {
        tokens: Vec<String>,
    }
    let (parts, body) = req.into_parts();
    let bytes = read_body(
        app,
        &parts.headers,
        body,
        app.config.server.max_metrics_body_size,
    )
    .await?;
    let asked: Body = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::BadRequest(format!("Expected {{\"tokens\": [\"<token>\", ...]}}: {e}."))
    })?;
    if asked.tokens.len() > MAX_VALIDATE_TOKENS {
        return Err(ApiError::BadRequest(format!(
            "At most {MAX_VALIDATE_TOKENS} tokens per request."
        )));
    }
    // Parsed lazily: a caller over its budget is refused before the rest is looked at.
    let mut seen = std::collections::HashSet::new();
    let tokens = asked.tokens.into_iter().filter_map(move |t: String| {
        let token = crate::token::Token::parse(&t).ok()?;
        seen.insert(t).then_some(token)
    });
    let caller = client_ip::client_ip(
        peer.ip(),
        &parts.headers,
        &app.config.server.trusted_proxies,
    );
    let results =
        app.auth
            .resolve_many(tokens, caller)
            .await
            .map_err(|o| ApiError::OverBudget {
                budget: o.budget,
                retry_after: o.retry_after,
            })?;
    // Not a hot path: serde writes it, in the shape Unleash's /edge/validate answers.
    let tokens: Vec<crate::upstream::ValidatedToken> = results
        .into_iter()
        .flatten()
        .filter(|access| app.store.check(&access.scope).is_ok())
        .map(|access| crate::upstream::ValidatedToken {
            token: access.token.expose().to_string(),
            kind: match access.kind {
                TokenKind::Client => crate::upstream::UpstreamKind::Client,
                TokenKind::Frontend => crate::upstream::UpstreamKind::Frontend,
            },
            projects: access.scope.projects.names(),
            environment: access.scope.environment.clone(),
        })
        .collect();
    #[derive(serde::Serialize)]
    struct Answer {
        tokens: Vec<crate::upstream::ValidatedToken>,
    }
    // Strings in vectors: serde_json cannot fail on them.
    let out = serde_json::to_vec(&Answer { tokens }).unwrap_or_default();
    let mut r = Response::new(Reply::full(Bytes::from(out)));
    r.headers_mut().insert(CONTENT_TYPE, JSON);
    Ok(r)
}

/// Most tokens one `/edge/validate` request may ask about.
pub const MAX_VALIDATE_TOKENS: usize = 1000;

/// The Frontend API context: from the body of a POST (or its query when the body is empty),
/// the query of a GET; the token's environment and the client's address when it gives none.
async fn frontend_context(
    app: &App,
    parts: &http::request::Parts,
    body: Incoming,
    access: &Access,
    peer: SocketAddr,
) -> Result<unleash_types::client_features::Context, ApiError> {
    let mut context = if parts.method == Method::POST {
        let bytes = read_body(app, &parts.headers, body, app.config.server.max_body_size).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            evaluate::context_from_query(parts.uri.query().unwrap_or(""))
        } else {
            evaluate::context_from_json(&bytes)
        }
    } else {
        evaluate::context_from_query(parts.uri.query().unwrap_or(""))
    }
    .map_err(|e| ApiError::BadRequest(format!("Bad context: {e}.")))?;
    if context.environment.is_none() {
        context.environment = Some(access.scope.environment.clone());
    }
    super::trace::note_context(app, &context);
    if context.remote_address.is_none() {
        let ip = client_ip::client_ip(
            peer.ip(),
            &parts.headers,
            &app.config.server.trusted_proxies,
        );
        context.remote_address = Some(ip.to_string());
    }
    Ok(context)
}

/// `GET /api/frontend/features/{name}`: the one flag, when it is enabled for the context.
fn one_flag(
    snapshot: &Snapshot,
    access: &Access,
    name: &str,
    mut context: unleash_types::client_features::Context,
    instant: chrono::DateTime<chrono::Utc>,
    headers: &HeaderMap,
) -> Result<HttpResponse, ApiError> {
    evaluate::fix_current_time_at(&mut context, instant);
    let missing = || {
        ApiError::NotFound(format!(
            "Feature flag {name:?} is not enabled or does not exist."
        ))
    };
    let engine = snapshot.frontend().engine();
    let (index, feature) = engine
        .index_of(name)
        .and_then(|i| Some((i, snapshot.features().get(i)?)))
        .filter(|(_, f)| access.scope.projects.contains(&f.project))
        .ok_or_else(missing)?;
    let result = engine.evaluate_at(index, &context);
    if !result.feature_enabled {
        return Err(missing());
    }
    let mut out = String::with_capacity(256);
    evaluate::write_toggle(&mut out, &feature.name, feature.impression_data, &result);
    Ok(conditional(headers, out.into_bytes(), true))
}
