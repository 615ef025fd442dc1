//! flagpost's own instance data, sent upstream to `POST /api/client/metrics/edge` every usage
//! interval with the first startup token, in Unleash Edge's shape, with the downstream
//! instances that reported to this flagpost as `connectedEdges` (what [`Downstream`] kept of
//! them). The Unleash servers that do not take it (the open-source one answers 404) or refuse
//! the token are asked again only after an hour, as Edge backs off; one line says so.
//!
//! [`Downstream`]: crate::server::downstream::Downstream

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::server::App;
use crate::token::Token;
use crate::upstream::{Upstream, UpstreamError};

/// How long an upstream that does not take instance data is left alone.
const NOT_TAKEN_PAUSE: Duration = Duration::from_secs(3600);

/// The report, in Unleash Edge's `EdgeInstanceData` shape (camelCase, as Edge 20 sends it).
pub fn report(app: &App) -> Value {
    let started = chrono::DateTime::<chrono::Utc>::from(app.started)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let zero = json!({"avg": 0.0, "count": 0.0, "p99": 0.0});
    json!({
        "identifier": app.config.instance_id,
        "appName": app.config.app_name,
        "region": std::env::var("AWS_REGION").ok(),
        "edgeVersion": concat!("flagpost ", env!("CARGO_PKG_VERSION")),
        "processMetrics": null,
        "started": started,
        "traffic": {"get": {}, "post": {}, "access_denied": {}, "cached_responses": {}},
        "latencyUpstream": {"features": zero, "metrics": zero, "edge": zero},
        "connectedStreamingClients": app.streams.open(),
        "connectedEdges": app.downstream.as_edge_reports(),
    })
}

/// Sends the report every `interval` until `cancel`.
pub async fn run(
    app: Arc<App>,
    upstream: Arc<Upstream>,
    token: Token,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut failing = false;
    let mut wait = interval;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let body = report(&app).to_string().into_bytes();
        let sent = upstream.post_json(
            "instance_data",
            "/api/client/metrics/edge",
            &token,
            body,
            &app.metrics,
        );
        wait = interval;
        match sent.await {
            Ok(()) => {
                if failing {
                    tracing::info!("instance data is taken upstream again");
                }
                failing = false;
            }
            Err(e @ (UpstreamError::Status(404) | UpstreamError::Refused(_))) => {
                tracing::info!(error = %e, "upstream does not take flagpost's instance data (the open-source Unleash server has no /api/client/metrics/edge); asking again in an hour");
                failing = false;
                wait = NOT_TAKEN_PAUSE;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "cannot send instance data upstream; trying again every interval (logged again when it works)");
                }
                failing = true;
            }
        }
    }
}
