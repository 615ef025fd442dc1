//! The Frontend API's answers over time: the context from the query and the body, date
//! constraints evaluated at the time of each request, and remembered ETags (repeated
//! conditional polls are answered 304 without evaluating, only the flags chance decides are,
//! never past a date a constraint names, never after the snapshot changed).

use std::time::{Duration, Instant};

use crate::harness::*;
use crate::offline::{self, *};

fn features(extra: &str) -> String {
    format!(
        r#"{{"version":2,"features":[
  {{"name":"a.on","project":"default","enabled":true,"strategies":[{{"name":"default"}}]}},
  {{"name":"a.users","project":"default","enabled":true,"strategies":[{{"name":"userWithId","parameters":{{"userIds":"alice"}}}}]}}
  {extra}
]}}"#
    )
}

async fn poll(s: &Server, query: &str, etag: Option<&str>) -> (u16, String, serde_json::Value) {
    let mut req = client()
        .get(s.url(&format!("/api/frontend{query}")))
        .header("Authorization", FRONTEND_DEFAULT_DEV);
    if let Some(e) = etag {
        req = req.header("If-None-Match", e);
    }
    let (status, headers, body) = into_parts(req.send().await.unwrap()).await;
    let etag = headers
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, etag, body)
}

async fn count(s: &Server, how: &str) -> f64 {
    metric(
        s,
        &format!("flagpost_frontend_answers_total{{how=\"{how}\"}}"),
    )
    .await
    .unwrap_or(0.0)
}

#[tokio::test]
async fn a_repeated_conditional_poll_is_304_without_evaluating_until_the_snapshot_changes() {
    let s = Server::start(&offline::config(""), &[("features.json", &features(""))]).await;
    s.wait_ready().await;
    let (status, etag, body) = poll(&s, "?userId=alice", None).await;
    assert_eq!(status, 200);
    assert_eq!(toggle_names(&body), ["a.on", "a.users"]);
    assert_eq!(count(&s, "evaluated").await, 1.0);
    for _ in 0..3 {
        assert_eq!(poll(&s, "?userId=alice", Some(&etag)).await.0, 304);
    }
    assert_eq!(count(&s, "remembered").await, 3.0, "answered from the memo");
    assert_eq!(count(&s, "evaluated").await, 1.0, "nothing evaluated again");
    // Another context is another answer.
    let (status, other, _) = poll(&s, "?userId=bob", Some(&etag)).await;
    assert_eq!(status, 200);
    assert_ne!(other, etag);
    // The snapshot changes (a.on is switched off): the remembered ETag no longer answers.
    std::fs::write(
        s.path("features.json"),
        features("").replacen("\"enabled\":true", "\"enabled\":false", 1),
    )
    .unwrap();
    eventually("the new answer", || async {
        poll(&s, "?userId=alice", Some(&etag)).await.0 == 200
    })
    .await;
    let (_, new_etag, body) = poll(&s, "?userId=alice", None).await;
    assert_eq!(toggle_names(&body), ["a.users"]);
    assert_eq!(poll(&s, "?userId=alice", Some(&new_etag)).await.0, 304);
}

#[tokio::test]
async fn a_random_rollout_keeps_varying_across_conditional_polls() {
    let random = r#",{"name":"a.random","project":"default","enabled":true,"strategies":[{"name":"flexibleRollout","parameters":{"rollout":"50","stickiness":"random","groupId":"r"}}]}"#;
    let s = Server::start(
        &offline::config(""),
        &[("features.json", &features(random))],
    )
    .await;
    s.wait_ready().await;
    let (_, mut etag, _) = poll(&s, "?userId=alice", None).await;
    let mut seen = std::collections::BTreeSet::new();
    let mut changed = 0;
    // 200 polls: each changes with probability 1/4 (the chance part differs, then so does the
    // full evaluation), so fewer than 5 changes is vanishingly unlikely.
    for _ in 0..200 {
        let (status, next, body) = poll(&s, "?userId=alice", Some(&etag)).await;
        if status == 200 {
            changed += 1;
            seen.insert(toggle_names(&body).contains(&"a.random".to_string()));
            etag = next;
        }
    }
    assert!(
        changed >= 5,
        "the answer changed {changed} times in 200 conditional polls"
    );
    assert_eq!(seen.len(), 2, "on and off both seen");
    // The random flag is evaluated on every poll; the rest comes from the memo: a poll whose
    // random result did not change is a 304 ("spliced"), one whose result changed a 200.
    assert_eq!(count(&s, "remembered").await, 0.0);
    let spliced = count(&s, "spliced").await;
    assert!(spliced >= 5.0, "{spliced} spliced");
}

/// Variants sticky on a field the context lacks are drawn at random on every evaluation (the
/// engine has nothing to hash): never frozen. With the field, the answer is remembered.
#[tokio::test]
async fn variants_sticky_on_a_missing_field_keep_varying() {
    let variants = r#",{"name":"a.split","project":"default","enabled":true,"strategies":[{"name":"default"}],
      "variants":[{"name":"v1","weight":250,"stickiness":"tenant"},{"name":"v2","weight":250,"stickiness":"tenant"},
                  {"name":"v3","weight":250,"stickiness":"tenant"},{"name":"v4","weight":250,"stickiness":"tenant"}]}"#;
    let s = Server::start(
        &offline::config(""),
        &[("features.json", &features(variants))],
    )
    .await;
    s.wait_ready().await;
    let variant = |body: &serde_json::Value| {
        body["toggles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == "a.split")
            .map(|t| t["variant"]["name"].as_str().unwrap().to_string())
            .unwrap()
    };
    let (_, mut etag, body) = poll(&s, "?userId=alice", None).await;
    let mut seen = std::collections::BTreeSet::from([variant(&body)]);
    for _ in 0..100 {
        let (status, next, body) = poll(&s, "?userId=alice", Some(&etag)).await;
        if status == 200 {
            seen.insert(variant(&body));
            etag = next;
        }
    }
    // Each poll keeps the same variant with probability 1/4: all four in 100 polls.
    assert_eq!(seen.len(), 4, "variants seen without the field: {seen:?}");
    assert_eq!(count(&s, "remembered").await, 0.0);
    let q = "?userId=alice&properties[tenant]=acme";
    let (_, etag, body) = poll(&s, q, None).await;
    let sticky = variant(&body);
    for _ in 0..5 {
        assert_eq!(poll(&s, q, Some(&etag)).await.0, 304);
    }
    assert_eq!(
        count(&s, "remembered").await,
        5.0,
        "with the field: remembered"
    );
    assert_eq!(variant(&poll(&s, q, None).await.2), sticky);
}

#[tokio::test]
async fn a_date_constraint_flips_at_its_time_without_a_snapshot_change() {
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let dated = format!(
        r#",{{"name":"a.launch","project":"default","enabled":true,"strategies":[{{"name":"default","constraints":[{{"contextName":"currentTime","operator":"DATE_AFTER","value":"{}"}}]}}]}}"#,
        at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    let s = Server::start(
        &offline::config(""),
        &[("features.json", &features(&dated))],
    )
    .await;
    s.wait_ready().await;
    let (_, etag, body) = poll(&s, "?userId=alice", None).await;
    assert!(!toggle_names(&body).contains(&"a.launch".to_string()));
    assert_eq!(
        poll(&s, "?userId=alice", Some(&etag)).await.0,
        304,
        "before the date: remembered"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let (status, _, body) = poll(&s, "?userId=alice", Some(&etag)).await;
        if status == 200 {
            break body;
        }
        assert!(Instant::now() < deadline, "still 304 after the date");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        chrono::Utc::now() >= at,
        "changed only once the date passed"
    );
    assert!(toggle_names(&body).contains(&"a.launch".to_string()));
}

/// Every way the clock reaches a result but the date operators (a regular expression on
/// `currentTime`, here true in the first half of every second; a string constraint on it in a
/// segment; a rollout sticky on it): a conditional poll that keeps its first ETag gets the
/// flag's new state once the clock has moved it, never a 304 for the old answer. And with
/// the client's own `currentTime`, the answer is remembered again.
#[tokio::test]
async fn what_the_clock_decides_is_never_remembered() {
    let clocked = r#",{"name":"a.half","project":"default","enabled":true,"strategies":[{"name":"default","constraints":[{"contextName":"currentTime","operator":"REGEX","value":"\\.[0-4][0-9][0-9]Z$"}]}]}
      ,{"name":"a.segment","project":"default","enabled":true,"strategies":[{"name":"default","segments":[1]}]}
      ,{"name":"a.sticky","project":"default","enabled":true,"strategies":[{"name":"flexibleRollout","parameters":{"rollout":"50","stickiness":"currentTime","groupId":"g"}}]}
    ],"segments":[{"id":1,"constraints":[{"contextName":"currentTime","operator":"STR_CONTAINS","values":[".0",".2",".4",".6",".8"]}]}"#;
    let s = Server::start(
        &offline::config(""),
        &[("features.json", &features(clocked))],
    )
    .await;
    s.wait_ready().await;
    let flags = ["a.half", "a.segment", "a.sticky"];
    let state = |body: &serde_json::Value| {
        let names = toggle_names(body);
        flags.map(|f| names.contains(&f.to_string()))
    };
    let (_, etag, first) = poll(&s, "?userId=alice", None).await;
    let before = state(&first);
    // Each flag is seen in the other state by a poll that kept the first ETag, and a poll
    // whose clock gave the first answer again is a 304 (spliced: only those flags evaluated).
    let mut flipped = [false; 3];
    let mut not_modified = false;
    let deadline = Instant::now() + Duration::from_secs(20);
    while flipped.contains(&false) || !not_modified {
        assert!(
            Instant::now() < deadline,
            "a conditional poll never saw {flipped:?} change ({before:?}), or never a 304 ({not_modified})"
        );
        let (status, _, body) = poll(&s, "?userId=alice", Some(&etag)).await;
        if status == 200 {
            for (i, on) in state(&body).iter().enumerate() {
                flipped[i] |= *on != before[i];
            }
        }
        not_modified |= status == 304;
        tokio::time::sleep(Duration::from_millis(7)).await;
    }
    assert!(count(&s, "spliced").await >= 1.0, "evaluated as chance is");
    assert_eq!(count(&s, "remembered").await, 0.0);
    // The client's own time is part of the key: remembered.
    let q = "?userId=alice&currentTime=2030-01-01T00:00:00.100Z";
    let (_, etag, _) = poll(&s, q, None).await;
    for _ in 0..5 {
        assert_eq!(poll(&s, q, Some(&etag)).await.0, 304);
    }
    assert!(count(&s, "remembered").await >= 5.0);
}

#[tokio::test]
async fn frontend_context_from_query_and_body() {
    let s = start().await;
    let names = |b: &serde_json::Value| toggle_names(b);
    let (_, _, q) = get(&s, "/api/frontend?userId=alice", Some(FRONTEND_DEFAULT_DEV)).await;
    assert!(names(&q).contains(&"d.users".to_string()));
    let (_, _, q) = get(&s, "/api/frontend?userId=bob", Some(FRONTEND_DEFAULT_DEV)).await;
    assert!(!names(&q).contains(&"d.users".to_string()));
    for body in [r#"{"userId":"alice"}"#, r#"{"context":{"userId":"alice"}}"#] {
        let (status, _, b) = post(&s, "/api/frontend", Some(FRONTEND_DEFAULT_DEV), body).await;
        assert_eq!(status, 200);
        assert!(names(&b).contains(&"d.users".to_string()), "{body}");
    }
    let (status, _, b) = post(&s, "/api/frontend", Some(FRONTEND_DEFAULT_DEV), "").await;
    assert_eq!((status, names(&b).len()), (200, 2));
    let (_, _, b) = get(&s, "/api/frontend", Some(FRONTEND_DEFAULT_DEV)).await;
    assert_eq!(
        b["toggles"][1],
        serde_json::json!({"name":"d.variant","enabled":true,"impressionData":true,
            "variant":{"name":"blue","enabled":true,"feature_enabled":true,"featureEnabled":true,
                       "payload":{"type":"string","value":"b"}}})
    );
    let (status, _, one) = get(
        &s,
        "/api/frontend/features/d.on",
        Some(FRONTEND_DEFAULT_DEV),
    )
    .await;
    assert_eq!(
        (status, one["name"].as_str(), one["enabled"].as_bool()),
        (200, Some("d.on"), Some(true))
    );
    assert_eq!(
        get(
            &s,
            "/api/frontend/features/d.off",
            Some(FRONTEND_DEFAULT_DEV)
        )
        .await
        .0,
        404
    );
    s.stop().await.unwrap();
}

/// A date as Unleash writes it: milliseconds and `Z`.
fn unleash_date(date: chrono::DateTime<chrono::Utc>) -> String {
    date.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

#[tokio::test]
async fn date_constraints_are_evaluated_at_the_time_of_the_request() {
    let day = chrono::Duration::days(1);
    let now = chrono::Utc::now();
    let flag = |name: &str, date: chrono::DateTime<chrono::Utc>| {
        serde_json::json!({"name": name, "type": "release", "enabled": true, "project": "default",
            "strategies": [{"name": "default", "parameters": {}, "constraints": [
                {"contextName": "currentTime", "operator": "DATE_AFTER",
                 "value": unleash_date(date), "values": []}]}]})
    };
    let features = serde_json::json!({"version": 2, "features": [
        flag("after-yesterday", now - day), flag("after-tomorrow", now + day)]});
    let s = Server::start(&config(""), &[("features.json", &features.to_string())]).await;
    s.wait_ready().await;
    let (status, _, body) = get(&s, "/api/frontend", Some(FRONTEND_DEFAULT_DEV)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(toggle_names(&body), ["after-yesterday"]);
    // A currentTime given by the caller is used as it is.
    let url = format!(
        "/api/frontend?currentTime={}",
        unleash_date(now + day + day)
    );
    let (_, _, body) = get(&s, &url, Some(FRONTEND_DEFAULT_DEV)).await;
    assert_eq!(toggle_names(&body), ["after-yesterday", "after-tomorrow"]);
    s.stop().await.unwrap();
}
