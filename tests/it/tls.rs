//! TLS: flagpost serving HTTPS (ALPN, certificates reloaded, plain HTTP redirected) and
//! reaching its upstream over mutual TLS (PEM pair, PEM file, PKCS#12, an extra CA).

use std::time::Duration;

use crate::edge::edge_config;
use crate::harness::*;
use crate::offline::{config, FEATURES, FRONTEND_DEFAULT_DEV};
use crate::upstream::{secret, FakeUpstream};

fn certificate() -> (String, String) {
    let c =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    (c.cert.pem(), c.signing_key.serialize_pem())
}

fn tls_client(ca_pem: &str, addr: std::net::SocketAddr, http1: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .tls_built_in_root_certs(false)
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(5));
    if http1 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

async fn start_tls(cert: &str, key: &str) -> Server {
    start_tls_with(cert, key, "").await
}

/// A TLS server with `extra` lines in `[tls]`.
async fn start_tls_with(cert: &str, key: &str, extra: &str) -> Server {
    let toml = config("").replace(
        "mode = \"offline\"",
        &format!("mode = \"offline\"\n[tls]\nenabled = true\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\nport = 0\n{extra}"),
    );
    let s = Server::start(
        &toml,
        &[
            ("features.json", FEATURES),
            ("cert.pem", cert),
            ("key.pem", key),
        ],
    )
    .await;
    s.wait_ready().await;
    s
}

/// Unleash Edge's --redirect-http-to-https: plain requests get 308 to the same host, path and
/// query on the HTTPS port, which then answers; probes are still answered on plain HTTP.
#[tokio::test]
async fn plain_http_is_redirected_to_https_but_probes_are_answered() {
    let (cert, key) = certificate();
    let s = start_tls_with(&cert, &key, "redirect_http = true").await;
    let tls_port = s.tls_addr.unwrap().port();
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = plain
        .get(
            s.url("/api/frontend?userId=alice")
                .replace("127.0.0.1", "localhost"),
        )
        .header("Authorization", FRONTEND_DEFAULT_DEV)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(
        location,
        format!("https://localhost:{tls_port}/api/frontend?userId=alice")
    );
    let followed = tls_client(&cert, s.tls_addr.unwrap(), true)
        .get(&location)
        .header("Authorization", FRONTEND_DEFAULT_DEV)
        .send()
        .await
        .unwrap();
    assert_eq!(followed.status(), 200);
    for probe in ["/health", "/ready", "/internal-backstage/health"] {
        let r = plain.get(s.url(probe)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{probe}");
    }
}

/// Nothing older than TLS 1.2 is spoken (openssl's own client); TLS 1.2 offers h2 by ALPN.
async fn assert_tls_1_2_at_least(tls_addr: std::net::SocketAddr) {
    let old = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &tls_addr.to_string(),
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("openssl is installed (.ci/run installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&old.stdout),
        String::from_utf8_lossy(&old.stderr)
    );
    assert!(
        !old.status.success(),
        "a TLS 1.1 handshake succeeded:\n{text}"
    );
    assert!(
        text.contains("Cipher is (NONE)"),
        "no TLS 1.1 session may be established:\n{text}"
    );
    let modern = tokio::process::Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &tls_addr.to_string(),
            "-tls1_2",
            "-alpn",
            "h2",
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&modern.stdout);
    assert!(
        text.contains("ALPN protocol: h2") && text.contains("TLSv1.2"),
        "{text}"
    );
}

#[tokio::test]
async fn tls_with_alpn_beside_plain_http_and_certificates_reloaded() {
    let (cert, key) = certificate();
    let s = start_tls(&cert, &key).await;
    let tls_addr = s.tls_addr.unwrap();
    let url = format!("https://localhost:{}/api/frontend", tls_addr.port());
    for (http1, version) in [
        (false, reqwest::Version::HTTP_2),
        (true, reqwest::Version::HTTP_11),
    ] {
        let r = tls_client(&cert, tls_addr, http1)
            .get(&url)
            .header("Authorization", FRONTEND_DEFAULT_DEV)
            .send()
            .await
            .unwrap();
        assert_eq!((r.status().as_u16(), r.version()), (200, version));
    }
    assert_eq!(
        get(&s, "/api/frontend", Some(FRONTEND_DEFAULT_DEV)).await.0,
        200,
        "plain HTTP beside TLS"
    );
    assert_tls_1_2_at_least(tls_addr).await;

    // A new certificate on disk is served without a restart.
    let (cert2, key2) = certificate();
    std::fs::write(s.path("key.pem"), &key2).unwrap();
    std::fs::write(s.path("cert.pem"), &cert2).unwrap();
    eventually("the new certificate is served", || async {
        tls_client(&cert2, tls_addr, true)
            .get(&url)
            .header("Authorization", FRONTEND_DEFAULT_DEV)
            .send()
            .await
            .is_ok()
    })
    .await;
    assert!(
        tls_client(&cert, tls_addr, true)
            .get(&url)
            .send()
            .await
            .is_err(),
        "the old one is gone"
    );
    // A broken pair keeps the last good one.
    std::fs::write(s.path("cert.pem"), "not a certificate").unwrap();
    eventually("the broken pair is refused", || async {
        metric(&s, "flagpost_tls_reloads_total{result=\"failed\"}").await == Some(1.0)
    })
    .await;
    let r = tls_client(&cert2, tls_addr, true)
        .get(&url)
        .header("Authorization", FRONTEND_DEFAULT_DEV)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.stop().await.unwrap();
}

pub fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "flagpost test CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, cn: &str| {
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca: ca.pem(),
        server: leaf(vec!["127.0.0.1".into()], "upstream"),
        client: leaf(vec!["flagpost.test".into()], "flagpost"),
    }
}

#[tokio::test]
async fn upstream_over_mutual_tls_with_an_extra_ca() {
    let pki = pki();
    let up = FakeUpstream::start_tls(&pki.server.0, &pki.server.1, &pki.ca).await;
    let tokens = vec![secret("client-all-dev")];
    let files = [
        ("ca.pem", pki.ca.as_str()),
        ("client.pem", pki.client.0.as_str()),
        ("client.key", pki.client.1.as_str()),
    ];
    let mtls = "upstream_certificate_file = \"ca.pem\"\nclient_certificate_file = \"client.pem\"\nclient_key_file = \"client.key\"";
    let s = Server::start(&edge_config(&up.https_url(), &tokens, mtls), &files).await;
    s.wait_ready().await;
    assert_eq!(
        get(&s, "/api/frontend", Some(&secret("frontend-all-dev")))
            .await
            .0,
        200
    );
    s.stop().await.unwrap();
    // Without the client certificate, or without the CA, upstream cannot be reached.
    for extra in [
        "upstream_certificate_file = \"ca.pem\"",
        "client_certificate_file = \"client.pem\"\nclient_key_file = \"client.key\"",
    ] {
        let s = Server::start(&edge_config(&up.https_url(), &tokens, extra), &files).await;
        eventually("a failed validation", || async {
            metric(
                &s,
                "flagpost_upstream_requests_total{call=\"validate\",outcome=\"unreachable\"}",
            )
            .await
            .is_some()
        })
        .await;
        assert_eq!(get(&s, "/ready", None).await.0, 503, "{extra}");
        s.stop().await.unwrap();
    }
}

/// Unleash Edge's other client identity forms: one PEM file with the key and the chain
/// (`--pem-cert-file`), and a PKCS#12 archive with its passphrase (`--pkcs12-identity-file`,
/// made by openssl); a wrong passphrase stops flagpost at start without showing it.
#[tokio::test]
async fn upstream_mutual_tls_from_a_pem_file_and_a_pkcs12_archive() {
    let pki = pki();
    let up = FakeUpstream::start_tls(&pki.server.0, &pki.server.1, &pki.ca).await;
    let tokens = vec![secret("client-all-dev")];
    let dir = tempfile::tempdir().unwrap();
    let both = format!("{}\n{}", pki.client.1, pki.client.0);
    std::fs::write(dir.path().join("client.pem"), &pki.client.0).unwrap();
    std::fs::write(dir.path().join("client.key"), &pki.client.1).unwrap();
    let out = std::process::Command::new("openssl")
        .args([
            "pkcs12",
            "-export",
            "-in",
            "client.pem",
            "-inkey",
            "client.key",
        ])
        .args(["-out", "id.p12", "-passout", "pass:pfx-pass-7731"])
        .current_dir(dir.path())
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p12 = std::fs::read(dir.path().join("id.p12")).unwrap();
    // Files are written as text by the harness: the archive goes in as a path outside it.
    let p12_path = dir.path().join("id.p12").display().to_string();
    let files = [("ca.pem", pki.ca.as_str()), ("both.pem", both.as_str())];
    for extra in [
        "pem_cert_file = \"both.pem\"".to_string(),
        format!("pkcs12_identity_file = {p12_path:?}\npkcs12_passphrase = \"pfx-pass-7731\""),
    ] {
        let extra = format!("upstream_certificate_file = \"ca.pem\"\n{extra}");
        let s = Server::start(&edge_config(&up.https_url(), &tokens, &extra), &files).await;
        s.wait_ready().await;
        let (status, _, _) = get(&s, "/api/frontend", Some(&secret("frontend-all-dev"))).await;
        assert_eq!(status, 200, "{extra}");
        s.stop().await.unwrap();
    }
    assert!(p12.len() > 100);
    let config = dir.path().join("config.toml");
    let wrong =
        format!("pkcs12_identity_file = {p12_path:?}\npkcs12_passphrase = \"wrong-pass-5512\"");
    std::fs::write(&config, edge_config(&up.https_url(), &tokens, &wrong)).unwrap();
    let out = crate::cli::flagpost()
        .arg("--config")
        .arg(&config)
        .arg("--port")
        .arg("0")
        .output()
        .unwrap();
    let err =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("PKCS#12") && err.contains("id.p12"), "{err}");
    assert!(!err.contains("wrong-pass-5512"), "{err}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, all issued by it (PEM).
pub struct Pki {
    pub ca: String,
    pub server: (String, String),
    pub client: (String, String),
}
