//! The backup in an S3 bucket (Unleash Edge's `--s3-bucket-name`), against a real S3 API
//! server: moto in server mode (tests/s3/requirements.txt, installed by .ci/run). flagpost runs
//! as its binary here, because the bucket's credentials and endpoint come from the standard AWS
//! environment, which only a process of its own can be given.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::*;
use crate::upstream::{secret, Behaviour, FakeUpstream};

const BUCKET: &str = "flagpost-backup";

/// A moto S3 server of the test's own on a free port.
struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    fn start() -> Moto {
        let server = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/s3/.venv/bin/moto_server"
        );
        // A port found free may be taken before moto binds it: another port is tried then.
        for _ in 0..3 {
            let port = child_port();
            let mut child = Command::new(server)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("moto_server is installed in tests/s3/.venv (.ci/run installs it)");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline && child.try_wait().unwrap().is_none() {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Moto { child, port };
                }
                #[allow(clippy::disallowed_methods)] // polling a child process, with a deadline
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("moto_server did not start");
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn create_bucket(&self) {
        let r = client()
            .put(format!("{}/{BUCKET}", self.endpoint()))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }

    /// The objects in the bucket, by key, read with credentials as flagpost writes them.
    async fn objects(&self) -> Vec<(String, String)> {
        use futures_util::TryStreamExt as _;
        use object_store::ObjectStore as _;
        let store = object_store::aws::AmazonS3Builder::new()
            .with_endpoint(self.endpoint())
            .with_allow_http(true)
            .with_bucket_name(BUCKET)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .unwrap();
        let listed: Vec<_> = store.list(None).try_collect().await.unwrap();
        let mut out = Vec::new();
        for meta in listed {
            let bytes = store
                .get(&meta.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            out.push((
                meta.location.to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
        out
    }
}

/// The flagpost binary in edge mode against `upstream`, backing up to moto's bucket.
fn flagpost(moto: &Moto, upstream: &str, tokens: &[String]) -> (Binary, String) {
    let mut command = crate::cli::flagpost();
    command
        .args(["--interface", "127.0.0.1", "--port", "0", "edge"])
        .args(["--upstream-url", upstream, "--tokens", &tokens.join(",")])
        .args([
            "--upstream-request-timeout",
            "1",
            "--upstream-socket-timeout",
            "1",
        ])
        .env("S3_BUCKET_NAME", BUCKET)
        .env("S3_FORCE_PATH_STYLE", "true")
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("SHUTDOWN_DELAY", "0s");
    let mut binary = Binary::spawn(command);
    let addr = binary.listening();
    (binary, format!("http://{addr}"))
}

async fn get_at(base: &str, path: &str, token: &str) -> (u16, serde_json::Value) {
    let r = client()
        .get(format!("{base}{path}"))
        .header("Authorization", token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let body = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap_or_default();
    (status, body)
}

async fn wait_ready(base: &str) {
    eventually("ready", || async {
        client()
            .get(format!("{base}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
}

/// The folder's guarantees, in a bucket: features and token scopes are written there (token
/// digests only, never a secret); restarted while upstream is down, flagpost starts from the
/// bucket and serves exactly what it served before; a token it refused before is still
/// refused, and a startup token the bucket does not know is not served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_in_an_s3_bucket_restores_without_widening() {
    let moto = Moto::start();
    moto.create_bucket().await;
    let up = FakeUpstream::start().await;
    let narrow = vec![secret("client-default-dev")];
    let (ok, wide) = (secret("frontend-default-dev"), secret("frontend-all-dev"));

    let (mut first, base) = flagpost(&moto, &up.url(), &narrow);
    wait_ready(&base).await;
    assert_eq!(get_at(&base, "/api/frontend", &wide).await.0, 403);
    let (status, before) = get_at(&base, "/api/frontend?userId=1", &ok).await;
    assert_eq!(status, 200, "{before}");
    assert!(!before["toggles"].as_array().unwrap().is_empty());
    eventually("features and scopes in the bucket", || async {
        let objects = moto.objects().await;
        objects.iter().any(|(k, _)| k.starts_with("features-"))
            && objects.iter().any(|(k, _)| k == "flagpost-state.json")
    })
    .await;
    first.terminate();
    assert!(first.exit_within(Duration::from_secs(20)).success());
    // At shutdown the verdicts of request tokens are written too.
    let objects = moto.objects().await;
    let state = objects
        .iter()
        .find(|(k, _)| k == "flagpost-state.json")
        .unwrap();
    assert!(state.1.contains("\"frontend\""), "{}", state.1);
    for (key, body) in moto.objects().await {
        for token in [&narrow[0], &ok, &wide] {
            let secret_part = &token[token.find('.').unwrap() + 1..];
            assert!(!body.contains(secret_part), "{key} holds a token secret");
        }
    }

    up.set(Behaviour::Down);
    let (_second, base) = flagpost(&moto, &up.url(), &narrow);
    wait_ready(&base).await;
    let (status, after) = get_at(&base, "/api/frontend?userId=1", &ok).await;
    assert_eq!((status, &after), (200, &before), "served from the bucket");
    let (status, body) = get_at(&base, "/api/frontend", &wide).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("scope_not_covered"))
    );

    // A startup token the bucket does not know: never validated, not served.
    let other = vec![secret("client-all-dev")];
    let (_third, base) = flagpost(&moto, &up.url(), &other);
    let (status, body) = get_at(&base, "/api/client/features", &other[0]).await;
    assert_eq!(status, 503, "{body}");
    let ready = client().get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(ready.status().as_u16(), 503);
}
