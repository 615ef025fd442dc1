//! Metrics leaving the process: Prometheus remote write into a real `prometheus` (Debian's
//! package, with its remote-write receiver on and basic authentication), queried back.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::offline::{config, FEATURES, FRONTEND_DEFAULT_DEV};

const USER: &str = "flagpost";
const PASSWORD: &str = "remote-write-pass-41";
/// bcrypt of PASSWORD (cost 4: Prometheus checks it on every request).
const PASSWORD_HASH: &str = "$2b$04$FiN6QNJkJviRp1zodfy/TeI5HbI5FkN6P/QiwYzIAKYFctFnAnDn6";

/// A `prometheus` of the test's own: a free port, a temporary folder, the remote-write
/// receiver on, every request behind basic authentication.
struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start() -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("prometheus.yml"),
            "global:\n  scrape_interval: 1m\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("web.yml"),
            format!("basic_auth_users:\n  {USER}: '{PASSWORD_HASH}'\n"),
        )
        .unwrap();
        // The port is found free, then given to prometheus: another process may take it in
        // between, so a start that does not come up is tried again on another port.
        for _ in 0..3 {
            let port = child_port();
            let mut child = Command::new("prometheus")
                .arg(format!(
                    "--config.file={}",
                    dir.path().join("prometheus.yml").display()
                ))
                .arg(format!(
                    "--web.config.file={}",
                    dir.path().join("web.yml").display()
                ))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--web.enable-remote-write-receiver")
                .arg("--log.level=warn")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("prometheus is installed (.ci/run installs it)");
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                if ready(port) {
                    return Prometheus {
                        child,
                        port,
                        _dir: dir,
                    };
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("prometheus did not start");
    }

    fn write_url(&self) -> String {
        format!("http://127.0.0.1:{}/api/v1/write", self.port)
    }

    /// The values of an instant query's result series.
    async fn query(&self, promql: &str) -> Vec<f64> {
        let r = client()
            .get(format!("http://127.0.0.1:{}/api/v1/query", self.port))
            .basic_auth(USER, Some(PASSWORD))
            .query(&[("query", promql)])
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        body["data"]["result"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .filter_map(|s| s["value"][1].as_str()?.parse().ok())
            .collect()
    }
}

/// Whether prometheus answers `/-/ready` (after a short wait: a child process is polled).
fn ready(port: u16) -> bool {
    use std::io::{Read as _, Write as _};
    #[allow(clippy::disallowed_methods)] // polling a child process, with a deadline
    std::thread::sleep(Duration::from_millis(100));
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    // Basic flagpost:remote-write-pass-41
    let req = "GET /-/ready HTTP/1.0\r\nHost: x\r\n\
               Authorization: Basic ZmxhZ3Bvc3Q6cmVtb3RlLXdyaXRlLXBhc3MtNDE=\r\n\r\n";
    let mut answer = String::new();
    s.write_all(req.as_bytes()).is_ok()
        && s.read_to_string(&mut answer).is_ok()
        && answer.starts_with("HTTP/1.0 200")
}

fn remote_write(url: &str, user: &str, password: &str) -> String {
    config(&format!(
        "\n[remote_write]\nurl = \"{url}\"\ninterval = \"1s\"\nusername = \"{user}\"\npassword = \"{password}\"\n"
    ))
}

/// Unleash Edge's `--prometheus-remote-write-url`: flagpost's metrics arrive in a real
/// Prometheus through its remote-write receiver, labelled with the app name and instance id,
/// counters, gauges and histograms alike; a wrong password is refused by Prometheus and counted,
/// and flagpost serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_pushed_into_a_real_prometheus() {
    let prom = Prometheus::start();
    let good = remote_write(&prom.write_url(), USER, PASSWORD).replace(
        "mode = \"offline\"",
        "mode = \"offline\"\napp_name = \"rw-app\"\ninstance_id = \"rw-1\"",
    );
    let s = Server::start(&good, &[("features.json", FEATURES)]).await;
    s.wait_ready().await;
    for _ in 0..3 {
        assert_eq!(
            get(&s, "/api/frontend", Some(FRONTEND_DEFAULT_DEV)).await.0,
            200
        );
    }
    eventually("the frontend requests in Prometheus", || async {
        let v = prom
            .query("sum(flagpost_http_requests_total{app_name=\"rw-app\",instance_id=\"rw-1\",route=\"/api/frontend\",status=\"2xx\"})")
            .await;
        v.first().is_some_and(|v| *v >= 3.0)
    })
    .await;
    assert_eq!(
        prom.query("flagpost_ready{app_name=\"rw-app\"}").await,
        [1.0]
    );
    let inf = prom
        .query("flagpost_http_request_duration_seconds_bucket{app_name=\"rw-app\",route=\"/api/frontend\",le=\"+Inf\"}")
        .await;
    assert!(inf.first().is_some_and(|v| *v >= 3.0), "{inf:?}");
    assert!(
        metric(&s, "flagpost_remote_write_total{outcome=\"ok\"}")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );

    let wrong = remote_write(&prom.write_url(), USER, "not-the-password-99").replace(
        "mode = \"offline\"",
        "mode = \"offline\"\napp_name = \"rw-wrong\"",
    );
    let bad = Server::start(&wrong, &[("features.json", FEATURES)]).await;
    bad.wait_ready().await;
    eventually("a refused push counted", || async {
        metric(&bad, "flagpost_remote_write_total{outcome=\"refused\"}")
            .await
            .is_some()
    })
    .await;
    assert!(prom
        .query("flagpost_ready{app_name=\"rw-wrong\"}")
        .await
        .is_empty());
    assert_eq!(
        get(&bad, "/api/frontend", Some(FRONTEND_DEFAULT_DEV))
            .await
            .0,
        200
    );

    // Prometheus gone: pushes fail as unreachable, flagpost serves on.
    drop(prom);
    eventually("an unreachable push counted", || async {
        metric(&s, "flagpost_remote_write_total{outcome=\"unreachable\"}")
            .await
            .is_some()
    })
    .await;
    assert_eq!(
        get(&s, "/api/frontend", Some(FRONTEND_DEFAULT_DEV)).await.0,
        200
    );
}
