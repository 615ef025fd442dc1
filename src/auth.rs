//! Token → [`Access`] (what the token is and the scope it may see). Offline mode answers from the
//! configured table; every configured secret is compared in constant time, and all of them are
//! compared on every lookup, so timing says nothing about which one nearly matched.

use crate::config::ConfiguredToken;
use crate::token::{Scope, Shape, Token, TokenError, TokenKind};

/// A token that may use SDK endpoints, and what it may see.
#[derive(Debug, Clone)]
pub struct Access {
    pub token: Token,
    pub kind: TokenKind,
    pub scope: Scope,
}

/// Why a request's token is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token")]
    Missing,
    #[error("not a token: {0}")]
    Malformed(TokenError),
    #[error("unknown token")]
    Unknown,
    #[error("admin tokens and personal access tokens cannot be used on SDK endpoints")]
    AdminOrPersonal,
}

/// Looks tokens up.
#[derive(Debug)]
pub struct Authenticator {
    table: Vec<ConfiguredToken>,
}

impl Authenticator {
    /// An authenticator that knows exactly the configured tokens and client keys.
    pub fn offline(tokens: Vec<ConfiguredToken>) -> Authenticator {
        Authenticator { table: tokens }
    }

    /// Resolves the raw `Authorization` header value.
    pub fn resolve(&self, header: Option<&[u8]>) -> Result<Access, AuthError> {
        let Some(bytes) = header else {
            return Err(AuthError::Missing);
        };
        let text = std::str::from_utf8(bytes)
            .map_err(|_| AuthError::Malformed(TokenError::InvalidCharacter))?;
        let token = match Token::parse(text) {
            Ok(t) => t,
            Err(TokenError::Empty) => return Err(AuthError::Missing),
            Err(e) => return Err(AuthError::Malformed(e)),
        };
        if matches!(token.shape(), Shape::Admin | Shape::PersonalAccess) {
            return Err(AuthError::AdminOrPersonal);
        }
        let mut found: Option<&ConfiguredToken> = None;
        for entry in &self.table {
            // No early exit: every entry is compared.
            if entry.token.ct_eq(token.expose()) && found.is_none() {
                found = Some(entry);
            }
        }
        let entry = found.ok_or(AuthError::Unknown)?;
        Ok(Access {
            token,
            kind: entry.kind,
            scope: entry.scope.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Projects;

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

    #[test]
    fn resolves_configured_tokens_and_keys() {
        let auth = table();
        let a = auth.resolve(Some(b"*:development.client")).unwrap();
        assert_eq!(a.kind, TokenKind::Client);
        let a = auth.resolve(Some(b"Bearer proxy-key")).unwrap();
        assert_eq!(a.kind, TokenKind::Frontend);
        assert_eq!(a.scope.projects, Projects::from_names(["default"]));
    }

    #[test]
    fn refuses_everything_else_with_the_reason() {
        let auth = table();
        assert_eq!(auth.resolve(None).unwrap_err(), AuthError::Missing);
        assert_eq!(auth.resolve(Some(b"")).unwrap_err(), AuthError::Missing);
        assert_eq!(
            auth.resolve(Some(b"*:development.other")).unwrap_err(),
            AuthError::Unknown
        );
        assert_eq!(
            auth.resolve(Some(b"*:*.admin")).unwrap_err(),
            AuthError::AdminOrPersonal
        );
        assert_eq!(
            auth.resolve(Some(b"user:abc")).unwrap_err(),
            AuthError::AdminOrPersonal
        );
        assert_eq!(
            auth.resolve(Some(b"default:development")).unwrap_err(),
            AuthError::Malformed(TokenError::MissingSecret)
        );
        assert_eq!(
            auth.resolve(Some(&[0xff, 0xfe])).unwrap_err(),
            AuthError::Malformed(TokenError::InvalidCharacter)
        );
    }
}
