//! The fleet on the Redis teams run with high availability, all real processes started here:
//! a primary, a replica and three Sentinels (`redis-server --sentinel`), and a six-node Redis
//! Cluster made with `redis-cli --cluster create`. In each, the node holding the fleet's keys is
//! killed while SDK requests keep coming: no request fails, one poller is elected again, and a
//! change upstream reaches every instance after it.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::edge::edge_config;
use crate::fleet::{client_body, enabled, role};
use crate::harness::*;
use crate::redis::*;
use crate::upstream::{secret, FakeUpstream};

/// SDK requests to every instance, every 20 ms, until stopped; counts the ones not answered 200.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    failed: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
}

impl Traffic {
    fn start(servers: &[&Server], token: &str) -> Traffic {
        let t = Traffic {
            stop: Arc::new(AtomicBool::new(false)),
            failed: Arc::new(AtomicU64::new(0)),
            sent: Arc::new(AtomicU64::new(0)),
        };
        for s in servers {
            let url = s.url("/api/client/features");
            let (stop, failed, sent, token) = (
                t.stop.clone(),
                t.failed.clone(),
                t.sent.clone(),
                token.to_string(),
            );
            tokio::spawn(async move {
                let c = client();
                while !stop.load(Ordering::Relaxed) {
                    let ok = c
                        .get(&url)
                        .header("Authorization", &token)
                        .send()
                        .await
                        .is_ok_and(|r| r.status() == 200);
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !ok {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            });
        }
        t
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn finish(&self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Three instances on `store` (a `[store]` body), one poller among them.
pub async fn fleet(up: &FakeUpstream, store: &str) -> Vec<Server> {
    let tokens = vec![secret("client-all-dev")];
    let mut servers = Vec::new();
    for name in ["ha-a", "ha-b", "ha-c"] {
        let toml = format!(
            "instance_id = \"{name}\"\n{}\n[store]\n{store}\nlease = \"1s\"\ntimeout = \"300ms\"\n",
            edge_config(&up.url(), &tokens, "")
        );
        let s = Server::start(&toml, &[]).await;
        s.wait_ready().await;
        servers.push(s);
    }
    eventually("one poller", || async {
        let mut pollers = 0;
        for s in &servers {
            pollers += usize::from(role(s).await == "poller");
        }
        pollers == 1
    })
    .await;
    servers
}

/// How many of `servers` serve `simple.on` switched off.
pub async fn serving_the_change(servers: &[&Server], token: &str) -> usize {
    let mut seen = 0;
    for s in servers {
        let (_, _, body) = client_body(s, token).await;
        seen += usize::from(enabled(&body, "simple.on") == Some(false));
    }
    seen
}

/// Switches `simple.on` off upstream and waits until every one of `servers` serves it.
pub async fn a_change_reaches(up: &FakeUpstream, servers: &[Server], token: &str) {
    up.set_enabled("development", "simple.on", false);
    let all: Vec<&Server> = servers.iter().collect();
    eventually("the change on every instance", || async {
        serving_the_change(&all, token).await == all.len()
    })
    .await;
}

/// The outcomes a failover must have: no failed request, one poller again (how long it took is
/// returned), and a change upstream reaching every instance.
pub async fn through_failover(
    shape: &str,
    up: &FakeUpstream,
    servers: &[Server],
    kill: impl FnOnce(),
) -> Duration {
    let token = secret("client-all-dev");
    let refs: Vec<&Server> = servers.iter().collect();
    let traffic = Traffic::start(&refs, &token);
    eventually("requests flowing", || async { traffic.sent() >= 10 }).await;
    let killed = Instant::now();
    kill();
    // The failure is seen (a store call fails somewhere), then one poller again with every
    // other instance following, Redis answering lease calls again.
    let failed_before = store_failures(servers).await;
    eventually("a store call failing", || async {
        store_failures(servers).await > failed_before
    })
    .await;
    let ok_after_failure = lease_calls(servers, "ok").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut repolled = None;
    while Instant::now() < deadline {
        let roles = roles_of(servers).await;
        let one_poller = roles.iter().filter(|r| **r == "poller").count() == 1
            && roles.iter().filter(|r| **r == "follower").count() == servers.len() - 1;
        if one_poller && lease_calls(servers, "ok").await >= ok_after_failure + 6.0 {
            repolled = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(repolled) = repolled else {
        let roles = roles_of(servers).await;
        panic!("one poller again after the failover: roles {roles:?}");
    };
    up.set_enabled("development", "simple.on", false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while serving_the_change(&refs, &token).await < refs.len() {
        assert!(
            Instant::now() < deadline,
            "the change did not reach every instance"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reached = killed.elapsed();
    let (sent, failed) = traffic.finish();
    #[allow(clippy::print_stderr)] // the measured failover, for benches/RESULTS.md
    {
        eprintln!(
        "{shape} failover: one poller again after {repolled:?}, the change everywhere after {reached:?}, \
         {failed} of {sent} requests failed"
    );
    }
    assert_eq!(
        failed, 0,
        "requests failed during the failover ({sent} sent)"
    );
    assert!(sent > 100, "{sent}");
    repolled
}

async fn roles_of(servers: &[Server]) -> Vec<&'static str> {
    let mut roles = Vec::new();
    for s in servers {
        roles.push(role(s).await);
    }
    roles
}

/// Lease calls with `outcome`, summed over every instance.
async fn lease_calls(servers: &[Server], outcome: &str) -> f64 {
    let series =
        format!("flagpost_store_operations_total{{operation=\"lease\",outcome=\"{outcome}\"}}");
    let mut sum = 0.0;
    for s in servers {
        sum += metric(s, &series).await.unwrap_or(0.0);
    }
    sum
}

/// Store calls of any kind that failed (connecting, the lease, reads...), on every instance.
async fn store_failures(servers: &[Server]) -> f64 {
    let mut sum = 0.0;
    for s in servers {
        let text = metrics_text(s, "/metrics").await.unwrap_or_default();
        sum += text
            .lines()
            .filter(|l| l.starts_with("flagpost_store_operations_total{"))
            .filter(|l| l.contains("outcome=\"error\"") || l.contains("outcome=\"timeout\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
    }
    sum
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_sentinel_follows_the_primary_through_a_failover() {
    let up = FakeUpstream::start().await;
    // Passwords everywhere: the data nodes want one, the Sentinels want their own.
    let data_pw = "sentinel-data-pw-5";
    let mut primary = Node::start_auth(&[], data_pw);
    let replica = Node::start_auth(
        &["--replicaof", "127.0.0.1", &primary.port.to_string()],
        data_pw,
    );
    replica.until_replicating().await;
    let sentinels: Vec<Node> = (0..3)
        .map(|_| Node::sentinel_auth(primary.port, "sentinel-own-pw-6", data_pw))
        .collect();
    until_the_sentinels_know_each_other(&sentinels).await;
    let urls: Vec<String> = sentinels
        .iter()
        .map(|s| format!("redis://:sentinel-own-pw-6@127.0.0.1:{}", s.port))
        .collect();
    let store = format!(
        "redis_url = \"{}\"\nmode = \"sentinel\"\nsentinel_master = \"fleetmaster\"\ndata_password = \"{data_pw}\"",
        urls.join(",")
    );
    let servers = fleet(&up, &store).await;
    // The fleet's keys are on the primary.
    assert!(primary
        .query(&["KEYS", "flagpost:*"])
        .is_some_and(|k| k.contains("lease")));
    let took = through_failover("sentinel", &up, &servers, || primary.kill()).await;
    assert!(
        replica
            .query(&["ROLE"])
            .is_some_and(|r| r.starts_with("master")),
        "the replica was promoted"
    );
    assert!(took < Duration::from_secs(15), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_redis_cluster_survives_a_master_failing_over() {
    let up = FakeUpstream::start().await;
    let mut nodes: Vec<Node> = (0..6)
        .map(|_| {
            Node::start(&[
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "1000",
            ])
        })
        .collect();
    let addresses: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let created = Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addresses)
        .args(["--cluster-replicas", "1", "--cluster-yes"])
        .output()
        .expect("redis-cli is installed");
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stdout)
    );
    eventually("the cluster up", || async {
        nodes.iter().all(|n| {
            n.query(&["CLUSTER", "INFO"])
                .is_some_and(|i| i.contains("cluster_state:ok"))
        })
    })
    .await;
    // Every replica in sync with its master: an unsynced replica refuses to fail over.
    eventually("the replicas in sync", || async {
        nodes.iter().all(|n| {
            n.query(&["INFO", "replication"])
                .is_some_and(|i| i.contains("role:master") || i.contains("master_link_status:up"))
        })
    })
    .await;
    let urls: Vec<String> = nodes.iter().map(Node::url).collect();
    let store = format!(
        "redis_url = \"{}\"\nmode = \"cluster\"\nnamespace = \"ha\"",
        urls.join(",")
    );
    let servers = fleet(&up, &store).await;
    // Every key of the fleet is in one slot: find the master holding it.
    let slot: u16 = nodes[0]
        .query(&["CLUSTER", "KEYSLOT", "flagpost:{ha}:lease"])
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let owner = nodes
        .iter()
        .position(|n| {
            n.query(&["CLUSTER", "NODES"]).is_some_and(|text| {
                text.lines()
                    .any(|l| l.contains("myself") && l.contains("master") && owns(l, slot))
            })
        })
        .expect("a master holds the slot");
    let keys = nodes[owner].query(&["KEYS", "flagpost:{ha}:*"]).unwrap();
    assert!(keys.contains("lease") && keys.contains("env:"), "{keys}");
    let took = through_failover("cluster", &up, &servers, || nodes[owner].kill()).await;
    assert!(took < Duration::from_secs(15), "{took:?}");
}

/// Whether a `CLUSTER NODES` line's slot ranges include `slot`.
pub fn owns(line: &str, slot: u16) -> bool {
    line.split_whitespace().skip(8).any(|range| {
        let mut ends = range.splitn(2, '-').map(|n| n.parse::<u16>());
        match (ends.next(), ends.next()) {
            (Some(Ok(a)), Some(Ok(b))) => (a..=b).contains(&slot),
            (Some(Ok(a)), None) => a == slot,
            _ => false,
        }
    })
}
