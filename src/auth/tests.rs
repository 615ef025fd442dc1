use super::remote::verdict_of;
use super::*;
use crate::token::Projects;

/// An upstream client for a server that is never reached (port 9, discard).
pub(super) fn unreached_upstream() -> Arc<Upstream> {
    use crate::config::{Config, Invocation, Mode};
    let args = [
        "flagpost",
        "--config",
        "/dev/null",
        "edge",
        "-u",
        "http://127.0.0.1:9",
    ];
    let Ok(Invocation::Serve(config)) =
        Config::from_args(args.into_iter().chain(["-t", "*:development.startup-0001"]))
    else {
        panic!("not a config")
    };
    let Mode::Edge(edge) = &config.mode else {
        panic!("not edge")
    };
    Arc::new(Upstream::new(edge, "flagpost", "test").unwrap())
}

#[tokio::test]
async fn a_full_validation_queue_answers_unavailable_at_once() {
    let upstream = unreached_upstream();
    let metrics = Arc::new(Metrics::new(&[]));
    let budget = Budget::new(1, 1, metrics.clone());
    let caches = (100, Duration::from_secs(60));
    // The validator is not run: nothing takes tokens off the queue.
    let (auth, _validator) = Authenticator::edge(vec![], upstream, metrics, caches, budget);
    let token = |i: usize| Token::parse(&format!("*:development.never-seen-{i:05}")).unwrap();
    for i in 0..MAX_PENDING {
        assert!(
            matches!(auth.lookup(&token(i)), Lookup::Ask(_)),
            "{i} queued"
        );
    }
    assert!(matches!(
        auth.lookup(&token(MAX_PENDING)),
        Lookup::Done(Err(AuthError::UpstreamUnavailable))
    ));
}

fn table() -> Authenticator {
    let t = |raw: &str, kind, scope| ConfiguredToken {
        token: Token::parse(raw).unwrap(),
        kind,
        scope,
    };
    Authenticator::offline(vec![
        t(
            "*:development.client",
            TokenKind::Client,
            Scope::new("development", Projects::All),
        ),
        t(
            "proxy-key",
            TokenKind::Frontend,
            Scope::new("development", Projects::from_names(["default"])),
        ),
    ])
}

#[tokio::test]
async fn resolves_configured_tokens_and_keys() {
    let auth = table();
    let a = auth.resolve(Some(b"*:development.client")).await.unwrap();
    assert_eq!(a.kind, TokenKind::Client);
    let a = auth.resolve(Some(b"Bearer proxy-key")).await.unwrap();
    assert_eq!(a.kind, TokenKind::Frontend);
    assert_eq!(a.scope.projects, Projects::from_names(["default"]));
}

#[tokio::test]
async fn refuses_everything_else_with_the_reason() {
    let auth = table();
    let err = |h: &'static [u8]| {
        let auth = &auth;
        async move { auth.resolve(Some(h)).await.unwrap_err() }
    };
    assert_eq!(auth.resolve(None).await.unwrap_err(), AuthError::Missing);
    assert_eq!(err(b"").await, AuthError::Missing);
    assert_eq!(err(b"*:development.other").await, AuthError::Unknown);
    assert_eq!(err(b"*:*.admin").await, AuthError::AdminOrPersonal);
    assert_eq!(err(b"user:abc").await, AuthError::AdminOrPersonal);
    assert_eq!(
        err(b"default:development").await,
        AuthError::Malformed(TokenError::MissingSecret)
    );
    assert_eq!(
        err(&[0xff, 0xfe]).await,
        AuthError::Malformed(TokenError::InvalidCharacter)
    );
}

#[test]
fn upstream_verdicts() {
    let v = |kind: &str, env: &str, projects: &[&str]| ValidatedToken {
        token: "t".into(),
        kind: serde_json::from_value(serde_json::Value::from(kind)).unwrap(),
        projects: projects.iter().map(|p| p.to_string()).collect(),
        environment: env.into(),
    };
    match verdict_of(&v("client", "development", &["a", "b"])) {
        Verdict::Valid(k) => {
            assert_eq!(k.kind, TokenKind::Client);
            assert_eq!(k.scope.projects, Projects::from_names(["a", "b"]));
        }
        other => panic!("{other:?}"),
    }
    match verdict_of(&v("frontend", "production", &["*"])) {
        Verdict::Valid(k) => assert_eq!(k.scope, Scope::new("production", Projects::All)),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        verdict_of(&v("admin", "*", &["*"])),
        Verdict::Refused(AuthError::AdminOrPersonal)
    ));
    // Newer Unleash says "backend" for client tokens; a type flagpost does not know is
    // never served.
    assert!(matches!(
        verdict_of(&v("backend", "development", &["*"])),
        Verdict::Valid(Known {
            kind: TokenKind::Client,
            ..
        })
    ));
    assert!(matches!(
        verdict_of(&v("some-future-type", "development", &["*"])),
        Verdict::Refused(AuthError::AdminOrPersonal)
    ));
}
