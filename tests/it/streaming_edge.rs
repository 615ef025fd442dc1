//! Streams in edge mode: upstream's changes streamed with its revision ids and revoked
//! tokens' streams closed, a chained flagpost following the upstream stream (and polling when
//! it cannot), a stream ending when its scope is no longer served.

use std::time::{Duration, Instant};

use crate::edge::{edge_config, start_edge};
use crate::harness::*;
use crate::streaming::*;
use crate::upstream::{secret, FakeUpstream};
use serde_json::json;

#[tokio::test]
async fn edge_mode_streams_upstream_changes_with_its_revision_ids_and_closes_revoked_tokens() {
    let up = FakeUpstream::start().await;
    let s = start_edge(
        &up,
        &["client-all-dev"],
        "token_revalidation_interval = \"200ms\"",
    )
    .await;
    s.wait_ready().await;
    let token = secret("client-default-dev");
    let mut stream = Sse::open(&s.url("/api/client/streaming"), &token, None).await;
    let first = stream.next().await;
    // The upstream's meta.revisionId is the event id.
    let revision = up.state.lock().unwrap().revision;
    assert_eq!(first.id, Some(revision.to_string()));
    up.set_enabled("development", "simple.on", false);
    let update = stream.next().await;
    assert_eq!(summary(&update), ["feature-updated simple.on"]);
    assert_eq!(update.id, Some((revision + 1).to_string()));
    // A change outside the token's projects is not sent to it.
    up.set_enabled("development", "checkout.new-flow", false);
    up.set_enabled("development", "simple.off", true);
    assert_eq!(
        summary(&stream.next().await),
        ["feature-updated simple.off"]
    );
    up.revoke(&token);
    assert!(
        stream.ended().await,
        "the revoked token's stream was closed"
    );
    assert_eq!(
        metric(&s, "flagpost_streams_closed_total{reason=\"revoked\"}").await,
        Some(1.0)
    );
}

#[tokio::test]
async fn a_chained_flagpost_follows_the_upstream_stream_and_falls_back_to_polling() {
    let up = FakeUpstream::start().await;
    let top = start_edge(&up, &["client-all-dev"], "").await;
    top.wait_ready().await;
    let tokens = vec![secret("client-all-dev")];
    let config = edge_config(
        &top.url(""),
        &tokens,
        "streaming = true\nrefresh_interval = \"30s\"",
    );
    let middle = Server::start(&config, &[]).await;
    middle.wait_ready().await;
    eventually("the middle follows the top's stream", || async {
        metric(&top, "flagpost_streams_open").await == Some(1.0)
    })
    .await;
    let mut sdk = Sse::open(&middle.url("/api/client/streaming"), &tokens[0], None).await;
    let first = sdk.next().await;
    // The top's ids go down the chain.
    let top_first = Sse::open(&top.url("/api/client/streaming"), &tokens[0], None)
        .await
        .next()
        .await;
    assert_eq!(first.id, top_first.id);
    let changed = Instant::now();
    up.set_enabled("development", "simple.on", false);
    let update = sdk.next().await;
    eprintln!(
        "change upstream to the bottom stream: {:?}",
        changed.elapsed()
    );
    assert_eq!(summary(&update), ["feature-updated simple.on"]);
    // With a 30 s poll interval, only the stream can have brought it this fast.
    assert!(changed.elapsed() < Duration::from_secs(5));
    assert!(
        metric(&middle, "flagpost_upstream_stream_events_total")
            .await
            .unwrap()
            >= 2.0
    );

    // In front of an upstream that does not stream (404), --streaming polls instead.
    let config = edge_config(&up.url(), &tokens, "streaming = true");
    let direct = Server::start(&config, &[]).await;
    direct.wait_ready().await;
    assert!(up
        .requests_to("/api/client/streaming")
        .iter()
        .all(|r| r.header("unleash-sdk-type") == Some("edge")));
    let before = up.requests_to("/api/client/features").len();
    eventually("polls after the fallback", || async {
        up.requests_to("/api/client/features").len() > before + 2
    })
    .await;
    assert_eq!(
        json!(up.requests_to("/api/client/streaming").len()),
        json!(1),
        "a 404 is not retried at once"
    );
}

#[tokio::test]
async fn a_stream_ends_when_its_scope_is_no_longer_served() {
    let up = FakeUpstream::start().await;
    let s = start_edge(&up, &["client-all-dev"], "").await;
    s.wait_ready().await;
    let mut stream = Sse::open(
        &s.url("/api/client/streaming"),
        &secret("client-default-dev"),
        None,
    )
    .await;
    stream.next().await;
    // The only startup token of the environment is refused upstream: nothing is served there.
    up.revoke(&secret("client-all-dev"));
    assert!(stream.ended().await);
    assert_eq!(
        metric(&s, "flagpost_streams_closed_total{reason=\"scope\"}").await,
        Some(1.0)
    );
}
