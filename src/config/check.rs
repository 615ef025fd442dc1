//! Checks of what configuration names: tokens and client keys with their scopes, project
//! lists, the upstream URL. Errors never repeat a secret.

use super::file::{RawClientKey, RawToken};
use super::{invalid, ConfigError, ConfiguredToken};
use crate::token::{Projects, Scope, Shape, Token, TokenKind};

/// A startup token for edge mode: an Unleash-shaped token (its type is only known upstream).
pub(super) fn edge_token(key: &str, text: &str) -> Result<Token, ConfigError> {
    let token = Token::parse(text).map_err(|e| invalid(key, format!("not a token: {e}")))?;
    match token.shape() {
        Shape::Scoped { .. } | Shape::Legacy => Ok(token),
        Shape::Admin | Shape::PersonalAccess => Err(invalid(
            key,
            format!(
                "{token} is an admin or personal access token; flagpost fetches features \
                 with client (backend) tokens only, and never needs admin rights"
            ),
        )),
        Shape::Opaque => Err(invalid(
            key,
            format!("{token} is not an Unleash token (`<project>:<environment>.<secret>`)"),
        )),
    }
}

/// The upstream URL as flagpost uses it: `http(s)://host[:port][/path]` without a trailing `/`
/// or `/api` (flagpost adds the API paths itself).
pub(super) fn normalize_upstream_url(url: &str) -> Result<String, ConfigError> {
    let key = "edge.upstream_url (--upstream-url / UPSTREAM_URL)";
    let url = url.trim();
    let parsed =
        reqwest::Url::parse(url).map_err(|e| invalid(key, format!("{url:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid(
            key,
            format!("{url:?} must be an http:// or https:// URL"),
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid(
            key,
            "credentials in the URL would be logged; use custom_client_headers instead",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(invalid(key, "the URL must not have a query or a fragment"));
    }
    let mut text = parsed.as_str().trim_end_matches('/').to_string();
    if let Some(stripped) = text.strip_suffix("/api") {
        text = stripped.to_string();
    }
    Ok(text)
}

pub(super) fn configured_token(
    key: &str,
    entry: &RawToken,
    kind: TokenKind,
) -> Result<ConfiguredToken, ConfigError> {
    let (text, projects) = match entry {
        RawToken::Plain(t) => (t.as_str(), None),
        RawToken::WithProjects(t) => (t.token.as_str(), Some(&t.projects)),
    };
    // The error never repeats the token: it may be a secret with a typo.
    let token = Token::parse(text).map_err(|e| invalid(key, format!("not a token: {e}")))?;
    let scope = match (token.shape(), projects) {
        (Shape::Scoped { .. }, None) => token.stated_scope().ok_or_else(|| {
            invalid(
                key,
                format!(
                    "{token} is a `[]` token: its project list is not in the token, so give it \
                     in config.toml as {{ token = \"[]:...\", projects = [\"a\", \"b\"] }}"
                ),
            )
        })?,
        (Shape::Scoped { environment, .. }, Some(list)) => {
            let listed = project_list(key, list)?;
            if let Some(stated) = token.stated_scope() {
                if !stated.projects.covers(&listed) || !listed.covers(&stated.projects) {
                    return Err(invalid(
                        key,
                        format!("{token} names its projects itself; `projects` disagrees with it"),
                    ));
                }
            }
            Scope::new(environment.clone(), listed)
        }
        (Shape::Admin | Shape::PersonalAccess, _) => {
            return Err(invalid(
                key,
                format!(
                    "{token} is an admin or personal access token; flagpost only serves SDK \
                     tokens (client and frontend)"
                ),
            ))
        }
        (Shape::Legacy | Shape::Opaque, _) => {
            return Err(invalid(
                key,
                format!(
                    "{token} does not name its environment (`<project>:<environment>.<secret>`); \
                     an arbitrary string is a client key: list it under [[offline.client_keys]] \
                     with its environment and projects"
                ),
            ))
        }
    };
    Ok(ConfiguredToken { token, kind, scope })
}

pub(super) fn client_key(key: &str, entry: &RawClientKey) -> Result<ConfiguredToken, ConfigError> {
    let token =
        Token::parse(&entry.key).map_err(|e| invalid(key, format!("not a usable key: {e}")))?;
    if entry.environment.trim().is_empty() || entry.environment == "*" {
        return Err(invalid(key, "`environment` must name one environment"));
    }
    let projects = project_list(key, &entry.projects)?;
    Ok(ConfiguredToken {
        token,
        kind: TokenKind::Frontend,
        scope: Scope::new(entry.environment.trim(), projects),
    })
}

fn project_list(key: &str, list: &[String]) -> Result<Projects, ConfigError> {
    if list.is_empty() {
        return Err(invalid(
            key,
            "`projects` is empty; list projects, or [\"*\"] for all",
        ));
    }
    if let Some(bad) = list.iter().find(|p| p.trim().is_empty()) {
        return Err(invalid(
            key,
            format!("`projects` has an empty name ({bad:?})"),
        ));
    }
    Ok(Projects::from_names(list.iter().map(|p| p.trim())))
}

/// Offline mode needs at least one client token, and each token at most once.
pub(super) fn check_offline_tokens(tokens: &[ConfiguredToken]) -> Result<(), ConfigError> {
    if !tokens.iter().any(|t| t.kind == TokenKind::Client) {
        return Err(invalid(
            "offline.client_tokens (--client-tokens / CLIENT_TOKENS)",
            "no client token: flagpost serves only within the scope of its client tokens, so \
             give at least one (e.g. \"*:development.some-secret\")",
        ));
    }
    for (i, t) in tokens.iter().enumerate() {
        let duplicate = tokens
            .iter()
            .take(i)
            .any(|earlier| earlier.token.ct_eq(t.token.expose()));
        if duplicate {
            return Err(invalid(
                "offline tokens",
                format!("{} is configured twice", t.token),
            ));
        }
    }
    Ok(())
}
