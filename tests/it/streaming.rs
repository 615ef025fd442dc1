//! Streaming and delta (PROTOCOL.md §6) with a real SSE client: what a stream starts with, the
//! changes each stream sees, resume, `/api/client/delta`, limits and when streams end (edge
//! mode and a chain following a stream: streaming_edge.rs).

use std::time::{Duration, Instant};

use flagpost::sse::{Event, Parser};
use serde_json::Value;

use crate::harness::*;
use crate::offline::{
    self, CLIENT_CHECKOUT_DEV, CLIENT_DEFAULT_DEV, FEATURES, FRONTEND_DEFAULT_DEV,
};

pub const HEARTBEAT: &[u8] = b": keep-alive\n\n";

/// An SSE client: one `GET`, events parsed as they arrive.
pub struct Sse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    response: reqwest::Response,
    parser: Parser,
    queued: std::collections::VecDeque<Event>,
    /// Heartbeat comments seen so far.
    pub heartbeats: usize,
}

impl Sse {
    pub async fn open(url: &str, token: &str, last_id: Option<&str>) -> Sse {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut req = client.get(url).header("Authorization", token);
        if let Some(id) = last_id {
            req = req.header("Last-Event-ID", id);
        }
        let response = req.send().await.unwrap();
        Sse {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            response,
            parser: Parser::new(16 << 20),
            queued: Default::default(),
            heartbeats: 0,
        }
    }

    /// The next event (heartbeats skipped); fails after 10 s or if the stream ends.
    pub async fn next(&mut self) -> Event {
        self.try_next(Duration::from_secs(10))
            .await
            .expect("an event within 10 s before the stream ended")
    }

    /// The next event within `wait`; `None` if the stream ended or nothing came.
    pub async fn try_next(&mut self, wait: Duration) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(e) = self.queued.pop_front() {
                return Some(e);
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .ok()?;
            match chunk {
                Ok(Some(bytes)) => {
                    self.heartbeats += bytes
                        .windows(HEARTBEAT.len())
                        .filter(|w| *w == HEARTBEAT)
                        .count();
                    self.queued.extend(self.parser.feed(&bytes).unwrap());
                }
                _ => return None,
            }
        }
    }

    /// Waits until the server ends the stream (events before the end are skipped).
    pub async fn ended(&mut self) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match tokio::time::timeout_at(deadline, self.response.chunk()).await {
                Err(_) => return false,
                Ok(Ok(Some(_))) => continue,
                Ok(_) => return true,
            }
        }
    }
}

/// The events of a frame, after checking that Unleash's own types read the frame (as SDKs
/// built on Unleash's engine do: an event id beyond `u32` makes them refuse all of it).
pub fn events(e: &Event) -> Vec<Value> {
    if let Err(err) =
        serde_json::from_str::<unleash_types::client_features::ClientFeaturesDelta>(&e.data)
    {
        panic!("Unleash's types refuse this frame ({err}): {}", e.data);
    }
    serde_json::from_str::<Value>(&e.data).unwrap()["events"]
        .as_array()
        .unwrap()
        .clone()
}

/// `type name` for each event, to compare with a list.
pub fn summary(e: &Event) -> Vec<String> {
    events(e)
        .iter()
        .map(|ev| {
            let name = ev["feature"]["name"]
                .as_str()
                .or(ev["featureName"].as_str())
                .unwrap_or("");
            format!("{} {name}", ev["type"].as_str().unwrap())
        })
        .collect()
}

pub async fn start_offline(extra: &str) -> Server {
    let config = offline::config("").replacen("[server]", &format!("{extra}\n[server]"), 1);
    let s = Server::start(&config, &[("features.json", FEATURES)]).await;
    s.wait_ready().await;
    s
}

/// The features file with `d.off` on and `d.users` moved to the checkout project.
pub fn changed_features() -> String {
    FEATURES
        .replace(
            r#""d.off","project":"default","enabled":false"#,
            r#""d.off","project":"default","enabled":true"#,
        )
        .replace(
            r#""d.users","project":"default""#,
            r#""d.users","project":"checkout""#,
        )
}

#[tokio::test]
async fn a_stream_starts_with_what_the_client_api_serves_then_gets_only_its_changes() {
    let s = start_offline("").await;
    for (token, query) in [
        (CLIENT_DEFAULT_DEV, ""),
        (CLIENT_DEFAULT_DEV, "?namePrefix=d.u"),
        (CLIENT_CHECKOUT_DEV, ""),
    ] {
        let mut stream = Sse::open(
            &s.url(&format!("/api/client/streaming{query}")),
            token,
            None,
        )
        .await;
        assert_eq!(stream.status, 200);
        assert_eq!(stream.headers["content-type"], "text/event-stream");
        assert_eq!(stream.headers["cache-control"], "no-cache");
        let first = stream.next().await;
        assert_eq!(first.name, "unleash-connected");
        let hydration = &events(&first)[0];
        assert_eq!(hydration["type"], "hydration");
        assert_eq!(
            first.id.as_deref(),
            Some(hydration["eventId"].to_string().as_str())
        );
        let (_, _, polled) = get(&s, &format!("/api/client/features{query}"), Some(token)).await;
        assert_eq!(hydration["features"], polled["features"], "{token}{query}");
        assert_eq!(hydration["segments"], polled["segments"], "{token}{query}");
        assert!(!hydration["features"].as_array().unwrap().is_empty());
    }

    let mut default = Sse::open(&s.url("/api/client/streaming"), CLIENT_DEFAULT_DEV, None).await;
    let mut checkout = Sse::open(&s.url("/api/client/streaming"), CLIENT_CHECKOUT_DEV, None).await;
    let first = default.next().await;
    checkout.next().await;
    std::fs::write(s.path("features.json"), changed_features()).unwrap();
    let update = default.next().await;
    assert_eq!(update.name, "unleash-updated");
    // d.users left the token's projects: removed for it, from the project it was in.
    assert_eq!(
        summary(&update),
        ["feature-removed d.users", "feature-updated d.off"]
    );
    assert_eq!(events(&update)[0]["project"], "default");
    let id: u64 = update.id.as_deref().unwrap().parse().unwrap();
    assert!(id > first.id.as_deref().unwrap().parse().unwrap());
    assert!(events(&update).iter().all(|e| e["eventId"] == id));
    assert_eq!(events(&update)[1]["feature"]["enabled"], true);
    let moved = checkout.next().await;
    assert_eq!(summary(&moved), ["feature-updated d.users"]);
    assert_eq!(
        moved.id, update.id,
        "one id per change, whatever the filter"
    );
    assert!(metric(&s, "flagpost_streams_open").await.unwrap() >= 2.0);
    assert!(
        metric(&s, "flagpost_stream_events_sent_total")
            .await
            .unwrap()
            >= 7.0
    );
    assert!(
        metric(&s, "flagpost_stream_bytes_sent_total")
            .await
            .unwrap()
            > 0.0
    );
}

#[tokio::test]
async fn a_held_event_id_resumes_and_any_other_gets_a_hydration() {
    let s = start_offline("").await;
    let url = s.url("/api/client/streaming");
    let first = Sse::open(&url, CLIENT_DEFAULT_DEV, None).await.next().await;
    let held = first.id.clone().unwrap();
    std::fs::write(s.path("features.json"), changed_features()).unwrap();
    let mut watcher = Sse::open(&url, CLIENT_DEFAULT_DEV, Some(&held)).await;
    // Resumed at once (nothing missed yet, or the change if it was already published).
    let resumed = watcher.next().await;
    assert_eq!(resumed.name, "unleash-connected");
    assert!(!summary(&resumed).iter().any(|e| e.starts_with("hydration")));
    if summary(&resumed).is_empty() {
        assert_eq!(resumed.id.as_deref(), Some(held.as_str()));
        watcher.next().await;
    }
    let mut again = Sse::open(&url, CLIENT_DEFAULT_DEV, Some(&held)).await;
    let missed = again.next().await;
    assert_eq!(missed.name, "unleash-connected");
    assert_eq!(
        summary(&missed),
        ["feature-removed d.users", "feature-updated d.off"]
    );
    for unknown in ["12345", "not-a-number", "999999999999999999"] {
        let mut fresh = Sse::open(&url, CLIENT_DEFAULT_DEV, Some(unknown)).await;
        let e = fresh.next().await;
        assert_eq!(summary(&e), ["hydration "], "{unknown}");
        assert_eq!(e.id, missed.id);
    }
}

#[tokio::test]
async fn delta_answers_304_the_missed_events_or_a_hydration() {
    let s = start_offline("").await;
    let delta = |inm: Option<String>| {
        let s = &s;
        async move {
            let mut req = client()
                .get(s.url("/api/client/delta"))
                .header("Authorization", CLIENT_DEFAULT_DEV);
            if let Some(tag) = inm {
                req = req.header("If-None-Match", tag);
            }
            let r = req.send().await.unwrap();
            let etag = r
                .headers()
                .get("etag")
                .map(|v| v.to_str().unwrap().to_string());
            let status = r.status().as_u16();
            let bytes = r.bytes().await.unwrap();
            if status == 200 {
                // As an SDK built on Unleash's engine reads it (ids are u32 there).
                let typed = serde_json::from_slice::<
                    unleash_types::client_features::ClientFeaturesDelta,
                >(&bytes);
                assert!(typed.is_ok(), "{typed:?}");
            }
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            (status, etag, body)
        }
    };
    let (status, etag, body) = delta(None).await;
    assert_eq!(status, 200);
    let etag = etag.unwrap();
    assert_eq!(body["events"][0]["type"], "hydration");
    assert_eq!(
        etag,
        format!("\"{}\"", body["events"][0]["eventId"]),
        "a strong ETag of the event id"
    );
    let (_, _, polled) = get(&s, "/api/client/features", Some(CLIENT_DEFAULT_DEV)).await;
    assert_eq!(body["events"][0]["features"], polled["features"]);
    assert_eq!(delta(Some(etag.clone())).await.0, 304);
    std::fs::write(s.path("features.json"), changed_features()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (_, new_etag, body) = loop {
        let got = delta(Some(etag.clone())).await;
        if got.0 == 200 {
            break got;
        }
        assert!(Instant::now() < deadline, "the change in the delta");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let types: Vec<&str> = body["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["feature-removed", "feature-updated"]);
    assert_ne!(new_etag.as_deref(), Some(etag.as_str()));
    assert_eq!(delta(new_etag).await.0, 304);
    let (status, _, body) = delta(Some("\"1\"".into())).await;
    assert_eq!(
        (status, body["events"][0]["type"].as_str()),
        (200, Some("hydration"))
    );
}

#[tokio::test]
async fn errors_come_before_a_stream_as_json_and_streams_over_the_limit_get_429() {
    let s = start_offline("[streaming]\nmax_streams = 1").await;
    let url = s.url("/api/client/streaming");
    for (token, status, code) in [
        ("", 401, "token_missing"),
        ("nope", 401, "token_invalid"),
        (FRONTEND_DEFAULT_DEV, 403, "token_wrong_type"),
    ] {
        let (got, headers, body) = get(
            &s,
            "/api/client/streaming",
            Some(token).filter(|t| !t.is_empty()),
        )
        .await;
        assert_eq!(
            (got, body["error"].as_str()),
            (status, Some(code)),
            "{token}"
        );
        assert_eq!(headers["content-type"], "application/json");
    }
    let mut one = Sse::open(&url, CLIENT_DEFAULT_DEV, None).await;
    one.next().await;
    let (status, _, body) = get(&s, "/api/client/streaming", Some(CLIENT_DEFAULT_DEV)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("too_many_streams"))
    );
    drop(one);
    eventually("the slot given back", || async {
        Sse::open(&url, CLIENT_DEFAULT_DEV, None).await.status == 200
    })
    .await;
}

#[tokio::test]
async fn polling_answers_advertise_streaming_when_configured() {
    let s = start_offline("[streaming]\nadvertise = true").await;
    let (_, headers, _) = get(&s, "/api/client/features", Some(CLIENT_DEFAULT_DEV)).await;
    assert_eq!(headers["fetch-mode"], "streaming");
    let plain = start_offline("").await;
    let (_, headers, _) = get(&plain, "/api/client/features", Some(CLIENT_DEFAULT_DEV)).await;
    assert!(headers.get("fetch-mode").is_none());
}

#[tokio::test]
async fn streams_end_when_the_drain_starts() {
    let config = offline::config("shutdown_delay = \"3s\"");
    let mut s = Server::start(&config, &[("features.json", FEATURES)]).await;
    s.wait_ready().await;
    let mut stream = Sse::open(&s.url("/api/client/streaming"), CLIENT_DEFAULT_DEV, None).await;
    stream.next().await;
    let started = Instant::now();
    s.signal_shutdown();
    assert!(stream.ended().await, "the stream ended");
    // Ended at the start of the drain, while flagpost still answers (not when it exits).
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(get(&s, "/ready", None).await.0, 503);
    assert_eq!(
        metric(&s, "flagpost_streams_closed_total{reason=\"drain\"}").await,
        Some(1.0)
    );
    // A stream opened during the drain lasts until the listeners close.
    let mut late = Sse::open(&s.url("/api/client/streaming"), CLIENT_DEFAULT_DEV, None).await;
    assert_eq!(late.next().await.name, "unleash-connected");
    assert!(late.ended().await);
}

#[tokio::test]
async fn streams_outlive_the_request_and_idle_timeouts_and_do_not_count_in_flight() {
    let config = offline::config(
        "request_timeout = \"200ms\"\nidle_timeout = \"300ms\"\nheader_read_timeout = \"200ms\"\nmax_in_flight = 1",
    )
    .replacen("[server]", "[streaming]\nheartbeat_interval = \"100ms\"\n[server]", 1);
    let s = Server::start(&config, &[("features.json", FEATURES)]).await;
    s.wait_ready().await;
    let url = s.url("/api/client/streaming");
    let mut a = Sse::open(&url, CLIENT_DEFAULT_DEV, None).await;
    let mut b = Sse::open(&url, CLIENT_CHECKOUT_DEV, None).await;
    assert_eq!(
        (a.status, b.status),
        (200, 200),
        "in-flight limit 1, two streams"
    );
    a.next().await;
    b.next().await;
    // Nothing but heartbeats for well past the request and idle timeouts.
    let started = Instant::now();
    assert!(a.try_next(Duration::from_millis(1000)).await.is_none());
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert!(a.heartbeats >= 5, "{} heartbeats", a.heartbeats);
    assert_eq!(
        get(&s, "/api/client/features", Some(CLIENT_DEFAULT_DEV))
            .await
            .0,
        200
    );
    std::fs::write(s.path("features.json"), changed_features()).unwrap();
    assert_eq!(a.next().await.name, "unleash-updated", "still open");
    assert_eq!(b.next().await.name, "unleash-updated", "still open");
}
