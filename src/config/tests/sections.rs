//! The `[streaming]`, `[store]` and `[backstage]` sections.

use super::*;

#[test]
fn streaming_from_the_file_and_flags() {
    let c = serve(&["--config", write(BASE).path().to_str().unwrap()]);
    assert_eq!(
        c.streaming,
        StreamingSettings {
            max_streams: 10_000,
            heartbeat_interval: Duration::from_secs(20),
            history: 100,
            advertise: false,
        }
    );
    let f = write(&format!(
        "{BASE}[streaming]\nmax_streams = 5\nheartbeat_interval = \"2s\"\nhistory = 7\nadvertise = true\n"
    ));
    let path = f.path().to_str().unwrap();
    let c = serve(&["--config", path]);
    assert_eq!(
        c.streaming,
        StreamingSettings {
            max_streams: 5,
            heartbeat_interval: Duration::from_secs(2),
            history: 7,
            advertise: true,
        }
    );
    let c = serve(&[
        "--config",
        path,
        "--streaming-max-streams",
        "0",
        "--streaming-heartbeat-interval",
        "30",
    ]);
    assert_eq!(c.streaming.max_streams, 0, "0 turns streaming off");
    assert_eq!(c.streaming.heartbeat_interval, Duration::from_secs(30));
    assert_eq!(c.streaming.history, 7, "the file's other keys stay");
    assert!(c.to_redacted_toml().contains("[streaming]"));
    let e = error(&["--config", path, "--streaming-heartbeat-interval", "61s"]);
    assert!(e.contains("streaming.heartbeat_interval"), "{e}");
    let e = error(&["--config", path, "--streaming-history", "0"]);
    assert!(e.contains("streaming.history"), "{e}");
    let c = serve(&[
        "edge",
        "--upstream-url",
        "http://unleash:4242",
        "--tokens",
        "*:development.abc12345678",
        "--streaming",
    ]);
    let Mode::Edge(e) = &c.mode else {
        panic!("not edge")
    };
    assert!(e.streaming);
}

#[test]
fn the_store_from_the_file_and_flags_redacted() {
    let edge = "mode = \"edge\"\n[edge]\nupstream_url = \"http://unleash:4242\"\ntokens = [\"*:development.abc12345678\"]\n";
    let store = |c: &Config| match &c.mode {
        Mode::Edge(e) => e.store.clone(),
        Mode::Offline(_) => panic!("offline"),
    };
    assert!(store(&serve(&["--config", write(edge).path().to_str().unwrap()])).is_none());
    let f = write(&format!(
        "{edge}[store]\nredis_url = \"rediss://fleet:s3cr3t-pw@redis.example:6380/2\"\nlease = \"6s\"\n"
    ));
    let path = f.path().to_str().unwrap();
    let c = serve(&["--config", path]);
    let s = store(&c).unwrap();
    assert_eq!(
        s.redis_urls[0].expose(),
        "rediss://fleet:s3cr3t-pw@redis.example:6380/2"
    );
    assert_eq!(
        s.redis_urls[0].redacted(),
        "rediss://***@redis.example:6380/2"
    );
    assert_eq!(s.mode, RedisMode::Single);
    assert_eq!(
        (s.lease, s.timeout),
        (Duration::from_secs(6), Duration::from_secs(2))
    );
    assert_eq!(s.max_age, Duration::from_secs(7 * 24 * 3600));
    assert_eq!(s.namespace.len(), 16, "derived: {}", s.namespace);
    let text = c.to_redacted_toml();
    assert!(
        !text.contains("s3cr3t-pw") && text.contains("***@redis.example"),
        "{text}"
    );
    assert!(!format!("{c:?}").contains("s3cr3t-pw"));
    // The derived namespace changes with the tokens (and the upstream).
    let other = serve(&[
        "--config",
        path,
        "edge",
        "--tokens",
        "*:development.other12345678",
    ]);
    assert_ne!(store(&other).unwrap().namespace, s.namespace);
    let named = serve(&["--config", path, "edge", "--store-namespace", "team-a"]);
    assert_eq!(store(&named).unwrap().namespace, "team-a");
    for (args, key) in [
        (vec!["edge", "--redis-mode", "ring"], "store.mode"),
        (vec!["edge", "--redis-mode", "cluster"], "store.redis_url"),
        (
            vec!["edge", "--redis-mode", "sentinel"],
            "store.sentinel_master",
        ),
        (
            vec!["edge", "--redis-url", "http://redis:6379"],
            "store.redis_url",
        ),
        (vec!["edge", "--store-namespace", "a:b"], "store.namespace"),
        (vec!["edge", "--store-timeout", "3s"], "store.timeout"),
    ] {
        let mut all = vec!["--config", path];
        all.extend(args);
        let e = error(&all);
        assert!(e.contains(key) && !e.contains("s3cr3t-pw"), "{e}");
    }
    let offline = write(&format!("{BASE}[store]\nredis_url = \"redis://x:1\"\n"));
    assert!(error(&["--config", offline.path().to_str().unwrap()]).contains("edge mode only"));
}

#[test]
fn backstage_token_and_edge_switches() {
    let c = serve(&["--config", write(BASE).path().to_str().unwrap()]);
    assert!(c.backstage.token.is_none());
    assert!(c.backstage.metrics && c.backstage.tokens && c.backstage.instance_data);
    let f = write(&format!(
        "{BASE}[backstage]\ntoken = \"very-secret-backstage-1\"\nfeatures = false\n"
    ));
    let path = f.path().to_str().unwrap();
    let c = serve(&[
        "--config",
        path,
        "--disable-tokens-endpoint",
        "--disable-metrics-endpoint",
    ]);
    let b = &c.backstage;
    assert!(b.token.as_ref().unwrap().ct_eq(b"very-secret-backstage-1"));
    assert!(!b.token.as_ref().unwrap().ct_eq(b"very-secret-backstage-2"));
    assert!(!b.features && !b.tokens && !b.metrics && b.metrics_batch && b.instance_data);
    let text = c.to_redacted_toml();
    assert!(
        !text.contains("very-secret") && !format!("{c:?}").contains("very-secret"),
        "{text}"
    );
    let e = error(&["--config", path, "--backstage-token", "short"]);
    assert!(e.contains("backstage.token"), "{e}");
}

/// `-p` is --port before the subcommand and after `offline`, and --pretrusted-tokens after
/// `edge`, as Unleash Edge reads it; --port works everywhere.
#[test]
fn dash_p_means_what_it_means_in_unleash_edge() {
    let edge = [
        "--config",
        "/dev/null",
        "-p",
        "4100",
        "edge",
        "-u",
        "http://upstream:4242",
        "-t",
        "*:development.abc12345678",
        "-p",
        "kiosk-key-0002@development",
        "-m",
        "30",
        "-f",
        "20",
        "-s",
    ];
    let c = serve(&edge);
    assert_eq!(c.server.listen.unwrap().port(), 4100);
    let Mode::Edge(e) = &c.mode else {
        panic!("not edge")
    };
    assert_eq!(e.client_keys.len(), 1, "{:?}", e.client_keys);
    // Edge's other short forms after `edge`.
    assert_eq!(c.usage.interval, Duration::from_secs(30));
    assert_eq!(e.refresh_interval, Duration::from_secs(20));
    assert!(e.skip_ssl_verification);
    let c = serve(&[
        "--config",
        "/dev/null",
        "edge",
        "--port",
        "4101",
        "-u",
        "http://upstream:4242",
        "-t",
        "*:development.abc12345678",
    ]);
    assert_eq!(c.server.listen.unwrap().port(), 4101);
    let features = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/features.json");
    let c = serve(&[
        "--config",
        "/dev/null",
        "offline",
        "-b",
        features,
        "-c",
        "*:development.abc12345678",
        "-p",
        "4102",
    ]);
    assert_eq!(c.server.listen.unwrap().port(), 4102);
    let e = error(&["--config", "/dev/null", "-p", "1", "--port", "2", "offline"]);
    assert!(e.contains("--port") || e.contains("-p"), "{e}");
}

/// Unleash Edge's Prometheus remote-write settings: read from flags, environment and file;
/// the password never printed; a user or password without a URL, or a URL that is not http(s),
/// is an error naming the setting.
#[test]
fn remote_write_from_flags_and_file_redacted() {
    let features = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/features.json");
    let base = ["--config", "/dev/null"];
    let tail = ["offline", "-b", features, "-c", "*:development.abc12345678"];
    let with = |extra: &[&str]| -> Vec<String> {
        base.iter()
            .chain(extra)
            .chain(&tail)
            .map(|s| s.to_string())
            .collect()
    };
    let args = with(&[
        "--prometheus-remote-write-url",
        "https://user:inline-pass-88@mimir.example.com/api/v1/push",
        "--prometheus-push-interval",
        "15",
        "--prometheus-username",
        "tenant-1",
        "--prometheus-password",
        "remote-pass-1234",
        "--hostname",
        "edge-pod-7",
    ]);
    let c = serve(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let rw = c.remote_write.as_ref().unwrap();
    assert_eq!(rw.interval, Duration::from_secs(15));
    assert_eq!(rw.timeout, Duration::from_secs(15));
    assert_eq!(rw.username.as_deref(), Some("tenant-1"));
    assert_eq!(rw.hostname.as_deref(), Some("edge-pod-7"));
    let text = c.to_redacted_toml();
    assert!(
        text.contains("[remote_write]") && text.contains("mimir.example.com"),
        "{text}"
    );
    assert!(
        !text.contains("remote-pass-1234") && !text.contains("inline-pass-88"),
        "{text}"
    );
    assert!(
        serve(&with(&[]).iter().map(String::as_str).collect::<Vec<_>>())
            .remote_write
            .is_none()
    );
    for (extra, names) in [
        (
            vec!["--prometheus-username", "u"],
            "PROMETHEUS_REMOTE_WRITE_URL",
        ),
        (
            vec!["--prometheus-remote-write-url", "ftp://x/y"],
            "PROMETHEUS_REMOTE_WRITE_URL",
        ),
        (
            vec![
                "--prometheus-remote-write-url",
                "http://p:9090/api/v1/write",
                "--prometheus-password",
                "p",
            ],
            "PROMETHEUS_USERNAME",
        ),
    ] {
        let e = error(&with(&extra).iter().map(String::as_str).collect::<Vec<_>>());
        assert!(e.contains(names), "{e}");
    }
    let f = write(
        "mode = \"offline\"\n[remote_write]\nurl = \"http://prometheus:9090/api/v1/write\"\ninterval = \"30s\"\n[offline]\nfeatures_file = \"features.json\"\nclient_tokens = [\"*:development.abc12345678\"]\n",
    );
    let c = serve(&["--config", f.path().to_str().unwrap()]);
    assert_eq!(c.remote_write.unwrap().interval, Duration::from_secs(30));
}

const EDGE_FILE: &str = "mode = \"edge\"\n[edge]\nupstream_url = \"http://unleash:4242\"\ntokens = [\"*:development.abc12345678\"]\n";

fn store_of(c: &Config) -> crate::config::StoreConfig {
    match &c.mode {
        Mode::Edge(e) => e.store.clone().unwrap(),
        Mode::Offline(_) => panic!("offline"),
    }
}

/// Sentinel: the comma list of Sentinels; the data nodes' user, password and TLS from Edge's
/// parts (never shown).
#[test]
fn sentinel_from_flags() {
    let f = write(EDGE_FILE);
    let path = f.path().to_str().unwrap();
    let store = store_of;
    let c = serve(&[
        "--config",
        path,
        "edge",
        "--redis-mode",
        "sentinel",
        "--redis-url",
        "redis://:sentinel-pw-1@s1:26379, rediss://s2:26379,redis://s3:26379",
        "--redis-sentinel-master",
        "fleetmaster",
        "--redis-password",
        "data-pw-77",
        "--redis-secure",
    ]);
    let s = store(&c);
    assert_eq!(s.redis_urls.len(), 3);
    let RedisMode::Sentinel { master, data } = &s.mode else {
        panic!("not sentinel")
    };
    assert_eq!(master, "fleetmaster");
    assert!(data.tls && data.password.is_some());
    // The Sentinels' URLs are as given: Edge's parts are the data nodes'.
    assert_eq!(s.redis_urls[0].expose(), "redis://:sentinel-pw-1@s1:26379");
    let text = c.to_redacted_toml();
    assert!(
        text.contains("mode = \"sentinel\"") && text.contains("sentinel_master"),
        "{text}"
    );
    assert!(
        !text.contains("data-pw-77") && !text.contains("sentinel-pw-1"),
        "{text}"
    );
    let e = error(&[
        "--config",
        path,
        "edge",
        "--redis-mode",
        "sentinel",
        "--redis-url",
        "redis://s1:26379/1",
        "--redis-sentinel-master",
        "m",
    ]);
    assert!(
        e.contains("store.redis_url") && e.contains("no database"),
        "{e}"
    );
}

/// Cluster: the comma list of seed nodes, each with Edge's parts; single mode takes one URL.
#[test]
fn cluster_from_flags() {
    let f = write(EDGE_FILE);
    let path = f.path().to_str().unwrap();
    let store = store_of;
    let c = serve(&[
        "--config",
        path,
        "edge",
        "--redis-mode",
        "cluster",
        "--redis-url",
        "redis://n1:7000,redis://n2:7001",
        "--redis-password",
        "cluster-pw-9",
    ]);
    let s = store(&c);
    assert_eq!(s.mode, RedisMode::Cluster);
    assert_eq!(s.redis_urls.len(), 2);
    assert!(s
        .redis_urls
        .iter()
        .all(|u| u.expose().contains(":cluster-pw-9@")));
    let e = error(&[
        "--config",
        path,
        "edge",
        "--redis-mode",
        "cluster",
        "--redis-url",
        "redis://n1:7000",
        "--redis-port",
        "7001",
    ]);
    assert!(e.contains("REDIS_PORT"), "{e}");
    let e = error(&[
        "--config",
        path,
        "edge",
        "--redis-url",
        "redis://a:1,redis://b:2",
    ]);
    assert!(e.contains("store.redis_url"), "{e}");
}

/// Unleash Edge's `-l` / `LOG_FORMAT`: `plain`, `json`, and Edge's `pretty` (plain here).
#[test]
fn log_format_short_form_and_edge_values() {
    let features = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/features.json");
    let with = |format: &str| {
        serve(&[
            "--config",
            "/dev/null",
            "-l",
            format,
            "offline",
            "-b",
            features,
            "-c",
            "*:development.abc12345678",
        ])
        .log_format
    };
    assert_eq!(with("json"), LogFormat::Json);
    assert_eq!(with("plain"), LogFormat::Plain);
    assert_eq!(with("pretty"), LogFormat::Plain);
    let e = error(&["--config", "/dev/null", "-l", "xml", "offline"]);
    assert!(e.contains("xml"), "{e}");
}
