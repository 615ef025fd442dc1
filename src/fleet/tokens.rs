//! Tokens in the fleet's store: the startup tokens' validated scopes (to boot from while
//! upstream is down, never wider than a token states) and request tokens' shared verdicts, all
//! under SHA-256 digests.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Fleet;
use crate::auth::{BoxFuture, SharedVerdict};
use crate::token::digest;
use crate::token::{Projects, Scope, Token, TokenKind};

/// A scope as stored: `{"environment":"…","projects":["*"]}`.
#[derive(Debug, Serialize, Deserialize)]
struct StoredScope {
    environment: String,
    projects: Vec<String>,
}

impl StoredScope {
    fn of(scope: &Scope) -> StoredScope {
        StoredScope {
            environment: scope.environment.clone(),
            projects: scope.projects.names(),
        }
    }

    fn scope(&self) -> Scope {
        Scope::new(
            self.environment.clone(),
            Projects::from_names(self.projects.iter().map(String::as_str)),
        )
    }
}

/// Whether `scope` is no wider than what the token itself states (its environment, and its
/// project unless it is a `[]` token).
fn within_token(token: &Token, scope: &Scope) -> bool {
    match token.stated_scope() {
        Some(stated) => stated.covers(scope),
        None => token.environment().is_none_or(|e| e == scope.environment),
    }
}

/// A verdict as stored under `token:<sha256>`.
#[derive(Debug, Serialize, Deserialize)]
struct StoredVerdict {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<TokenKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scope: Option<StoredScope>,
    /// `invalid` or `wrong_type` when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refused: Option<String>,
    /// When the writer's clock said it expires; informational only (the key's own expiry,
    /// kept by Redis, is what ends it: no two hosts' clocks are compared).
    #[serde(default)]
    expires_at: i64,
}

/// A stored verdict for `raw`, clamped to what the token itself states: a valid verdict whose
/// scope the token's own text does not cover is not trusted (one bad key must not grant a
/// token any scope); it is asked about upstream instead.
fn read_verdict(raw: &str, text: &str) -> Option<SharedVerdict> {
    let v: StoredVerdict = serde_json::from_str(text).ok()?;
    match (v.kind, v.scope, v.refused.as_deref()) {
        (Some(kind), Some(scope), None) => {
            let scope = scope.scope();
            let token = Token::parse(raw).ok()?;
            if !within_token(&token, &scope) {
                tracing::error!(token = %token, "the shared store holds a scope for this token wider than the token states; ignored");
                return None;
            }
            Some(SharedVerdict::Valid(kind, scope))
        }
        (_, _, Some("wrong_type")) => Some(SharedVerdict::WrongType),
        (_, _, Some(_)) => Some(SharedVerdict::Invalid),
        _ => None,
    }
}

impl Fleet {
    /// Remembers what this instance's own startup tokens cover: a follower serves at most that,
    /// narrowed to what the poller serves.
    pub fn own_scopes(&self, usable: &[(Token, Scope)]) {
        let mut own: HashMap<String, Projects> = HashMap::new();
        for (_, scope) in usable {
            own.entry(scope.environment.clone())
                .or_insert_with(Projects::none)
                .extend(&scope.projects);
        }
        *self.own.lock().unwrap_or_else(|p| p.into_inner()) = own;
    }

    /// Records the validated scopes of the startup tokens, for instances that boot while
    /// upstream is down.
    pub async fn save_startup(&self, usable: &[(Token, Scope)]) {
        self.own_scopes(usable);
        let items: Vec<(String, String)> = usable
            .iter()
            .filter_map(|(t, s)| {
                Some((
                    digest(t.expose()),
                    serde_json::to_string(&StoredScope::of(s)).ok()?,
                ))
            })
            .collect();
        let _ = self.shared.save_startup(&items).await;
    }

    /// The scopes of `tokens` recorded by the fleet, each no wider than what the token itself
    /// states: what this instance may serve while upstream is down.
    pub async fn startup_scopes(&self, tokens: &[Token]) -> Vec<(Token, Scope)> {
        let digests: Vec<String> = tokens.iter().map(|t| digest(t.expose())).collect();
        let Ok(found) = self.shared.startup(&digests).await else {
            return Vec::new();
        };
        tokens
            .iter()
            .zip(&digests)
            .filter_map(|(t, d)| {
                let stored: StoredScope = serde_json::from_str(found.get(d)?).ok()?;
                let scope = stored.scope();
                let fits = within_token(t, &scope);
                if !fits {
                    tracing::error!(token = %t, "the shared store holds a scope for this startup token wider than the token states; ignored");
                }
                fits.then(|| (t.clone(), scope))
            })
            .collect()
    }

    /// Shared verdicts for these raw tokens (those the fleet has).
    pub async fn verdicts(&self, raws: &[String]) -> HashMap<String, SharedVerdict> {
        let digests: Vec<String> = raws.iter().map(|r| digest(r)).collect();
        let Ok(found) = self.shared.verdicts(&digests).await else {
            return HashMap::new();
        };
        raws.iter()
            .zip(&digests)
            .filter_map(|(raw, d)| Some((raw.clone(), read_verdict(raw, found.get(d)?)?)))
            .collect()
    }

    /// Claims the right to ask upstream about each raw token; true where this instance asks.
    pub async fn claim(&self, raws: &[String]) -> Vec<bool> {
        let digests: Vec<String> = raws.iter().map(|r| digest(r)).collect();
        self.shared
            .claim(&digests, self.ttl.2, &self.me)
            .await
            // Redis away: everyone asks for themselves.
            .unwrap_or_else(|_| vec![true; raws.len()])
    }

    /// How long a claim lasts: how long to wait for another instance's verdict.
    pub fn claim_ttl(&self) -> Duration {
        self.ttl.2
    }

    /// Shares verdicts; announces the tokens that were valid and now are not.
    pub async fn share(&self, verdicts: &[(String, SharedVerdict)], revoked: &[String]) {
        let now = chrono::Utc::now().timestamp_millis();
        let items: Vec<(String, String, Duration)> = verdicts
            .iter()
            .filter_map(|(raw, v)| {
                let ttl = match v {
                    SharedVerdict::Valid(..) => self.ttl.0,
                    _ => self.ttl.1,
                };
                let stored = StoredVerdict {
                    kind: match v {
                        SharedVerdict::Valid(kind, _) => Some(*kind),
                        _ => None,
                    },
                    scope: match v {
                        SharedVerdict::Valid(_, scope) => Some(StoredScope::of(scope)),
                        _ => None,
                    },
                    refused: match v {
                        SharedVerdict::Valid(..) => None,
                        SharedVerdict::WrongType => Some("wrong_type".into()),
                        SharedVerdict::Invalid => Some("invalid".into()),
                    },
                    expires_at: now + i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX / 2),
                };
                Some((digest(raw), serde_json::to_string(&stored).ok()?, ttl))
            })
            .collect();
        if self.shared.put_verdicts(&items).await.is_ok() && !items.is_empty() {
            // Lanes of other instances waiting for these look now.
            let _ = self.shared.announce("verdicts").await;
        }
        for raw in revoked {
            let _ = self
                .shared
                .announce(&format!("revoked {}", digest(raw)))
                .await;
        }
    }
}

impl crate::auth::SharedVerdicts for Fleet {
    fn verdicts<'a>(&'a self, raws: &'a [String]) -> BoxFuture<'a, HashMap<String, SharedVerdict>> {
        Box::pin(Fleet::verdicts(self, raws))
    }

    fn claim<'a>(&'a self, raws: &'a [String]) -> BoxFuture<'a, Vec<bool>> {
        Box::pin(Fleet::claim(self, raws))
    }

    fn claim_ttl(&self) -> Duration {
        Fleet::claim_ttl(self)
    }

    fn share<'a>(
        &'a self,
        verdicts: &'a [(String, SharedVerdict)],
        revoked: &'a [String],
    ) -> BoxFuture<'a, ()> {
        Box::pin(Fleet::share(self, verdicts, revoked))
    }

    fn announced(&self) -> tokio::sync::watch::Receiver<u64> {
        self.verdicts_announced.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_scope_never_widens_what_the_token_states() {
        let scope = |env: &str, projects: &[&str]| {
            Scope::new(env, Projects::from_names(projects.iter().copied()))
        };
        let token = |raw: &str| Token::parse(raw).unwrap();
        let default = token("default:development.abcdef123456");
        assert!(within_token(&default, &scope("development", &["default"])));
        assert!(!within_token(&default, &scope("development", &["*"])));
        assert!(!within_token(
            &default,
            &scope("development", &["default", "checkout"])
        ));
        assert!(!within_token(&default, &scope("production", &["default"])));
        let all = token("*:development.abcdef123456");
        assert!(within_token(&all, &scope("development", &["*"])));
        assert!(!within_token(&all, &scope("production", &["*"])));
        let listed = token("[]:development.abcdef123456");
        assert!(within_token(&listed, &scope("development", &["a", "b"])));
        assert!(!within_token(&listed, &scope("production", &["a"])));
    }

    #[test]
    fn stored_scopes_and_verdicts_round_trip() {
        let s = Scope::new("development", Projects::from_names(["b", "a"]));
        let text = serde_json::to_string(&StoredScope::of(&s)).unwrap();
        assert_eq!(
            text,
            r#"{"environment":"development","projects":["a","b"]}"#
        );
        let back: StoredScope = serde_json::from_str(&text).unwrap();
        assert_eq!(back.scope(), s);
        let all = StoredScope::of(&Scope::new("production", Projects::All));
        assert_eq!(all.scope().projects, Projects::All);
        let v = StoredVerdict {
            kind: Some(TokenKind::Frontend),
            scope: Some(StoredScope::of(&s)),
            refused: None,
            expires_at: 5,
        };
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"kind":"frontend","scope":{"environment":"development","projects":["a","b"]},"expires_at":5}"#
        );
    }

    #[test]
    fn a_shared_verdict_wider_than_the_token_states_is_not_trusted() {
        let valid = |env: &str, projects: &str| {
            format!(
                r#"{{"kind":"frontend","scope":{{"environment":"{env}","projects":{projects}}},"expires_at":0}}"#
            )
        };
        let raw = "default:development.abcdef123456";
        assert!(matches!(
            read_verdict(raw, &valid("development", r#"["default"]"#)),
            Some(SharedVerdict::Valid(TokenKind::Frontend, _))
        ));
        for wider in [
            valid("development", r#"["*"]"#),
            valid("development", r#"["default","checkout"]"#),
            valid("production", r#"["default"]"#),
        ] {
            assert!(read_verdict(raw, &wider).is_none(), "{wider}");
        }
        // A verdict of refusal narrows nothing: kept. Without expires_at: read too.
        assert!(matches!(
            read_verdict(raw, r#"{"refused":"invalid"}"#),
            Some(SharedVerdict::Invalid)
        ));
        assert!(read_verdict(raw, "not json").is_none());
    }
}
