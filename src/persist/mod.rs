//! The optional backup (edge mode), in a folder or an S3 bucket (`persist/place.rs`): each environment's
//! features and the validated scopes of the startup tokens (and of request tokens seen), each
//! replaced whole after each change and at shutdown, so flagpost can start, and be ready, while
//! upstream is down. Writes are made one at a time in the order they were asked for; an older
//! write that comes late is skipped rather than put over a newer one.
//!
//! Tokens are stored as SHA-256 digests, never in clear. A backup never widens what flagpost
//! serves: at start, only the startup tokens configured now whose digest the backup holds get a
//! scope, the scope they had when last validated.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::document::Document;
use crate::token::{Projects, Scope, Token, TokenKind};

mod place;
use crate::config::Bucket;
use place::Place;

const STATE_FILE: &str = "flagpost-state.json";
const FORMAT: u32 = 1;

use crate::token::digest;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct BackedScope {
    token_sha256: String,
    kind: TokenKind,
    environment: String,
    projects: Vec<String>,
}

impl BackedScope {
    fn of(token_sha256: String, kind: TokenKind, scope: &Scope) -> BackedScope {
        BackedScope {
            token_sha256,
            kind,
            environment: scope.environment.clone(),
            projects: scope.projects.names(),
        }
    }

    fn scope(&self) -> Scope {
        let projects = Projects::from_names(self.projects.iter().map(String::as_str));
        Scope::new(self.environment.clone(), projects)
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct State {
    format: u32,
    startup: Vec<BackedScope>,
    tokens: Vec<BackedScope>,
}

#[derive(Serialize, Deserialize)]
struct FeaturesFile<'a> {
    environment: String,
    #[serde(borrow)]
    features: &'a RawValue,
}

/// What a backup holds.
#[derive(Debug, Default)]
pub struct Restored {
    /// Startup token digest → validated scope.
    pub startup: HashMap<String, Scope>,
    /// Request token digest → kind and scope.
    pub tokens: HashMap<String, (TokenKind, Scope)>,
    pub documents: HashMap<String, Document>,
}

/// A backup: where it lives, the largest object read back, and the order of writes.
#[derive(Debug, Clone)]
pub struct Backup {
    place: Place,
    max_object: u64,
    order: Arc<WriteOrder>,
}

/// Each write takes a ticket when asked for; under the lock, a ticket older than the last one
/// written for the same object is skipped.
#[derive(Debug, Default)]
struct WriteOrder {
    next: AtomicU64,
    written: tokio::sync::Mutex<HashMap<String, u64>>,
}

/// A backup that cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{place}: {problem}")]
pub struct BackupError {
    place: String,
    problem: String,
}

fn features_name(environment: &str) -> String {
    let name: String = environment.bytes().map(|b| format!("{b:02x}")).collect();
    format!("features-{name}.json")
}

impl Backup {
    /// A backup folder; objects larger than `max_object` are not read back.
    pub fn folder(dir: &Path, max_object: u64) -> Backup {
        Backup::at(Place::folder(dir), max_object)
    }

    /// A backup bucket, its client built now (credentials are fetched when first used).
    pub fn bucket(
        bucket: &Bucket,
        timeout: std::time::Duration,
        max_object: u64,
    ) -> Result<Backup, BackupError> {
        let place = Place::bucket(bucket, timeout).map_err(|problem| BackupError {
            place: format!("backup bucket s3://{}", bucket.name),
            problem,
        })?;
        Ok(Backup::at(place, max_object))
    }

    fn at(place: Place, max_object: u64) -> Backup {
        Backup {
            place,
            max_object,
            order: Arc::default(),
        }
    }

    fn fail(&self, problem: impl Into<String>) -> BackupError {
        BackupError {
            place: self.place.describe(),
            problem: problem.into(),
        }
    }

    /// Writes `bytes` as `name` unless a write asked for later has already been made.
    async fn write_in_order(
        &self,
        name: String,
        ticket: u64,
        bytes: Vec<u8>,
    ) -> Result<bool, BackupError> {
        let mut written = self.order.written.lock().await;
        if written.get(&name).is_some_and(|&last| last > ticket) {
            return Ok(false);
        }
        self.place
            .write(&name, bytes)
            .await
            .map_err(|e| self.fail(e))?;
        written.insert(name, ticket);
        Ok(true)
    }

    fn ticket(&self) -> u64 {
        self.order.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Writes the startup tokens' scopes and the request tokens' verdicts (token digests). The
    /// write's place in the order is taken now; the returned future makes it.
    pub fn save_state(
        &self,
        startup: &[(Token, Scope)],
        tokens: &[(String, TokenKind, Scope)],
    ) -> impl std::future::Future<Output = Result<bool, BackupError>> + Send + 'static {
        let ticket = self.ticket();
        let state = State {
            format: FORMAT,
            startup: startup
                .iter()
                .map(|(t, s)| BackedScope::of(digest(t.expose()), TokenKind::Client, s))
                .collect(),
            tokens: tokens
                .iter()
                .map(|(d, kind, scope)| BackedScope::of(d.clone(), *kind, scope))
                .collect(),
        };
        let this = self.clone();
        async move {
            let bytes = serde_json::to_vec_pretty(&state).map_err(|e| this.fail(e.to_string()))?;
            this.write_in_order(STATE_FILE.into(), ticket, bytes).await
        }
    }

    /// Writes one environment's features. An empty list never replaces a non-empty backup:
    /// an upstream that suddenly lists nothing is more often broken than right, and a restart
    /// in that window should not boot empty. The write's place in the order is taken now; the
    /// returned future makes it and says whether it was written.
    pub fn save_features(
        &self,
        environment: &str,
        document: &Document,
    ) -> impl std::future::Future<Output = Result<bool, BackupError>> + Send + 'static {
        let ticket = self.ticket();
        let this = self.clone();
        let environment = environment.to_string();
        let empty = document.features.is_empty();
        let document = document.clone();
        async move {
            // Large flag sets take a while to write out: not on an async worker.
            let text = tokio::task::spawn_blocking(move || document.to_json())
                .await
                .map_err(|e| this.fail(e.to_string()))?;
            if empty && this.has_features(&environment).await {
                tracing::warn!(
                    environment,
                    "not replacing the backed-up features with an empty list"
                );
                return Ok(false);
            }
            let raw = RawValue::from_string(text).map_err(|e| this.fail(e.to_string()))?;
            let file = FeaturesFile {
                environment: environment.clone(),
                features: &raw,
            };
            let bytes = serde_json::to_vec(&file).map_err(|e| this.fail(e.to_string()))?;
            this.write_in_order(features_name(&environment), ticket, bytes)
                .await
        }
    }

    /// Whether the backup holds at least one feature for `environment`.
    async fn has_features(&self, environment: &str) -> bool {
        let Ok(Some(bytes)) = self
            .place
            .read(&features_name(environment), self.max_object)
            .await
        else {
            return false;
        };
        let parsed = (|| {
            let file: FeaturesFile<'_> = serde_json::from_slice(&bytes).ok()?;
            let doc = Document::parse(file.features.get().as_bytes()).ok()?;
            Some(!doc.features.is_empty())
        })();
        parsed.unwrap_or(false)
    }

    /// Reads the backup; `None` when there is none.
    pub async fn load(&self) -> Result<Option<Restored>, BackupError> {
        let Some(text) = self
            .place
            .read(STATE_FILE, self.max_object)
            .await
            .map_err(|e| self.fail(e))?
        else {
            return Ok(None);
        };
        let state: State = serde_json::from_slice(&text)
            .map_err(|e| self.fail(format!("{STATE_FILE} is not a flagpost backup: {e}")))?;
        if state.format != FORMAT {
            return Err(self.fail(format!("unknown backup format {}", state.format)));
        }
        let mut restored = Restored::default();
        for s in &state.startup {
            restored.startup.insert(s.token_sha256.clone(), s.scope());
        }
        for t in &state.tokens {
            restored
                .tokens
                .insert(t.token_sha256.clone(), (t.kind, t.scope()));
        }
        let environments: std::collections::BTreeSet<String> = state
            .startup
            .iter()
            .map(|s| s.environment.clone())
            .collect();
        for env in environments {
            let name = features_name(&env);
            let Some(bytes) = self
                .place
                .read(&name, self.max_object)
                .await
                .map_err(|e| self.fail(e))?
            else {
                continue;
            };
            let file: FeaturesFile<'_> =
                serde_json::from_slice(&bytes).map_err(|e| self.fail(format!("{name}: {e}")))?;
            let document = Document::parse(file.features.get().as_bytes())
                .map_err(|e| self.fail(format!("{name}: {e}")))?;
            restored.documents.insert(env, document);
        }
        Ok(Some(restored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trips_without_clear_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let backup = Backup::folder(&dir.path().join("nested"), 1 << 20);
        assert!(backup.load().await.unwrap().is_none());
        let token = Token::parse("default:development.secret-in-clear-0001").unwrap();
        let scope = Scope::new("development", Projects::from_names(["default"]));
        let front = (
            digest("*:development.front-secret-0002"),
            TokenKind::Frontend,
            Scope::new("development", Projects::All),
        );
        backup
            .save_state(&[(token.clone(), scope.clone())], &[front])
            .await
            .unwrap();
        let doc = Document::parse(br#"{"features":[{"name":"a","enabled":true,"project":"default"}],"segments":[{"id":1,"constraints":[]}]}"#).unwrap();
        backup.save_features("development", &doc).await.unwrap();
        for entry in std::fs::read_dir(dir.path().join("nested")).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            assert!(
                !text.contains("secret-in-clear") && !text.contains("front-secret"),
                "{text}"
            );
            assert!(!text.contains("tmp-"));
        }
        let restored = backup.load().await.unwrap().unwrap();
        assert_eq!(restored.startup[&digest(token.expose())], scope);
        let (kind, s) = &restored.tokens[&digest("*:development.front-secret-0002")];
        assert_eq!(
            (*kind, s.projects.clone()),
            (TokenKind::Frontend, Projects::All)
        );
        assert_eq!(restored.documents["development"].features[0].name, "a");
        assert_eq!(restored.documents["development"].segments.len(), 1);
    }

    #[tokio::test]
    async fn an_empty_list_never_replaces_a_non_empty_backup() {
        let dir = tempfile::tempdir().unwrap();
        let backup = Backup::folder(dir.path(), 1 << 20);
        let full = Document::parse(br#"{"features":[{"name":"a","enabled":true}]}"#).unwrap();
        let empty = Document::parse(br#"{"features":[]}"#).unwrap();
        assert!(backup.save_features("development", &empty).await.unwrap());
        assert!(backup.save_features("development", &full).await.unwrap());
        assert!(!backup.save_features("development", &empty).await.unwrap());
        assert!(backup.has_features("development").await);
        assert!(backup.save_features("production", &empty).await.unwrap());
    }

    #[tokio::test]
    async fn a_broken_backup_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"{nope").unwrap();
        assert!(Backup::folder(dir.path(), 1 << 20).load().await.is_err());
    }

    #[tokio::test]
    async fn a_write_asked_for_earlier_never_lands_over_a_later_one() {
        let dir = tempfile::tempdir().unwrap();
        let backup = Backup::folder(dir.path(), 1 << 20);
        let old = Document::parse(br#"{"features":[{"name":"old","enabled":true}]}"#).unwrap();
        let new = Document::parse(br#"{"features":[{"name":"new","enabled":true}]}"#).unwrap();
        let first = backup.save_features("development", &old);
        let second = backup.save_features("development", &new);
        assert!(second.await.unwrap());
        assert!(!first.await.unwrap());
        let restored = Backup::folder(dir.path(), 1 << 20);
        restored
            .save_state(
                &[(
                    Token::parse("*:development.abc12345678").unwrap(),
                    Scope::new("development", Projects::All),
                )],
                &[],
            )
            .await
            .unwrap();
        let docs = restored.load().await.unwrap().unwrap().documents;
        assert_eq!(docs["development"].features[0].name, "new");
    }

    #[tokio::test]
    async fn an_object_over_the_bound_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), vec![b' '; 2048]).unwrap();
        let e = Backup::folder(dir.path(), 1024).load().await.unwrap_err();
        assert!(e.to_string().contains("larger than 1024"), "{e}");
    }
}
