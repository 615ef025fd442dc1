//! HTTP as SDKs and browsers speak it to flagpost: CORS preflights and headers, HTTP/2
//! without TLS, HEAD, a client that never finishes its headers, a graceful shutdown that
//! finishes the request in flight, ETags and 304.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;
use crate::offline::*;

#[tokio::test]
async fn cors_preflight_and_headers() {
    let s = start().await;
    let r = client()
        .request(reqwest::Method::OPTIONS, s.url("/api/frontend"))
        .header("Origin", "http://example.test")
        .header("Access-Control-Request-Method", "GET")
        .header(
            "Access-Control-Request-Headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "preflight needs no token");
    let h = r.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(
        h["access-control-allow-headers"],
        "authorization,content-type"
    );
    assert!(h["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    let r = client()
        .get(s.url("/api/frontend"))
        .header("Origin", "http://example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "*",
        "errors are readable by the page"
    );
    let (_, h, _) = get(&s, "/api/frontend", Some(FRONTEND_DEFAULT_DEV)).await;
    assert_eq!(h["access-control-expose-headers"], "ETag");
    assert_eq!(h["vary"], "Origin");
    s.stop().await.unwrap();

    let listed = config("").replace(
        "mode = \"offline\"",
        "mode = \"offline\"\n[cors]\nallowed_origins = [\"https://app.example.com\"]",
    );
    let s = Server::start(&listed, &[("features.json", FEATURES)]).await;
    s.wait_ready().await;
    for (origin, allowed) in [
        ("https://app.example.com", true),
        ("https://evil.example.com", false),
    ] {
        let r = client()
            .get(s.url("/api/frontend"))
            .header("Origin", origin)
            .header("Authorization", FRONTEND_DEFAULT_DEV)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let got = r
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(got, allowed.then(|| origin.to_string()), "{origin}");
    }
    s.stop().await.unwrap();
}

#[tokio::test]
async fn http2_cleartext() {
    let s = start().await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2
        .get(s.url("/api/frontend"))
        .header("Authorization", FRONTEND_DEFAULT_DEV)
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn head_answers_like_get_without_a_body() {
    let s = start().await;
    let r = client()
        .head(s.url("/api/client/features"))
        .header("Authorization", CLIENT_DEFAULT_DEV)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("etag"));
    assert!(r.bytes().await.unwrap().is_empty());
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_connection_that_never_finishes_its_headers_is_closed() {
    let s = Server::start(
        &config("header_read_timeout = \"300ms\""),
        &[("features.json", FEATURES)],
    )
    .await;
    s.wait_ready().await;
    let mut conn = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    conn.write_all(b"GET /api/frontend HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept a half-sent request open");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn graceful_shutdown_finishes_the_request_in_flight() {
    let mut s = start().await;
    let conn = half_sent_post(s.addr, FRONTEND_DEFAULT_DEV).await;
    // The request is in the handler, waiting for the rest of its body.
    eventually("the request is in flight", || async {
        metric(&s, "flagpost_http_requests_in_flight").await == Some(2.0) // this scrape counts too
    })
    .await;
    s.signal_shutdown();
    eventually("draining", || async {
        // New connections are refused once the listener is closed.
        tokio::net::TcpStream::connect(s.addr).await.is_err()
    })
    .await;
    let text = finish_post(conn).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("d.users"), "{text}");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn etags_and_304() {
    let s = start().await;
    for (path, token) in [
        ("/api/client/features", CLIENT_DEFAULT_DEV),
        ("/api/frontend?userId=alice", FRONTEND_DEFAULT_DEV),
    ] {
        let first = client()
            .get(s.url(path))
            .header("Authorization", token)
            .send()
            .await
            .unwrap();
        let etag = first.headers()["etag"].to_str().unwrap().to_string();
        let body = first.bytes().await.unwrap();
        for inm in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"nope\", {etag}"),
            "*".into(),
        ] {
            let r = client()
                .get(s.url(path))
                .header("Authorization", token)
                .header("If-None-Match", &inm)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 304, "{path} with If-None-Match: {inm}");
            assert_eq!(r.headers()["etag"].to_str().unwrap(), etag);
        }
        let r = client()
            .get(s.url(path))
            .header("Authorization", token)
            .header("If-None-Match", "\"other\"")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap(), body, "same data, same bytes");
    }
    let (_, h, _) = get(&s, "/api/frontend", Some(FRONTEND_DEFAULT_DEV)).await;
    assert_eq!(h["cache-control"], "no-cache");
    let (_, a, _) = get(&s, "/api/frontend?userId=alice", Some(FRONTEND_DEFAULT_DEV)).await;
    let (_, b, _) = get(&s, "/api/frontend?userId=bob", Some(FRONTEND_DEFAULT_DEV)).await;
    assert_ne!(a["etag"], b["etag"], "different results, different ETags");
    s.stop().await.unwrap();
}
