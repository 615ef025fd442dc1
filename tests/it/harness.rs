//! Starts the real flagpost in-process on port 0 and talks to it over HTTP.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flagpost::config::{Config, Invocation};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running flagpost.
pub struct Server {
    pub addr: SocketAddr,
    /// The HTTPS address, when TLS is on.
    pub tls_addr: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), flagpost::RunError>>>,
}

impl Server {
    /// Starts flagpost with `config_toml` (relative paths resolve in a fresh temporary folder,
    /// where `files` are written first).
    pub async fn start(config_toml: &str, files: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let config = config_in(dir.path(), config_toml);
        Server::start_with(config, dir).await
    }

    pub async fn start_with(config: Config, dir: tempfile::TempDir) -> Server {
        Server::start_on(config, dir, "127.0.0.1:0").await
    }

    /// Starts flagpost with its plain HTTP listener bound to `bind` (and an HTTPS one on
    /// 127.0.0.1, when the configuration enables TLS).
    pub async fn start_on(config: Config, dir: tempfile::TempDir, bind: &str) -> Server {
        let listener = tokio::net::TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let https = match config.server.tls {
            Some(_) => Some(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap()),
            None => None,
        };
        let tls_addr = https.as_ref().map(|l| l.local_addr().unwrap());
        let listeners = flagpost::Listeners {
            http: Some(listener),
            https,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(flagpost::run_with(config, listeners, async {
            let _ = stopped.await;
        }));
        Server {
            addr,
            tls_addr,
            dir,
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Sends the shutdown signal without waiting.
    pub fn signal_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Shuts down and waits for `run` to return.
    pub async fn stop(mut self) -> Result<(), flagpost::RunError> {
        self.signal_shutdown();
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(Duration::from_secs(20), handle)
            .await
            .expect("flagpost did not stop within 20s")
            .unwrap()
    }

    /// Waits for `run` to return by itself (a fatal startup error), without a shutdown signal.
    pub async fn exited(mut self) -> Result<(), flagpost::RunError> {
        let handle = self.handle.take().unwrap();
        tokio::time::timeout(Duration::from_secs(20), handle)
            .await
            .expect("flagpost did not exit within 20s")
            .unwrap()
    }

    /// Waits until `/ready` answers 200.
    pub async fn wait_ready(&self) {
        let url = self.url("/ready");
        eventually("flagpost ready", || async {
            client()
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal_shutdown();
    }
}

/// Builds a `Config` from TOML text, as `flagpost --config FILE` would.
pub fn config_in(dir: &Path, config_toml: &str) -> Config {
    let path = dir.join("config.toml");
    std::fs::write(&path, config_toml).unwrap();
    let mut config = match Config::from_args(["flagpost", "--config", path.to_str().unwrap()]) {
        Ok(Invocation::Serve(c)) => c,
        other => panic!("bad test config: {other:?}"),
    };
    // Tests stop servers often: no pre-stop delay unless a test asks for one.
    if !config_toml.contains("shutdown_delay") {
        config.server.shutdown_delay = Duration::ZERO;
    }
    config
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Polls `check` until it returns true; fails the test after 10 seconds.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GET with a token; returns status, headers and body as JSON (Null when not JSON).
pub async fn get(
    server: &Server,
    path: &str,
    token: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let mut req = client().get(server.url(path));
    if let Some(t) = token {
        req = req.header("Authorization", t);
    }
    into_parts(req.send().await.unwrap()).await
}

pub async fn post(
    server: &Server,
    path: &str,
    token: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let mut req = client()
        .post(server.url(path))
        .header("content-type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.header("Authorization", t);
    }
    into_parts(req.send().await.unwrap()).await
}

pub async fn into_parts(
    r: reqwest::Response,
) -> (u16, reqwest::header::HeaderMap, serde_json::Value) {
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let bytes = r.bytes().await.unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, headers, json)
}

/// Names of the toggles in a Frontend API response.
pub fn toggle_names(body: &serde_json::Value) -> Vec<String> {
    body["toggles"]
        .as_array()
        .unwrap_or_else(|| panic!("no toggles in {body}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

/// Names of the features in a Client API response.
pub fn feature_names(body: &serde_json::Value) -> Vec<String> {
    body["features"]
        .as_array()
        .unwrap_or_else(|| panic!("no features in {body}"))
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

/// The text a metrics endpoint (`/metrics` or `/internal-backstage/metrics`) answers (`None`:
/// no answer).
pub async fn metrics_text(server: &Server, path: &str) -> Option<String> {
    client()
        .get(server.url(path))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// The value of one Prometheus sample line (`name{labels} value`), if present.
pub async fn metric(server: &Server, series: &str) -> Option<f64> {
    value_of(&metrics_text(server, "/metrics").await?, series)
}

/// One series' value from the `/metrics` of a flagpost at `addr` (a child process).
pub async fn metric_at(addr: &str, series: &str) -> Option<f64> {
    let url = format!("http://{addr}/metrics");
    let text = client().get(url).send().await.ok()?.text().await.ok()?;
    value_of(&text, series)
}

fn value_of(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The flagpost binary as a child process (JSON logs), its log read line by line.
pub struct Binary {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    reader: Option<std::thread::JoinHandle<()>>,
    log: Vec<String>,
}

impl Binary {
    /// Starts `command` (the flagpost binary with its arguments) with JSON logs on stderr.
    pub fn spawn(mut command: std::process::Command) -> Binary {
        use std::io::{BufRead, BufReader};
        let mut child = command
            .env("LOG_FORMAT", "json")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Binary {
            child,
            lines,
            reader: Some(reader),
            log: Vec::new(),
        }
    }

    /// Waits (up to 20 seconds) for a log line whose message is `message`; returns it as JSON.
    pub fn wait_for(&mut self, message: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let line = self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .unwrap_or_else(|_| panic!("no log line {message:?} in:\n{}", self.log.join("\n")));
            self.log.push(line.clone());
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
            if v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
            {
                return v;
            }
        }
    }

    /// The address from the "flagpost listening" line.
    pub fn listening(&mut self) -> String {
        self.wait_for("flagpost listening")["addr"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The process id (to send it signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL): nothing is given up or written.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn terminate(&self) {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    }

    /// Waits for the process to exit, failing the test after `limit`.
    pub fn exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < limit,
                "flagpost still running after {limit:?}"
            );
            #[allow(clippy::disallowed_methods)] // polling a child process, with a deadline
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every line logged so far (while it runs).
    pub fn lines_so_far(&mut self) -> &[String] {
        self.log.extend(self.lines.try_iter());
        &self.log
    }

    /// Everything the process logged (call after it exited).
    pub fn log(mut self) -> String {
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
        self.log.extend(self.lines.try_iter());
        self.log.join("\n")
    }
}

impl Drop for Binary {
    /// A test that fails half-way leaves no flagpost running behind it.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `POST /api/frontend` with the body `{"userId":"alice"}`, of which only the first 5 bytes are
/// sent: the request stays in the handler, waiting for its body, until [`finish_post`].
pub async fn half_sent_post(addr: SocketAddr, token: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/frontend HTTP/1.1\r\nHost: x\r\nAuthorization: {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        ALICE.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&ALICE[..5]).await.unwrap();
    conn
}

const ALICE: &[u8] = br#"{"userId":"alice"}"#;

/// Sends the rest of a [`half_sent_post`] body; returns the whole response.
pub async fn finish_post(mut conn: tokio::net::TcpStream) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    conn.write_all(&ALICE[5..]).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut response))
        .await
        .expect("response in time")
        .unwrap();
    String::from_utf8_lossy(&response).to_string()
}

/// A port for a child server of a test (redis, prometheus, moto). Ports from `bind(:0)` are
/// ephemeral ones, which the system may hand to any outgoing connection between the check and
/// the child's bind, or while a child restarts on its port; these are below Linux's ephemeral
/// range (32768-60999), each given out once per run, and checked free. A cluster node's bus
/// port (the port + 10000) is below that range too.
pub fn child_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let offset = (std::process::id().wrapping_mul(97).wrapping_add(n)) % 12_000;
        let port = 10_000 + offset as u16;
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
}
