//! Request tokens in edge mode: a new token is validated upstream once (several at once
//! together), an unreachable upstream is 503 for a never-seen token while known ones keep
//! working, and revocation: a revoked startup token stops being used and its scope served, one
//! it covered takes over, tokens deleted upstream turn invalid on revalidation.

use std::time::Duration;

use crate::edge::*;
use crate::harness::*;
use crate::upstream::{secret, Behaviour, FakeToken, FakeUpstream};

#[tokio::test]
async fn new_tokens_are_validated_once_and_together() {
    let up = FakeUpstream::start().await;
    let s = start_edge(&up, &["client-all-dev"], "").await;
    s.wait_ready().await;
    let validations = || up.requests_to("/edge/validate").len();
    assert_eq!(validations(), 1);
    // Twenty concurrent first requests with one new token: one upstream call.
    let token = secret("frontend-all-dev");
    let mut handles = Vec::new();
    for _ in 0..20 {
        let url = s.url("/api/frontend");
        let token = token.clone();
        handles.push(tokio::spawn(async move {
            client()
                .get(url)
                .header("Authorization", token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for h in handles {
        assert_eq!(h.await.unwrap(), 200);
    }
    assert_eq!(validations(), 2);
    // Known now: no more calls.
    assert_eq!(get(&s, "/api/frontend", Some(&token)).await.0, 200);
    assert_eq!(validations(), 2);
    // Invalid tokens are remembered too.
    for _ in 0..3 {
        assert_eq!(
            get(&s, "/api/frontend", Some("*:development.unknown-0001"))
                .await
                .0,
            401
        );
    }
    assert_eq!(validations(), 3);
    // Different new tokens arriving together share one call (while one is in flight, the
    // rest queue and go in the next batch).
    up.set(Behaviour::Slow(Duration::from_millis(200)));
    let mut handles = Vec::new();
    for i in 0..10 {
        let url = s.url("/api/frontend");
        handles.push(tokio::spawn(async move {
            let t = format!("*:development.new-token-{i:04}");
            client()
                .get(url)
                .header("Authorization", t)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for h in handles {
        assert_eq!(h.await.unwrap(), 401);
    }
    let batch_calls = validations() - 3;
    assert!(
        (1..=2).contains(&batch_calls),
        "{batch_calls} calls for 10 tokens"
    );
    let asked: usize = up.requests_to("/edge/validate")[3..]
        .iter()
        .map(|r| r.json()["tokens"].as_array().unwrap().len())
        .sum();
    assert_eq!(asked, 10, "each token asked once");
    s.stop().await.unwrap();
}

#[tokio::test]
async fn upstream_unreachable_for_a_new_token_is_503_and_known_tokens_keep_working() {
    let up = FakeUpstream::start().await;
    let s = start_edge(&up, &["client-all-dev"], "").await;
    s.wait_ready().await;
    let known = secret("frontend-all-dev");
    assert_eq!(get(&s, "/api/frontend", Some(&known)).await.0, 200);
    up.set(Behaviour::Down);
    let (status, h, body) = get(&s, "/api/frontend", Some(&secret("frontend-default-dev"))).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("upstream_unavailable"))
    );
    assert_eq!(h["retry-after"], "10");
    assert_eq!(get(&s, "/api/frontend", Some(&known)).await.0, 200);
    assert_eq!(
        get(&s, "/api/client/features", Some(&secret("client-all-dev")))
            .await
            .0,
        200
    );
    assert_eq!(
        get(&s, "/ready", None).await.0,
        200,
        "stale but loaded: still ready"
    );
    up.set(Behaviour::Normal);
    assert_eq!(
        get(&s, "/api/frontend", Some(&secret("frontend-default-dev")))
            .await
            .0,
        200
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_revoked_startup_token_stops_being_used_and_its_scope_is_no_longer_served() {
    let up = FakeUpstream::start().await;
    up.add_token(FakeToken {
        secret: "checkout:development.checkout-client-0001".into(),
        kind: "client".into(),
        environment: "development".into(),
        projects: vec!["checkout".into()],
    });
    let tokens = vec![
        secret("client-default-dev"),
        "checkout:development.checkout-client-0001".into(),
    ];
    let s = Server::start(&edge_config(&up.url(), &tokens, ""), &[]).await;
    s.wait_ready().await;
    let union = FakeToken {
        secret: "[]:development.both-front-0002".into(),
        kind: "frontend".into(),
        environment: "development".into(),
        projects: vec!["default".into(), "checkout".into()],
    };
    up.add_token(union.clone());
    assert_eq!(get(&s, "/api/frontend", Some(&union.secret)).await.0, 200);
    up.revoke("checkout:development.checkout-client-0001");
    eventually("the scope shrinks", || async {
        get(&s, "/api/frontend", Some(&union.secret)).await.0 == 403
    })
    .await;
    let (_, _, body) = get(&s, "/api/frontend", Some(&union.secret)).await;
    assert_eq!(body["error"], "scope_not_covered");
    assert!(body["message"].as_str().unwrap().contains("checkout"));
    assert_eq!(
        get(&s, "/api/frontend", Some(&secret("frontend-default-dev")))
            .await
            .0,
        200
    );
    let uses = || {
        up.requests_to("/api/client/features")
            .iter()
            .filter(|r| {
                r.header("authorization") == Some("checkout:development.checkout-client-0001")
            })
            .count()
    };
    let after = uses();
    let other = || up.requests_to("/api/client/features").len();
    let start = other();
    eventually("other polls go on", || async { other() >= start + 3 }).await;
    assert_eq!(
        uses(),
        after,
        "the revoked token is not polled with the others; it is asked about again only on the \
         token revalidation interval (1 h by default)"
    );
    assert_eq!(
        metric(
            &s,
            "flagpost_refresh_failures_total{environment=\"development\",reason=\"refused\"}"
        )
        .await,
        Some(1.0)
    );
    s.stop().await.unwrap();
}

#[tokio::test]
async fn a_token_covered_by_a_revoked_one_takes_over() {
    let up = FakeUpstream::start().await;
    let s = start_edge(&up, &["client-all-dev", "client-default-dev"], "").await;
    s.wait_ready().await;
    let uses = |name: &str| {
        let secret = secret(name);
        up.requests_to("/api/client/features")
            .iter()
            .filter(|r| r.header("authorization") == Some(secret.as_str()))
            .count()
    };
    assert_eq!(
        uses("client-default-dev"),
        0,
        "covered by the `*` token: not polled"
    );
    assert_eq!(
        get(&s, "/api/frontend", Some(&secret("frontend-all-dev")))
            .await
            .0,
        200
    );
    up.revoke(&secret("client-all-dev"));
    eventually("the covered token polls", || async {
        uses("client-default-dev") >= 2
    })
    .await;
    assert_eq!(
        get(&s, "/api/frontend", Some(&secret("frontend-all-dev")))
            .await
            .0,
        403
    );
    let (status, _, body) = get(
        &s,
        "/api/frontend/all",
        Some(&secret("frontend-default-dev")),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(frontend_names(&body).len(), 9);
    s.stop().await.unwrap();
}

#[tokio::test]
async fn tokens_deleted_upstream_turn_invalid_on_revalidation() {
    let up = FakeUpstream::start().await;
    let s = start_edge(
        &up,
        &["client-all-dev"],
        "token_revalidation_interval = \"200ms\"",
    )
    .await;
    s.wait_ready().await;
    let token = secret("frontend-all-dev");
    assert_eq!(get(&s, "/api/frontend", Some(&token)).await.0, 200);
    up.revoke(&token);
    eventually("revalidated", || async {
        get(&s, "/api/frontend", Some(&token)).await.0 == 401
    })
    .await;
    s.stop().await.unwrap();
}
