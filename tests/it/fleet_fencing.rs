//! The fleet's writes are fenced by the poller's lease: the write script refuses a writer
//! without it, and a poller paused past its lease cannot put its older snapshot back.

use std::process::Command;
use std::time::{Duration, Instant};

use flagpost::fleet::{Confirmed, Shared, Written};

use crate::edge::edge_config;
use crate::fleet::*;
use crate::fleet_ha::*;
use crate::harness::*;
use crate::redis::*;
use crate::upstream::{secret, FakeUpstream};

/// The fleet's shared store on `redis`, as the fleet makes it.
fn shared_on(redis: &Redis) -> Shared {
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
    Shared::new(&config, metrics).unwrap()
}

async fn assert_only_the_holder_renews_and_releases(shared: &Shared) {
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
}

/// The write script is fenced by the lease: only the instance whose id the lease holds writes
/// (whatever the others believe), versions are assigned by Redis (one up, at least Redis's
/// clock in seconds), and confirmation times are Redis's.
#[tokio::test]
async fn the_write_script_is_fenced_by_the_lease_and_versioned_by_redis() {
    let redis = Redis::start();
    let shared = shared_on(&redis);
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
    assert_only_the_holder_renews_and_releases(&shared).await;
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

/// The classic fencing test: the poller is paused (SIGSTOP) past its lease, another instance
/// takes over and publishes a change, and the paused one is woken (SIGCONT) still believing it
/// polls. Whatever it tries to write is refused by the lease; Redis keeps the new poller's
/// snapshot and no instance ever serves the older one again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poller_paused_past_its_lease_cannot_put_its_older_snapshot_back() {
    let up = FakeUpstream::start().await;
    let redis = Node::start(&[]);
    let tokens = vec![secret("client-all-dev")];
    let store = format!(
        "[store]\nredis_url = \"{}\"\nnamespace = \"fence\"\nlease = \"1s\"\ntimeout = \"300ms\"\n",
        redis.url()
    );
    let config = |name: &str| {
        format!(
            "instance_id = \"{name}\"\n{}\n{store}",
            edge_config(&up.url(), &tokens, "")
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let mut paused = spawn_binary(dir.path(), &config("paused-a"));
    let addr = paused.listening();
    let base = format!("http://{addr}");
    eventually("the binary polls", || async {
        role_at(&base).await == Some("poller")
    })
    .await;
    let b = Server::start(&config("fence-b"), &[]).await;
    let c = Server::start(&config("fence-c"), &[]).await;
    b.wait_ready().await;
    c.wait_ready().await;
    let token = secret("client-all-dev");
    let writer = || writer_of(&redis);
    assert!(writer().starts_with("paused-a"), "{}", writer());

    let signal = |sig: &str| {
        let sent = Command::new("kill")
            .args([sig, &paused.pid().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    signal("-STOP");
    eventually("another instance polls", || async {
        role(&b).await == "poller" || role(&c).await == "poller"
    })
    .await;
    up.set_enabled("development", "simple.on", false);
    eventually("the change everywhere but the paused one", || async {
        serving_the_change(&[&b, &c], &token).await == 2 && writer().starts_with("fence-")
    })
    .await;
    let new_writer = writer();

    signal("-CONT");
    until_the_woken_one_follows(&base, [&b, &c], &token, || {
        assert_eq!(
            writer(),
            new_writer,
            "the paused poller's snapshot was written back"
        )
    })
    .await;
    let fenced = metric_at(
        &addr,
        "flagpost_store_operations_total{operation=\"write\",outcome=\"fenced\"}",
    )
    .await;
    #[allow(clippy::print_stderr)] // whether the woken poller tried to write before it knew
    {
        eprintln!("fencing: the woken poller's refused writes: {fenced:?}");
    }
    assert_eq!(writer(), new_writer);
    // Woken, it published what it polled before it knew it had lost the lease: refused.
    assert!(
        fenced.unwrap_or(0.0) >= 1.0,
        "the woken poller never tried to write: {fenced:?}"
    );
}

/// Waits until the woken instance at `base` follows and serves the change, checking at each
/// turn that `others` never serve the older snapshot and that `check` holds.
async fn until_the_woken_one_follows(
    base: &str,
    others: [&Server; 2],
    token: &str,
    check: impl Fn(),
) {
    // Until the woken instance knows it follows (and serves the change), nothing goes back.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        check();
        for s in others {
            let (_, _, body) = client_body(s, token).await;
            assert_eq!(
                enabled(&body, "simple.on"),
                Some(false),
                "an older snapshot served"
            );
        }
        let served = client()
            .get(format!("{base}/api/client/features"))
            .header("Authorization", token)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let served: serde_json::Value = serde_json::from_slice(&served).unwrap_or_default();
        if role_at(base).await == Some("follower") && enabled(&served, "simple.on") == Some(false) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the woken instance never followed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Which instance wrote the development snapshot in the `fence` namespace.
fn writer_of(redis: &Node) -> String {
    redis
        .query(&["HGET", "flagpost:{fence}:env:development", "writer"])
        .unwrap_or_default()
}

/// The binary with `config`, listening on a port of its own.
fn spawn_binary(dir: &std::path::Path, config: &str) -> Binary {
    let path = dir.join("paused.toml");
    let listen = "[server]\ninterface = \"127.0.0.1\"\nport = 0\nshutdown_delay = \"0s\"\n";
    std::fs::write(&path, format!("{config}\n{listen}")).unwrap();
    let mut command = crate::cli::flagpost();
    command.arg("--config").arg(&path);
    Binary::spawn(command)
}

/// The fleet role the instance at `base` reports in its metrics.
async fn role_at(base: &str) -> Option<&'static str> {
    let text = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    ["poller", "follower", "solo"]
        .into_iter()
        .find(|r| text.contains(&format!("flagpost_fleet_role{{role=\"{r}\"}} 1")))
}
