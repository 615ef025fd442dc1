//! A fleet on one Redis: a real `redis-server` started by the test on a free port, several
//! flagposts in-process, the scripted fake upstream counting every request.

use std::time::{Duration, Instant};

use crate::edge::edge_config;
use crate::harness::*;
use crate::redis::*;
use crate::upstream::{secret, FakeUpstream};

/// An instance's configuration: edge mode on `up`, these startup tokens, the fleet's Redis.
pub fn member(
    up: &FakeUpstream,
    redis: &Redis,
    name: &str,
    tokens: &[&str],
    extra: &str,
    store: &str,
) -> String {
    let tokens: Vec<String> = tokens.iter().map(|t| secret(t)).collect();
    format!(
        "instance_id = \"{name}\"\n{}\n[store]\nredis_url = \"{}\"\nlease = \"1s\"\ntimeout = \"300ms\"\n{store}\n",
        edge_config(&up.url(), &tokens, extra),
        redis.url()
    )
}

pub async fn start_member(up: &FakeUpstream, redis: &Redis, name: &str, tokens: &[&str]) -> Server {
    let s = Server::start(&member(up, redis, name, tokens, "", ""), &[]).await;
    s.wait_ready().await;
    s
}

pub async fn role(s: &Server) -> &'static str {
    for r in ["poller", "follower", "solo"] {
        if metric(s, &format!("flagpost_fleet_role{{role=\"{r}\"}}")).await == Some(1.0) {
            return r;
        }
    }
    "none"
}

/// The instances that fetched features upstream since request number `from`.
pub fn pollers_since(up: &FakeUpstream, from: usize) -> Vec<String> {
    let mut ids: Vec<String> = up
        .requests_to("/api/client/features")
        .iter()
        .skip(from)
        .filter_map(|r| r.header("unleash-instanceid").map(str::to_string))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

pub async fn client_body(s: &Server, token: &str) -> (u16, String, serde_json::Value) {
    let (status, headers, body) = get(s, "/api/client/features", Some(token)).await;
    let etag = headers
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, etag, body)
}

pub fn enabled(body: &serde_json::Value, flag: &str) -> Option<bool> {
    body["features"]
        .as_array()?
        .iter()
        .find(|f| f["name"] == flag)?["enabled"]
        .as_bool()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_polls_for_the_fleet_and_a_new_token_is_validated_once() {
    let up = FakeUpstream::start().await;
    let redis = Redis::start();
    let a = start_member(&up, &redis, "fleet-a", &["client-all-dev"]).await;
    let b = start_member(&up, &redis, "fleet-b", &["client-all-dev"]).await;
    let c = start_member(&up, &redis, "fleet-c", &["client-all-dev"]).await;
    let members = [&a, &b, &c];
    eventually("one poller, two followers", || async {
        let mut roles = Vec::new();
        for s in members {
            roles.push(role(s).await);
        }
        roles.sort_unstable();
        roles == ["follower", "follower", "poller"]
    })
    .await;
    // Ten fetches (refresh interval 100 ms): every one comes from one instance.
    let from = up.requests_to("/api/client/features").len();
    eventually("ten more fetches", || async {
        up.requests_to("/api/client/features").len() - from >= 10
    })
    .await;
    assert_eq!(
        pollers_since(&up, from).len(),
        1,
        "{:?}",
        pollers_since(&up, from)
    );
    // The same bodies and ETags everywhere.
    let token = secret("client-all-dev");
    let (_, etag, _) = client_body(&a, &token).await;
    for s in [&b, &c] {
        assert_eq!(client_body(s, &token).await.1, etag);
    }

    // A token none of them has seen, sent to all three at once: one question upstream.
    let new = secret("frontend-all-dev");
    let asked = |up: &FakeUpstream| {
        up.requests_to("/edge/validate")
            .iter()
            .filter(|r| String::from_utf8_lossy(&r.body).contains(&new))
            .count()
    };
    let answers = futures_util::future::join_all(
        members.map(|s| async { get(s, "/api/frontend", Some(&new)).await.0 }),
    )
    .await;
    assert_eq!(answers, [200, 200, 200]);
    assert_eq!(asked(&up), 1, "one /edge/validate call for the fleet");
    let from_fleet: f64 = futures_util::future::join_all(members.map(|s| async {
        metric(s, "flagpost_token_validations_total{result=\"from_fleet\"}")
            .await
            .unwrap_or(0.0)
    }))
    .await
    .iter()
    .sum();
    assert_eq!(from_fleet, 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reaches_every_instance_and_another_takes_over_when_the_poller_stops() {
    let up = FakeUpstream::start().await;
    let redis = Redis::start();
    let mut members = Vec::new();
    for name in ["take-a", "take-b", "take-c"] {
        members.push(start_member(&up, &redis, name, &["client-all-dev"]).await);
    }
    let token = secret("client-all-dev");
    let mut on = false;
    for round in 0..2 {
        let changed = Instant::now();
        up.set_enabled("development", "simple.on", on);
        for s in &members {
            eventually("the change everywhere", || async {
                enabled(&client_body(s, &token).await.2, "simple.on") == Some(on)
            })
            .await;
        }
        eprintln!(
            "round {round}: a change upstream was served by every instance after {:?}",
            changed.elapsed()
        );
        let (_, etag, _) = client_body(&members[0], &token).await;
        for s in &members[1..] {
            assert_eq!(client_body(s, &token).await.1, etag, "the same ETag");
        }
        if round == 1 {
            break;
        }
        // The poller stops (and gives its lease up): another takes over.
        let mut poller = None;
        for (i, s) in members.iter().enumerate() {
            if role(s).await == "poller" {
                poller = Some(i);
            }
        }
        let stopped = members.remove(poller.expect("a poller"));
        let took = Instant::now();
        stopped.stop().await.unwrap();
        eventually("another poller", || async {
            role(&members[0]).await == "poller" || role(&members[1]).await == "poller"
        })
        .await;
        eprintln!(
            "another instance polled {:?} after the poller stopped",
            took.elapsed()
        );
        on = true;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_every_instance_serves_and_polls_and_the_fleet_converges_when_it_returns() {
    let up = FakeUpstream::start().await;
    let mut redis = Redis::start();
    let a = start_member(&up, &redis, "solo-a", &["client-all-dev"]).await;
    let b = start_member(&up, &redis, "solo-b", &["client-all-dev"]).await;
    eventually("a poller", || async {
        role(&a).await == "poller" || role(&b).await == "poller"
    })
    .await;
    redis.stop();
    eventually("both poll alone", || async {
        role(&a).await == "solo" && role(&b).await == "solo"
    })
    .await;
    let from = up.requests_to("/api/client/features").len();
    eventually("both fetch upstream", || async {
        pollers_since(&up, from).len() == 2
    })
    .await;
    let token = secret("client-all-dev");
    up.set_enabled("development", "simple.on", false);
    for s in [&a, &b] {
        eventually("the change without Redis", || async {
            enabled(&client_body(s, &token).await.2, "simple.on") == Some(false)
        })
        .await;
    }
    assert!(
        metric(
            &a,
            "flagpost_store_operations_total{operation=\"lease\",outcome=\"error\"}"
        )
        .await
        .unwrap_or(0.0)
            + metric(
                &a,
                "flagpost_store_operations_total{operation=\"lease\",outcome=\"timeout\"}"
            )
            .await
            .unwrap_or(0.0)
            >= 1.0
    );

    // Redis comes back empty: one poller again, and Redis holds the snapshot at once.
    redis.restart();
    eventually("one poller again", || async {
        let roles = [role(&a).await, role(&b).await];
        roles.contains(&"poller") && roles.contains(&"follower")
    })
    .await;
    eventually("the snapshot in Redis again", || async {
        redis
            .dump()
            .await
            .iter()
            .any(|(k, v)| k.ends_with(":env:development") && v.contains("simple.on"))
    })
    .await;
    // Five fetches from now: all from one instance.
    let from = up.requests_to("/api/client/features").len();
    eventually("five more fetches", || async {
        up.requests_to("/api/client/features").len() - from >= 5
    })
    .await;
    assert_eq!(
        pollers_since(&up, from).len(),
        1,
        "{:?}",
        pollers_since(&up, from)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_poller_is_replaced_within_the_lease() {
    let up = FakeUpstream::start().await;
    let redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("poller.toml");
    let config = member(&up, &redis, "killed", &["client-all-dev"], "", "").replacen(
        "[edge]",
        "[server]\ninterface = \"127.0.0.1\"\nport = 0\n[edge]",
        1,
    );
    std::fs::write(&path, config).unwrap();
    let mut poller = Binary::spawn({
        let mut c = crate::cli::flagpost();
        c.arg("--config").arg(&path);
        c
    });
    poller.listening();
    eventually("the binary polls", || async {
        pollers_since(&up, 0) == ["killed"]
    })
    .await;
    let follower = start_member(&up, &redis, "survivor", &["client-all-dev"]).await;
    assert_eq!(role(&follower).await, "follower");
    poller.kill();
    let killed = Instant::now();
    eventually("the survivor polls", || async {
        role(&follower).await == "poller"
    })
    .await;
    let took = killed.elapsed();
    eprintln!("a killed poller was replaced after {took:?} (lease 1 s)");
    // At most the lease, plus one renewal period, plus scheduling.
    assert!(took < Duration::from_millis(2500), "{took:?}");
    let from = up.requests_to("/api/client/features").len();
    eventually("it fetches", || async {
        pollers_since(&up, from) == ["survivor"]
    })
    .await;
}
