//! A fleet on one Redis: a real `redis-server` started by the test on a free port, several
//! flagposts in-process, the scripted fake upstream counting every request.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::edge::edge_config;
use crate::harness::*;
use crate::upstream::{fixture_tokens, secret, Behaviour, FakeUpstream};

/// A `redis-server` of the test's own: a free port, a temporary folder, no persistence.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// Extra `redis-server` arguments (passwords, ACL users).
    extra: Vec<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(&[])
    }

    /// With extra `redis-server` arguments.
    pub fn start_with(extra: &[&str]) -> Redis {
        let port = child_port();
        let mut r = Redis {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        r.restart();
        r
    }

    /// Starts it (again, empty) on its port.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.ping().is_none() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            #[allow(clippy::disallowed_methods)] // polling a child process, with a deadline
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn ping(&self) -> Option<()> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
        s.write_all(b"PING\r\n").ok()?;
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).ok()?;
        // Up: PONG, or a refusal to answer before AUTH.
        (&buf == b"+PONG\r\n" || &buf == b"-NOAUTH").then_some(())
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Every key and its value (strings and hashes, as text).
    pub async fn dump(&self) -> Vec<(String, String)> {
        let client = redis::Client::open(self.url()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut c)
            .await
            .unwrap();
        let mut out = Vec::new();
        for key in keys {
            let kind: String = redis::cmd("TYPE")
                .arg(&key)
                .query_async(&mut c)
                .await
                .unwrap();
            let value = match kind.as_str() {
                "string" => redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut c)
                    .await
                    .unwrap(),
                "hash" => {
                    let all: Vec<String> = redis::cmd("HGETALL")
                        .arg(&key)
                        .query_async(&mut c)
                        .await
                        .unwrap();
                    all.join("\n")
                }
                other => format!("<{other}>"),
            };
            out.push((key, value));
        }
        out
    }

    pub async fn command(&self, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(self.url()).unwrap();
        let mut c = client.get_multiplexed_async_connection().await.unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut c).await.unwrap()
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An instance's configuration: edge mode on `up`, these startup tokens, the fleet's Redis.
fn member(
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

async fn start_member(up: &FakeUpstream, redis: &Redis, name: &str, tokens: &[&str]) -> Server {
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
fn pollers_since(up: &FakeUpstream, from: usize) -> Vec<String> {
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

    // A snapshot older than store.max_age is not used.
    redis
        .command(&[
            "HSET",
            "flagpost:{boot-test}:env:development",
            "confirmed_at",
            "1000",
        ])
        .await;
    let config = member(&up, &redis, "boot-d", &["client-all-dev"], "", shared);
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

/// The write script is fenced by the lease: only the instance whose id the lease holds writes
/// (whatever the others believe), versions are assigned by Redis (one up, at least Redis's
/// clock in seconds), and confirmation times are Redis's.
#[tokio::test]
async fn the_write_script_is_fenced_by_the_lease_and_versioned_by_redis() {
    use flagpost::fleet::{Confirmed, Shared, Written};
    let redis = Redis::start();
    let config = flagpost::config::StoreConfig {
        redis_urls: vec![flagpost::config::RedisUrl::new(redis.url())],
        mode: flagpost::config::RedisMode::Single,
        ca_certificate_file: None,
        namespace: "script".into(),
        max_age: Duration::from_secs(60),
        lease: Duration::from_secs(5),
        timeout: Duration::from_secs(1),
    };
    let metrics = std::sync::Arc::new(flagpost::metrics::Metrics::new(&[]));
    let shared = Shared::new(&config, metrics).unwrap();
    let write = |hash: &'static str, me: &'static str, confirmed: Confirmed| {
        let shared = &shared;
        async move {
            shared
                .write_snapshot("dev", (hash, "{}"), ("[]", confirmed), me)
                .await
                .unwrap()
                .0
        }
    };
    assert_eq!(
        write("a", "x", Confirmed::Now).await,
        Written::Fenced,
        "nobody holds the lease"
    );
    assert!(shared.head("dev").await.unwrap().is_none());
    assert!(shared
        .acquire_lease("holder", Duration::from_secs(5))
        .await
        .unwrap());
    assert!(!shared
        .acquire_lease("other", Duration::from_secs(5))
        .await
        .unwrap());
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let Written::Stored(first) = write("a", "holder", Confirmed::Now).await else {
        panic!("the holder writes")
    };
    assert!(
        first + 5 >= unix,
        "at least Redis's clock in seconds: {first} vs {unix}"
    );
    assert_eq!(write("a", "holder", Confirmed::Now).await, Written::Same);
    assert_eq!(
        write("b", "other", Confirmed::Now).await,
        Written::Fenced,
        "not the holder"
    );
    let head = shared.head("dev").await.unwrap().unwrap();
    assert_eq!((head.version, head.hash.as_str()), (first, "a"));
    assert!(
        head.age_ms < 2000,
        "confirmed just now by Redis's clock: {}",
        head.age_ms
    );
    assert_eq!(
        write("b", "holder", Confirmed::At(0)).await,
        Written::Stored(first + 1),
        "the next version"
    );
    let head = shared.head("dev").await.unwrap().unwrap();
    assert_eq!(head.age_ms, i64::MAX, "never confirmed");
    assert!(!shared.confirm("dev", "b", "other").await.unwrap().0);
    assert!(
        !shared.confirm("dev", "a", "holder").await.unwrap().0,
        "not its content"
    );
    assert!(shared.confirm("dev", "b", "holder").await.unwrap().0);
    assert!(shared.head("dev").await.unwrap().unwrap().age_ms < 2000);
    assert!(!shared
        .renew_lease("other", Duration::from_secs(5))
        .await
        .unwrap());
    assert!(shared
        .renew_lease("holder", Duration::from_secs(5))
        .await
        .unwrap());
    assert!(!shared.release_lease("other").await.unwrap());
    assert!(shared.release_lease("holder").await.unwrap());
    assert_eq!(
        write("c", "holder", Confirmed::Now).await,
        Written::Fenced,
        "released"
    );
    let head = shared.head("dev").await.unwrap().unwrap();
    assert_eq!(
        (head.version, head.hash.as_str(), head.size),
        (first + 1, "b", 2)
    );
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

/// Unleash Edge's Redis address in parts (REDIS_HOST, REDIS_PORT, REDIS_USERNAME,
/// REDIS_PASSWORD) reaches a real redis-server that needs an ACL user's password, one full of
/// characters a URL must escape: the binary becomes the fleet's poller, and prints no password.
#[test]
fn a_fleet_reaches_redis_given_in_edge_parts_with_an_acl_user() {
    use crate::cli::flagpost;
    let password = "f@p:w/d#?%";
    let acl_password = format!(">{password}");
    let redis = Redis::start_with(&[
        "--requirepass",
        "admin-secret-77",
        "--user",
        "flagpost",
        "on",
        &acl_password,
        "~*",
        "&*",
        "+@all",
    ]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let up = rt.block_on(FakeUpstream::start());
    let mut command = flagpost();
    command
        .args(["--port", "0", "--interface", "127.0.0.1", "edge"])
        .env("UPSTREAM_URL", up.url())
        .env("TOKENS", secret("client-all-dev"))
        .env("REDIS_HOST", "127.0.0.1")
        .env("REDIS_PORT", redis.port.to_string())
        .env("REDIS_USERNAME", "flagpost")
        .env("REDIS_PASSWORD", password);
    let mut binary = Binary::spawn(command);
    let addr = binary.listening();
    rt.block_on(eventually("the binary polls for the fleet", || async {
        let Ok(r) = client().get(format!("http://{addr}/metrics")).send().await else {
            return false;
        };
        r.text()
            .await
            .unwrap_or_default()
            .lines()
            .any(|l| l == "flagpost_fleet_role{role=\"poller\"} 1")
    }));
    binary.terminate();
    binary.exit_within(Duration::from_secs(30));
    let log = binary.log();
    assert!(!log.contains(password) && !log.contains("f%40p"), "{log}");
    assert!(log.contains("sharing a store with the fleet"), "{log}");
}
