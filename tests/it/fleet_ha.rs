//! The fleet on the Redis teams run with high availability, all real processes started here:
//! a primary, a replica and three Sentinels (`redis-server --sentinel`), and a six-node Redis
//! Cluster made with `redis-cli --cluster create`. In each, the node holding the fleet's keys is
//! killed while SDK requests keep coming: no request fails, one poller is elected again, and a
//! change upstream reaches every instance after it.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::edge::edge_config;
use crate::fleet::{client_body, enabled, role};
use crate::harness::*;
use crate::upstream::{secret, FakeUpstream};

/// A `redis-server` (a data node or a Sentinel) of the test's own, in its own folder.
struct Node {
    child: Option<Child>,
    port: u16,
    /// The password `query` authenticates with, if the node wants one.
    auth: Option<String>,
    /// The CA `query` trusts when the node speaks only TLS.
    tls_ca: Option<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Node {
    /// A data node with extra arguments.
    fn start(extra: &[&str]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        // Its cluster bus port (the port + 10000) is free too.
        let port = child_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (.ci/run installs it)");
        let node = Node {
            child: Some(child),
            port,
            auth: None,
            tls_ca: None,
            _dir: dir,
        };
        node.wait_up();
        node
    }

    /// A data node that wants `password` (and gives it to its primary when it replicates).
    fn start_auth(extra: &[&str], password: &str) -> Node {
        let mut args = vec!["--requirepass", password, "--masterauth", password];
        args.extend_from_slice(extra);
        Node::start(&args).with_auth(password)
    }

    fn with_auth(mut self, password: &str) -> Node {
        self.auth = Some(password.to_string());
        self
    }

    /// A Sentinel watching the primary on `primary` as `fleetmaster`, wanting `own` from its
    /// clients and giving `data` to the data nodes.
    fn sentinel_auth(primary: u16, own: &str, data: &str) -> Node {
        let node = Node::sentinel_with(
            primary,
            &format!("requirepass {own}\nsentinel auth-pass fleetmaster {data}\n"),
            None,
        );
        node.with_auth(own)
    }

    /// A data node speaking only TLS (certificates from `tls_files` in `certs`), replicating
    /// over TLS too.
    fn start_tls(certs: &std::path::Path, extra: &[&str]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let port = child_port();
        let f = |name: &str| certs.join(name).display().to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--tls-cert-file",
                &f("redis.pem"),
                "--tls-key-file",
                &f("redis.key"),
            ])
            .args([
                "--tls-ca-cert-file",
                &f("ca.pem"),
                "--tls-auth-clients",
                "no",
            ])
            .args([
                "--tls-replication",
                "yes",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--loglevel", "warning"])
            .arg("--dir")
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let node = Node {
            child: Some(child),
            port,
            auth: None,
            tls_ca: Some(f("ca.pem")),
            _dir: dir,
        };
        node.wait_up();
        node
    }

    /// A Sentinel speaking only TLS, reaching the data nodes over TLS.
    fn sentinel_tls(primary: u16, certs: &std::path::Path) -> Node {
        let f = |name: &str| certs.join(name).display().to_string();
        Node::sentinel_with(
            primary,
            &format!(
                "tls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\ntls-auth-clients no\ntls-replication yes\n",
                f("redis.pem"),
                f("redis.key"),
                f("ca.pem")
            ),
            Some(f("ca.pem")),
        )
    }

    /// A Sentinel watching the primary on `primary` as `fleetmaster`, with `extra` config.
    fn sentinel_with(primary: u16, extra: &str, tls_ca: Option<String>) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let port = child_port();
        let conf = dir.path().join("sentinel.conf");
        let listen = match tls_ca {
            Some(_) => format!("port 0\ntls-port {port}"),
            None => format!("port {port}"),
        };
        std::fs::write(
            &conf,
            format!(
                "{listen}\nbind 127.0.0.1\ndir {}\nsentinel monitor fleetmaster 127.0.0.1 {primary} 2\n\
                 sentinel down-after-milliseconds fleetmaster 1000\nsentinel failover-timeout fleetmaster 5000\n\
                 sentinel parallel-syncs fleetmaster 1\n{extra}",
                dir.path().display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs as a Sentinel");
        let node = Node {
            child: Some(child),
            port,
            auth: None,
            tls_ca,
            _dir: dir,
        };
        node.wait_up();
        node
    }

    fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        // Up: PONG, or a refusal to answer before AUTH.
        while self.query(&["PING"]).is_none() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            #[allow(clippy::disallowed_methods)] // polling a child process, with a deadline
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One command, its answer as text (`None`: not reachable).
    fn query(&self, args: &[&str]) -> Option<String> {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string()]);
        if let Some(password) = &self.auth {
            cmd.args(["-a", password, "--no-auth-warning"]);
        }
        if let Some(ca) = &self.tls_ca {
            cmd.args(["--tls", "--cacert", ca]);
        }
        let out = cmd.args(args).output().ok()?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success() && !text.contains("Could not connect")).then_some(text)
    }
}

/// SDK requests to every instance, every 20 ms, until stopped; counts the ones not answered 200.
struct Traffic {
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

    fn finish(&self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        (
            self.sent.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
        )
    }
}

/// Three instances on `store` (a `[store]` body), one poller among them.
async fn fleet(up: &FakeUpstream, store: &str) -> Vec<Server> {
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
async fn serving_the_change(servers: &[&Server], token: &str) -> usize {
    let mut seen = 0;
    for s in servers {
        let (_, _, body) = client_body(s, token).await;
        seen += usize::from(enabled(&body, "simple.on") == Some(false));
    }
    seen
}

/// Switches `simple.on` off upstream and waits until every one of `servers` serves it.
async fn a_change_reaches(up: &FakeUpstream, servers: &[Server], token: &str) {
    up.set_enabled("development", "simple.on", false);
    let all: Vec<&Server> = servers.iter().collect();
    eventually("the change on every instance", || async {
        serving_the_change(&all, token).await == all.len()
    })
    .await;
}

/// The outcomes a failover must have: no failed request, one poller again (how long it took is
/// returned), and a change upstream reaching every instance.
async fn through_failover(
    shape: &str,
    up: &FakeUpstream,
    servers: &[Server],
    kill: impl FnOnce(),
) -> Duration {
    let token = secret("client-all-dev");
    let refs: Vec<&Server> = servers.iter().collect();
    let traffic = Traffic::start(&refs, &token);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let killed = Instant::now();
    kill();
    // The failure is seen (a lease call fails somewhere), then one poller again with every
    // other instance following, Redis answering lease calls again.
    let lease = |outcome: &'static str| {
        let series =
            format!("flagpost_store_operations_total{{operation=\"lease\",outcome=\"{outcome}\"}}");
        async move {
            let mut sum = 0.0;
            for s in servers {
                sum += metric(s, &series).await.unwrap_or(0.0);
            }
            sum
        }
    };
    // Store calls of any kind that failed (connecting, the lease, reads...), on every instance.
    let failures = || async {
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
    };
    let failed_before = failures().await;
    eventually("a store call failing", || async {
        failures().await > failed_before
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut repolled = None;
    let ok_after_failure = lease("ok").await;
    while Instant::now() < deadline {
        let mut roles = Vec::new();
        for s in servers {
            roles.push(role(s).await);
        }
        let one_poller = roles.iter().filter(|r| **r == "poller").count() == 1
            && roles.iter().filter(|r| **r == "follower").count() == servers.len() - 1;
        if one_poller && lease("ok").await >= ok_after_failure + 6.0 {
            repolled = Some(killed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut roles = Vec::new();
    for s in servers {
        roles.push(role(s).await);
    }
    let repolled =
        repolled.unwrap_or_else(|| panic!("one poller again after the failover: roles {roles:?}"));
    up.set_enabled("development", "simple.on", false);
    let deadline = Instant::now() + Duration::from_secs(30);
    let all: Vec<&Server> = servers.iter().collect();
    loop {
        if serving_the_change(&all, &token).await == all.len() {
            break;
        }
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
    eventually("the replica in sync", || async {
        replica
            .query(&["INFO", "replication"])
            .is_some_and(|i| i.contains("master_link_status:up"))
    })
    .await;
    let sentinels: Vec<Node> = (0..3)
        .map(|_| Node::sentinel_auth(primary.port, "sentinel-own-pw-6", data_pw))
        .collect();
    eventually("the Sentinels know the replica and each other", || async {
        sentinels.iter().all(|s| {
            s.query(&["SENTINEL", "MASTER", "fleetmaster"])
                .is_some_and(|m| {
                    m.contains("num-slaves\n1") && m.contains("num-other-sentinels\n2")
                })
        })
    })
    .await;
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
fn owns(line: &str, slot: u16) -> bool {
    line.split_whitespace().skip(8).any(|range| {
        let mut ends = range.splitn(2, '-').map(|n| n.parse::<u16>());
        match (ends.next(), ends.next()) {
            (Some(Ok(a)), Some(Ok(b))) => (a..=b).contains(&slot),
            (Some(Ok(a)), None) => a == slot,
            _ => false,
        }
    })
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
    let path = dir.path().join("paused.toml");
    let listen = "[server]\ninterface = \"127.0.0.1\"\nport = 0\nshutdown_delay = \"0s\"\n";
    std::fs::write(&path, format!("{}\n{listen}", config("paused-a"))).unwrap();
    let mut command = crate::cli::flagpost();
    command.arg("--config").arg(&path);
    let mut paused = Binary::spawn(command);
    let base = format!("http://{}", paused.listening());
    let role_of_paused = || async {
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
    };
    eventually("the binary polls", || async {
        role_of_paused().await == Some("poller")
    })
    .await;
    let b = Server::start(&config("fence-b"), &[]).await;
    let c = Server::start(&config("fence-c"), &[]).await;
    b.wait_ready().await;
    c.wait_ready().await;
    let token = secret("client-all-dev");
    let writer = || {
        redis
            .query(&["HGET", "flagpost:{fence}:env:development", "writer"])
            .unwrap_or_default()
    };
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
    // Until the woken instance knows it follows (and serves the change), nothing goes back.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert_eq!(
            writer(),
            new_writer,
            "the paused poller's snapshot was written back"
        );
        for s in [&b, &c] {
            let (_, _, body) = client_body(s, &token).await;
            assert_eq!(
                enabled(&body, "simple.on"),
                Some(false),
                "an older snapshot served"
            );
        }
        let served = client()
            .get(format!("{base}/api/client/features"))
            .header("Authorization", &token)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let served: serde_json::Value = serde_json::from_slice(&served).unwrap_or_default();
        if role_of_paused().await == Some("follower")
            && enabled(&served, "simple.on") == Some(false)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the woken instance never followed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let text = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let fenced = text
        .lines()
        .find(|l| {
            l.starts_with("flagpost_store_operations_total{operation=\"write\",outcome=\"fenced\"}")
        })
        .map(|l| l.to_string());
    #[allow(clippy::print_stderr)] // whether the woken poller tried to write before it knew
    {
        eprintln!("fencing: the woken poller's refused writes: {fenced:?}");
    }
    assert_eq!(writer(), new_writer);
    // Woken, it published what it polled before it knew it had lost the lease: refused.
    let count: f64 = fenced
        .as_deref()
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(
        count >= 1.0,
        "the woken poller never tried to write: {fenced:?}"
    );
}

/// A CA, and a server certificate for 127.0.0.1 it issued, as files (PEM).
fn tls_files(dir: &std::path::Path) {
    let pki = crate::hardening::pki();
    std::fs::write(dir.join("ca.pem"), pki.ca).unwrap();
    std::fs::write(dir.join("redis.pem"), pki.server.0).unwrap();
    std::fs::write(dir.join("redis.key"), pki.server.1).unwrap();
}

/// Redis over TLS only (no plain port), an ACL user and the default user off, a private CA
/// given with --redis-ca-certificate-file: the fleet elects one poller and a change reaches
/// every instance; without the CA, nothing connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_redis_over_tls_with_an_acl_user() {
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    tls_files(dir.path());
    let file = |name: &str| dir.path().join(name).display().to_string();
    let port = child_port();
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .args([
            "--tls-cert-file",
            &file("redis.pem"),
            "--tls-key-file",
            &file("redis.key"),
        ])
        .args([
            "--tls-ca-cert-file",
            &file("ca.pem"),
            "--tls-auth-clients",
            "no",
        ])
        .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
        .args(["--user", "default", "off"])
        .args([
            "--user",
            "fleet",
            "on",
            ">tls-fleet-pw-3",
            "~flagpost:*",
            "&*",
            "+@all",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is installed");
    let up_tls = || {
        Command::new("redis-cli")
            .args(["--tls", "--cacert", &file("ca.pem"), "-h", "127.0.0.1"])
            .args([
                "-p",
                &port.to_string(),
                "--user",
                "fleet",
                "--pass",
                "tls-fleet-pw-3",
            ])
            .args(["--no-auth-warning", "PING"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"))
    };
    eventually("redis-server over TLS", || async { up_tls() }).await;
    let store = format!(
        "redis_url = \"rediss://fleet:tls-fleet-pw-3@127.0.0.1:{port}\"\nca_certificate_file = \"{}\"\nnamespace = \"tls\"",
        file("ca.pem")
    );
    let servers = fleet(&up, &store).await;
    let token = secret("client-all-dev");
    a_change_reaches(&up, &servers, &token).await;
    // Without the private CA, the server's certificate is not trusted: nothing connects.
    let tokens = vec![token.clone()];
    let untrusted = format!(
        "instance_id = \"ha-untrusted\"\n{}\n[store]\nredis_url = \"rediss://fleet:tls-fleet-pw-3@127.0.0.1:{port}\"\nnamespace = \"tls\"\nlease = \"1s\"\ntimeout = \"300ms\"\n",
        edge_config(&up.url(), &tokens, "")
    );
    let s = Server::start(&untrusted, &[]).await;
    eventually("alone, without Redis", || async {
        role(&s).await == "solo"
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
}

/// Everything behind Sentinels over TLS only, with a private CA: the data nodes (replicating
/// over TLS), the Sentinels (reaching the data nodes over TLS), and flagpost to both
/// (`rediss://` Sentinel URLs, `store.data_tls`, `store.ca_certificate_file`). The fleet elects
/// one poller and a change reaches every instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_sentinels_over_tls_with_a_private_ca() {
    let up = FakeUpstream::start().await;
    let certs = tempfile::tempdir().unwrap();
    tls_files(certs.path());
    let primary = Node::start_tls(certs.path(), &[]);
    let replica = Node::start_tls(
        certs.path(),
        &["--replicaof", "127.0.0.1", &primary.port.to_string()],
    );
    eventually("the replica in sync over TLS", || async {
        replica
            .query(&["INFO", "replication"])
            .is_some_and(|i| i.contains("master_link_status:up"))
    })
    .await;
    let sentinels: Vec<Node> = (0..3)
        .map(|_| Node::sentinel_tls(primary.port, certs.path()))
        .collect();
    eventually("the Sentinels know the replica and each other", || async {
        sentinels.iter().all(|s| {
            s.query(&["SENTINEL", "MASTER", "fleetmaster"])
                .is_some_and(|m| {
                    m.contains("num-slaves\n1") && m.contains("num-other-sentinels\n2")
                })
        })
    })
    .await;
    let urls: Vec<String> = sentinels
        .iter()
        .map(|s| format!("rediss://127.0.0.1:{}", s.port))
        .collect();
    let store = format!(
        "redis_url = \"{}\"\nmode = \"sentinel\"\nsentinel_master = \"fleetmaster\"\ndata_tls = true\nca_certificate_file = \"{}\"\nnamespace = \"sentinel-tls\"",
        urls.join(","),
        certs.path().join("ca.pem").display()
    );
    let servers = fleet(&up, &store).await;
    let token = secret("client-all-dev");
    a_change_reaches(&up, &servers, &token).await;
    assert!(primary
        .query(&["KEYS", "flagpost:*"])
        .is_some_and(|k| k.contains("sentinel-tls")));
}
