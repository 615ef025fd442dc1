//! What a follower checks before it serves a snapshot from the shared store, and what it
//! takes from it: the head must be young and small enough, the document must match its hash
//! and parse, and the poller's serving projects narrow what this instance serves. Decisions
//! only: the caller logs and counts.

use std::time::Duration;

use super::shared::{Head, Record};
use crate::document::{Document, DocumentError};
use crate::token::Projects;

/// The hash a record's document is stored with.
pub(super) fn hash_of(document: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(document.as_bytes()))
}

/// Why a record's head is not worth reading.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Unusable {
    /// Upstream last confirmed it longer ago than `store.max_age`.
    TooOld,
    /// Larger than this instance would take from upstream.
    TooLarge,
}

pub(super) fn check_head(head: &Head, max_age: Duration, max_size: usize) -> Result<(), Unusable> {
    if head.age_ms > i64::try_from(max_age.as_millis()).unwrap_or(i64::MAX) {
        return Err(Unusable::TooOld);
    }
    if head.size > max_size {
        return Err(Unusable::TooLarge);
    }
    Ok(())
}

/// Why a record read in full is not served.
#[derive(Debug)]
pub(super) enum Rejected {
    HashMismatch,
    NotADocument(DocumentError),
}

/// The record's document and hash, when its hash matches and it parses (blocking work).
pub(super) fn decode(record: &Record) -> Result<(Document, String), Rejected> {
    let hash = hash_of(&record.document);
    if hash != record.hash {
        return Err(Rejected::HashMismatch);
    }
    Document::parse(record.document.as_bytes())
        .map(|d| (d, hash))
        .map_err(Rejected::NotADocument)
}

/// The poller's serving projects, when the record names them (a list of project names).
pub(super) fn poller_scope(record: &Record) -> Option<Projects> {
    let list: Vec<String> = serde_json::from_str(record.scopes.as_deref()?).ok()?;
    Some(Projects::from_names(list.iter().map(String::as_str)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const DOC: &str = r#"{"version":2,"features":[{"name":"a","enabled":true,"project":"default","strategies":[]}]}"#;

    fn record(document: &str, hash: String, scopes: Option<&str>) -> Record {
        Record {
            version: 7,
            hash,
            document: document.to_string(),
            confirmed_at: 1,
            scopes: scopes.map(str::to_string),
        }
    }

    fn head(age_ms: i64, size: usize) -> Head {
        Head {
            version: 7,
            hash: hash_of(DOC),
            confirmed_at: 1,
            age_ms,
            size,
        }
    }

    #[test]
    fn a_head_too_old_or_too_large_is_not_read() {
        let day = Duration::from_secs(86_400);
        assert_eq!(check_head(&head(1_000, 100), day, 1_000), Ok(()));
        assert_eq!(
            check_head(&head(86_400_001, 100), day, 1_000),
            Err(Unusable::TooOld)
        );
        assert_eq!(
            check_head(&head(86_400_000, 100), day, 1_000),
            Ok(()),
            "at the limit"
        );
        assert_eq!(
            check_head(&head(0, 1_001), day, 1_000),
            Err(Unusable::TooLarge)
        );
    }

    #[test]
    fn a_record_must_match_its_hash_and_be_a_features_document() {
        let (doc, hash) = decode(&record(DOC, hash_of(DOC), None)).unwrap();
        assert_eq!(doc.features.len(), 1);
        assert_eq!(hash, hash_of(DOC));
        let altered = DOC.replace("true", "false");
        assert!(matches!(
            decode(&record(&altered, hash_of(DOC), None)),
            Err(Rejected::HashMismatch)
        ));
        let garbage = r#"{"features":"nope"}"#;
        assert!(matches!(
            decode(&record(garbage, hash_of(garbage), None)),
            Err(Rejected::NotADocument(_))
        ));
    }

    #[test]
    fn the_pollers_scope_is_read_only_from_a_list_of_names() {
        let r = record(DOC, hash_of(DOC), Some(r#"["default","b"]"#));
        assert_eq!(
            poller_scope(&r),
            Some(Projects::from_names(["default", "b"]))
        );
        assert_eq!(poller_scope(&record(DOC, hash_of(DOC), None)), None);
        assert_eq!(poller_scope(&record(DOC, hash_of(DOC), Some("{bad"))), None);
    }
}
