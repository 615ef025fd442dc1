//! The startup tokens as sources of features: which of them must be polled (one per distinct
//! scope), and an environment's document merged from their answers.

use std::sync::Arc;
use std::time::SystemTime;

use crate::document::Document;
use crate::token::{Projects, Scope, Token};

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
}
