//! Reaching the fleet's Redis as teams run it: Unleash Edge's address parts with an ACL
//! user, TLS with an ACL user, Sentinels over TLS with a private CA.

use std::time::Duration;

use crate::edge::edge_config;
use crate::fleet::*;
use crate::fleet_ha::*;
use crate::harness::*;
use crate::redis::*;
use crate::upstream::{secret, FakeUpstream};

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

/// Redis over TLS only (no plain port), an ACL user and the default user off, a private CA
/// given with --redis-ca-certificate-file: the fleet elects one poller and a change reaches
/// every instance; without the CA, nothing connects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_on_redis_over_tls_with_an_acl_user() {
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    tls_files(dir.path());
    let file = |name: &str| dir.path().join(name).display().to_string();
    // Only TLS, the default user off, one ACL user for the fleet.
    let redis = Node::start_tls(
        dir.path(),
        &[
            "--user",
            "default",
            "off",
            "--user",
            "fleet",
            "on",
            ">tls-fleet-pw-3",
            "~flagpost:*",
            "&*",
            "+@all",
        ],
    );
    let port = redis.port;
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
    replica.until_replicating().await;
    let sentinels: Vec<Node> = (0..3)
        .map(|_| Node::sentinel_tls(primary.port, certs.path()))
        .collect();
    until_the_sentinels_know_each_other(&sentinels).await;
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
