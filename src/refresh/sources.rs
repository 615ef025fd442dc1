//! The startup tokens as sources of features: which of them upstream accepts as client tokens
//! (and with what scope), which must be polled (one per distinct scope), what a revocation
//! leaves served, and an environment's document merged from their answers.

use std::sync::Arc;
use std::time::SystemTime;

use crate::document::Document;
use crate::token::{Projects, Scope, Token};
use crate::upstream::{UpstreamKind, ValidatedToken};

/// A startup token and what it fetches.
#[derive(Debug)]
pub(super) struct Source {
    pub(super) token: Token,
    pub(super) scope: Scope,
    /// Shared, so the lock is held only to take or replace it (work on it happens outside).
    pub(super) document: Option<Arc<Document>>,
    pub(super) last_success: Option<SystemTime>,
    pub(super) polling: bool,
    pub(super) revoked: bool,
    /// The ETag of the last answer, and failed fetches in a row.
    pub(super) etag: Option<String>,
    pub(super) failures: u32,
}

impl Source {
    pub(super) fn new((token, scope): (Token, Scope)) -> Source {
        Source {
            token,
            scope,
            document: None,
            last_success: None,
            polling: false,
            revoked: false,
            etag: None,
            failures: 0,
        }
    }
}

/// The indexes of the live sources that no other live source covers (of equal scopes, the
/// first).
pub(super) fn needed_sources(sources: &[Source]) -> Vec<usize> {
    let live: Vec<(usize, &Source)> = sources
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.revoked)
        .collect();
    live.iter()
        .filter(|(i, s)| {
            !live.iter().any(|(j, t)| {
                j != i && t.scope.covers(&s.scope) && (!s.scope.covers(&t.scope) || j < i)
            })
        })
        .map(|(i, _)| *i)
        .collect()
}

/// The live startup tokens' projects in `env`, together.
pub(super) fn live_projects(sources: &[Source], env: &str) -> Projects {
    let mut projects = Projects::none();
    for s in sources
        .iter()
        .filter(|s| !s.revoked && s.scope.environment == env)
    {
        projects.extend(&s.scope.projects);
    }
    projects
}

/// The environment's features from all its polling sources, merged by project; `None` until
/// every one of them has answered.
pub(super) fn merged(sources: &[Source], env: &str) -> Option<Document> {
    parts(sources, env).map(merge)
}

/// Each polling source's document (shared) and the projects it is merged for.
pub(super) type Parts = Vec<(Arc<Document>, Projects)>;

/// What merging the environment's features needs, cheap to take under the lock: each polling
/// source's document (shared) and projects; `None` until every one of them has answered.
pub(super) fn parts(sources: &[Source], env: &str) -> Option<Parts> {
    let polling: Vec<&Source> = sources
        .iter()
        .filter(|s| s.polling && !s.revoked && s.scope.environment == env)
        .collect();
    if polling.is_empty() {
        return None;
    }
    polling
        .iter()
        .map(|s| Some((s.document.clone()?, s.scope.projects.clone())))
        .collect()
}

/// The merge itself (work for a blocking thread on large flag sets).
pub(super) fn merge(parts: Parts) -> Document {
    let mut document = Document::default();
    for (d, projects) in &parts {
        document.merge(d, projects);
    }
    document
}

/// The startup tokens upstream knows as client tokens, each with the scope upstream gives it;
/// the others are logged and left out.
pub(super) fn usable_startup_tokens(
    tokens: Vec<Token>,
    validated: &[ValidatedToken],
) -> Vec<(Token, Scope)> {
    let mut usable = Vec::new();
    for token in tokens {
        let Some(v) = validated.iter().find(|v| token.ct_eq(&v.token)) else {
            tracing::error!(token = %token, "startup token is not valid upstream (unknown, expired or deleted); it is ignored");
            continue;
        };
        if v.kind != UpstreamKind::Client {
            tracing::error!(token = %token, kind = ?v.kind, "startup token is not a client token; flagpost fetches features with client (backend) tokens only, so it is ignored");
            continue;
        }
        let projects = Projects::from_names(v.projects.iter().map(String::as_str));
        usable.push((token, Scope::new(v.environment.clone(), projects)));
    }
    usable
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Projects;

    fn source(env: &str, projects: Projects) -> Source {
        Source::new((
            Token::parse("*:development.x").unwrap(),
            Scope::new(env, projects),
        ))
    }

    #[test]
    fn one_poll_per_distinct_scope() {
        let p = |names: &[&str]| Projects::from_names(names.iter().copied());
        let sources = vec![
            source("dev", p(&["a"])),
            source("dev", Projects::All),
            source("dev", p(&["b"])),
            source("prod", p(&["a", "b"])),
            source("prod", p(&["b", "c"])),
            source("prod", p(&["a", "b"])),
        ];
        assert_eq!(needed_sources(&sources), [1, 3, 4]);
        let mut revoked = sources;
        revoked[1].revoked = true;
        assert_eq!(needed_sources(&revoked), [0, 2, 3, 4]);
    }

    fn names(projects: &[&str]) -> Projects {
        Projects::from_names(projects.iter().copied())
    }

    fn doc(features: &[(&str, &str)]) -> Arc<Document> {
        let list: Vec<String> = features
            .iter()
            .map(|(name, project)| {
                format!(
                    r#"{{"name":"{name}","enabled":true,"project":"{project}","strategies":[]}}"#
                )
            })
            .collect();
        let text = format!(r#"{{"version":2,"features":[{}]}}"#, list.join(","));
        Arc::new(Document::parse(text.as_bytes()).unwrap())
    }

    /// Revoking a startup token narrows the environment to what the live ones cover;
    /// reinstating it gives back exactly its scope, never more; other environments untouched.
    #[test]
    fn revocation_narrows_and_reinstatement_restores_the_live_scope() {
        let mut sources = vec![
            source("dev", names(&["a"])),
            source("dev", names(&["b", "c"])),
            source("prod", Projects::All),
        ];
        assert_eq!(live_projects(&sources, "dev"), names(&["a", "b", "c"]));
        sources[1].revoked = true;
        assert_eq!(live_projects(&sources, "dev"), names(&["a"]));
        assert_eq!(live_projects(&sources, "prod"), Projects::All);
        sources[0].revoked = true;
        assert_eq!(
            live_projects(&sources, "dev"),
            Projects::none(),
            "nothing left to serve"
        );
        sources[1].revoked = false;
        assert_eq!(live_projects(&sources, "dev"), names(&["b", "c"]));
        assert_eq!(live_projects(&sources, "staging"), Projects::none());
    }

    /// An environment's document is merged from every polling source, each for its own
    /// projects; nothing until all have answered; a revoked source's part is left out.
    #[test]
    fn several_sources_merge_by_project_once_all_have_answered() {
        let mut sources = vec![
            source("dev", names(&["a"])),
            source("dev", names(&["b"])),
            source("prod", names(&["a"])),
        ];
        for s in &mut sources {
            s.polling = true;
        }
        sources[0].document = Some(doc(&[("a.one", "a"), ("b.stray", "b")]));
        assert!(merged(&sources, "dev").is_none(), "b has not answered");
        sources[1].document = Some(doc(&[("b.one", "b"), ("a.stray", "a")]));
        let feature_names = |d: Document| -> Vec<String> {
            let mut n: Vec<String> = d.features.iter().map(|f| f.name.clone()).collect();
            n.sort();
            n
        };
        // Each source speaks for its projects only: the strays are not taken from it.
        assert_eq!(
            feature_names(merged(&sources, "dev").unwrap()),
            ["a.one", "b.one"]
        );
        sources[1].revoked = true;
        assert_eq!(feature_names(merged(&sources, "dev").unwrap()), ["a.one"]);
        assert!(merged(&sources, "prod").is_none(), "prod has not answered");
        assert!(merged(&sources, "staging").is_none(), "no source polls it");
    }

    fn verdict(token: &str, kind: UpstreamKind, env: &str, projects: &[&str]) -> ValidatedToken {
        ValidatedToken {
            token: token.to_string(),
            kind,
            projects: projects.iter().map(|p| p.to_string()).collect(),
            environment: env.to_string(),
        }
    }

    /// A startup token is used only as the client token upstream says it is, with the scope
    /// upstream gives it (not the one its text states); unknown and frontend ones are left out.
    #[test]
    fn startup_tokens_take_upstreams_word() {
        let tokens: Vec<Token> = [
            "*:development.client-a",
            "*:development.frontend-b",
            "*:development.unknown-c",
            "[]:production.client-d",
        ]
        .iter()
        .map(|t| Token::parse(t).unwrap())
        .collect();
        let validated = [
            verdict(
                "*:development.client-a",
                UpstreamKind::Client,
                "development",
                &["p1"],
            ),
            verdict(
                "*:development.frontend-b",
                UpstreamKind::Frontend,
                "development",
                &["*"],
            ),
            verdict(
                "[]:production.client-d",
                UpstreamKind::Client,
                "production",
                &["p2", "p3"],
            ),
        ];
        let usable = usable_startup_tokens(tokens, &validated);
        let shown: Vec<(String, Scope)> = usable
            .into_iter()
            .map(|(t, s)| (t.expose().to_string(), s))
            .collect();
        assert_eq!(
            shown,
            vec![
                (
                    "*:development.client-a".to_string(),
                    Scope::new("development", Projects::from_names(["p1"]))
                ),
                (
                    "[]:production.client-d".to_string(),
                    Scope::new("production", Projects::from_names(["p2", "p3"]))
                ),
            ]
        );
    }
}
