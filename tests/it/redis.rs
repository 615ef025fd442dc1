//! The Redis processes the fleet tests start on free ports, each in its own folder: a
//! single `redis-server` (`Redis`), and the nodes of a Sentinel set or a Cluster (`Node`).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;

/// A `redis-server` of the test's own: a free port, a temporary folder, no persistence.
pub struct Redis {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// Extra `redis-server` arguments (passwords, ACL users).
    pub extra: Vec<String>,
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

    pub fn ping(&self) -> Option<()> {
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

/// A `redis-server` (a data node or a Sentinel) of the test's own, in its own folder.
pub struct Node {
    pub child: Option<Child>,
    pub port: u16,
    /// The password `query` authenticates with, if the node wants one.
    pub auth: Option<String>,
    /// The CA `query` trusts when the node speaks only TLS.
    pub tls_ca: Option<String>,
    _dir: tempfile::TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Node {
    /// A data node with extra arguments.
    pub fn start(extra: &[&str]) -> Node {
        // Its cluster bus port (the port + 10000) is free too.
        let port = child_port();
        Node::spawn(port, &["--port", &port.to_string()], extra, None)
    }

    /// `redis-server` on `port` (`listen` says how), no persistence, in its own folder; up.
    fn spawn(port: u16, listen: &[&str], extra: &[&str], tls_ca: Option<String>) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args(listen)
            .args(["--bind", "127.0.0.1"])
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
            tls_ca,
            _dir: dir,
        };
        node.wait_up();
        node
    }

    /// A data node that wants `password` (and gives it to its primary when it replicates).
    pub fn start_auth(extra: &[&str], password: &str) -> Node {
        let mut args = vec!["--requirepass", password, "--masterauth", password];
        args.extend_from_slice(extra);
        Node::start(&args).with_auth(password)
    }

    pub fn with_auth(mut self, password: &str) -> Node {
        self.auth = Some(password.to_string());
        self
    }

    /// A Sentinel watching the primary on `primary` as `fleetmaster`, wanting `own` from its
    /// clients and giving `data` to the data nodes.
    pub fn sentinel_auth(primary: u16, own: &str, data: &str) -> Node {
        let node = Node::sentinel_with(
            primary,
            &format!("requirepass {own}\nsentinel auth-pass fleetmaster {data}\n"),
            None,
        );
        node.with_auth(own)
    }

    /// A data node speaking only TLS (certificates from `tls_files` in `certs`), replicating
    /// over TLS too.
    pub fn start_tls(certs: &std::path::Path, extra: &[&str]) -> Node {
        let port = child_port();
        let f = |name: &str| certs.join(name).display().to_string();
        let tls_port = port.to_string();
        let (cert, key, ca) = (f("redis.pem"), f("redis.key"), f("ca.pem"));
        let listen = [
            "--port",
            "0",
            "--tls-port",
            &tls_port,
            "--tls-cert-file",
            &cert,
            "--tls-key-file",
            &key,
            "--tls-ca-cert-file",
            &ca,
            "--tls-auth-clients",
            "no",
            "--tls-replication",
            "yes",
        ];
        Node::spawn(port, &listen, extra, Some(ca.clone()))
    }

    /// A Sentinel speaking only TLS, reaching the data nodes over TLS.
    pub fn sentinel_tls(primary: u16, certs: &std::path::Path) -> Node {
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
    pub fn sentinel_with(primary: u16, extra: &str, tls_ca: Option<String>) -> Node {
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

    pub fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        // Up: PONG, or a refusal to answer before AUTH.
        while self.query(&["PING"]).is_none() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            #[allow(clippy::disallowed_methods)] // polling a child process, with a deadline
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// One command, its answer as text (`None`: not reachable).
    pub fn query(&self, args: &[&str]) -> Option<String> {
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

    /// Waits until this replica's link to its primary is up.
    pub async fn until_replicating(&self) {
        eventually("the replica in sync", || async {
            self.query(&["INFO", "replication"])
                .is_some_and(|i| i.contains("master_link_status:up"))
        })
        .await;
    }
}

/// A CA, and a server certificate for 127.0.0.1 it issued, as files (PEM).
pub fn tls_files(dir: &std::path::Path) {
    let pki = crate::tls::pki();
    std::fs::write(dir.join("ca.pem"), pki.ca).unwrap();
    std::fs::write(dir.join("redis.pem"), pki.server.0).unwrap();
    std::fs::write(dir.join("redis.key"), pki.server.1).unwrap();
}

/// Waits until each of three Sentinels knows `fleetmaster`'s replica and the other two.
pub async fn until_the_sentinels_know_each_other(sentinels: &[Node]) {
    eventually("the Sentinels know the replica and each other", || async {
        sentinels.iter().all(|s| {
            s.query(&["SENTINEL", "MASTER", "fleetmaster"])
                .is_some_and(|m| {
                    m.contains("num-slaves\n1") && m.contains("num-other-sentinels\n2")
                })
        })
    })
    .await;
}
