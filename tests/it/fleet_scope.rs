//! The scope rule across a fleet: an instance booting from Redis serves only its own
//! scope, a revoked token is refused everywhere, a startup token refused at the poller narrows
//! every instance, and two fleets on one Redis never see each other.

use std::time::{Duration, Instant};

use crate::fleet::*;
use crate::harness::*;
use crate::redis::*;
use crate::upstream::{fixture_tokens, secret, Behaviour, FakeUpstream};

/// A snapshot older than store.max_age is not used: an instance booting while upstream is
/// down reads it, and stays not ready.
async fn assert_an_old_snapshot_is_not_used(up: &FakeUpstream, redis: &Redis, shared: &str) {
    redis
        .command(&[
            "HSET",
            "flagpost:{boot-test}:env:development",
            "confirmed_at",
            "1000",
        ])
        .await;
    let config = member(up, redis, "boot-d", &["client-all-dev"], "", shared);
    let d = Server::start(&config, &[]).await;
    // Once it has read the store's snapshot (and found it too old), it is still not ready.
    eventually("the store's snapshot read", || async {
        metric(
            &d,
            "flagpost_store_operations_total{operation=\"read\",outcome=\"ok\"}",
        )
        .await
        .is_some_and(|n| n >= 1.0)
    })
    .await;
    let (status, _, body) = get(&d, "/ready", None).await;
    assert_eq!(status, 503, "an old snapshot is not served: {body}");
    assert!(
        body["reason"]
            .as_str()
            .unwrap()
            .contains("no features loaded"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_instance_boots_from_redis_while_upstream_is_down_within_its_own_scope() {
    let up = FakeUpstream::start().await;
    let redis = Redis::start();
    let shared = "namespace = \"boot-test\"";
    let config = member(
        &up,
        &redis,
        "boot-a",
        &["client-all-dev", "client-default-dev"],
        "",
        shared,
    );
    let a = Server::start(&config, &[]).await;
    a.wait_ready().await;
    let all = secret("client-all-dev");
    let default = secret("client-default-dev");
    eventually("the snapshot in Redis", || async {
        matches!(
            redis
                .command(&["EXISTS", "flagpost:{boot-test}:env:development"])
                .await,
            redis::Value::Int(1)
        )
    })
    .await;
    let (_, etag_all, body_all) = client_body(&a, &all).await;
    let (_, etag_default, _) = client_body(&a, &default).await;
    up.set(Behaviour::Down);

    // Configured with the narrower token only: serves what it covers, not more.
    let config = member(&up, &redis, "boot-b", &["client-default-dev"], "", shared);
    let started = Instant::now();
    let b = Server::start(&config, &[]).await;
    b.wait_ready().await;
    let ready = started.elapsed();
    eprintln!("ready from Redis with upstream down after {ready:?}");
    assert!(ready < Duration::from_secs(2), "{ready:?}");
    let (status, etag, _) = client_body(&b, &default).await;
    assert_eq!(
        (status, etag),
        (200, etag_default),
        "the same body and ETag"
    );
    let (status, _, body) = get(&b, "/api/client/features", Some(&all)).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("scope_not_covered"))
    );
    // The wide one, configured wide, serves it all.
    let config = member(&up, &redis, "boot-c", &["client-all-dev"], "", shared);
    let c = Server::start(&config, &[]).await;
    c.wait_ready().await;
    let (status, etag, body) = client_body(&c, &all).await;
    assert_eq!((status, etag), (200, etag_all));
    assert_eq!(body, body_all);

    assert_an_old_snapshot_is_not_used(&up, &redis, shared).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_fleets_on_one_redis_do_not_see_each_other() {
    let up = FakeUpstream::start().await;
    let redis = Redis::start();
    let dev = start_member(&up, &redis, "ns-dev", &["client-all-dev"]).await;
    let prod = start_member(&up, &redis, "ns-prod", &["client-all-prod"]).await;
    // Each is the poller of its own fleet.
    eventually("two pollers", || async {
        role(&dev).await == "poller" && role(&prod).await == "poller"
    })
    .await;
    eventually("both written", || async {
        redis
            .dump()
            .await
            .iter()
            .filter(|(k, _)| k.contains(":env:"))
            .count()
            == 2
    })
    .await;
    let keys = redis.dump().await;
    let namespaces: std::collections::BTreeSet<&str> = keys
        .iter()
        .map(|(k, _)| k.split(':').nth(1).unwrap())
        .collect();
    assert_eq!(namespaces.len(), 2, "{keys:?}");
    for ns in &namespaces {
        let envs: Vec<&str> = keys
            .iter()
            .filter(|(k, _)| k.starts_with(&format!("flagpost:{ns}:env:")))
            .map(|(k, _)| k.rsplit(':').next().unwrap())
            .collect();
        assert_eq!(envs.len(), 1, "{ns}: {envs:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_upstream_is_refused_by_every_instance_and_redis_holds_no_secret() {
    let up = FakeUpstream::start().await;
    let redis = Redis::start();
    // Only the first instance revalidates often; the others learn it from the fleet.
    let a = Server::start(
        &member(
            &up,
            &redis,
            "rev-a",
            &["client-all-dev"],
            "token_revalidation_interval = \"300ms\"",
            "",
        ),
        &[],
    )
    .await;
    a.wait_ready().await;
    let b = start_member(&up, &redis, "rev-b", &["client-all-dev"]).await;
    let c = start_member(&up, &redis, "rev-c", &["client-all-dev"]).await;
    let token = secret("client-default-dev");
    for s in [&a, &b, &c] {
        assert_eq!(get(s, "/api/client/features", Some(&token)).await.0, 200);
    }
    up.revoke(&token);
    for s in [&a, &b, &c] {
        eventually("refused everywhere", || async {
            get(s, "/api/client/features", Some(&token)).await.0 == 401
        })
        .await;
    }
    // No key or value holds a token: only digests.
    let dump = redis.dump().await;
    assert!(
        dump.iter().any(|(k, _)| k.contains(":token:")),
        "verdicts are shared"
    );
    for t in fixture_tokens().values() {
        let secret_part = t.secret.rsplit('.').next().unwrap();
        for (k, v) in &dump {
            assert!(
                !k.contains(secret_part) && !v.contains(secret_part),
                "{k} holds a token secret"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_startup_token_refused_at_the_poller_narrows_what_every_instance_serves() {
    let up = FakeUpstream::start().await;
    let redis = Redis::start();
    let tokens = ["client-all-dev", "client-default-dev"];
    let a = start_member(&up, &redis, "narrow-a", &tokens).await;
    let b = start_member(&up, &redis, "narrow-b", &tokens).await;
    eventually("a poller and a follower", || async {
        let roles = [role(&a).await, role(&b).await];
        roles.contains(&"poller") && roles.contains(&"follower")
    })
    .await;
    let wide = secret("client-v2-dev");
    let narrow = secret("client-default-dev");
    for s in [&a, &b] {
        assert_eq!(get(s, "/api/client/features", Some(&wide)).await.0, 200);
    }
    // The wide startup token is refused upstream: only `default` is served, by both.
    up.revoke(&secret("client-all-dev"));
    for s in [&a, &b] {
        eventually("the wide scope refused", || async {
            let (status, _, body) = get(s, "/api/client/features", Some(&wide)).await;
            status == 403 && body["error"] == "scope_not_covered"
        })
        .await;
        assert_eq!(get(s, "/api/client/features", Some(&narrow)).await.0, 200);
    }
}
