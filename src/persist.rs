//! The optional backup folder (edge mode): each environment's features and the validated scopes
//! of the startup tokens (and of request tokens seen), written atomically after each change and
//! at shutdown, so flagpost can start, and be ready, while upstream is down.
//!
//! Tokens are stored as SHA-256 digests, never in clear. A backup never widens what flagpost
//! serves: at start, only the startup tokens configured now whose digest the backup holds get a
//! scope, the scope they had when last validated.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::snapshot::Document;
use crate::token::{Projects, Scope, Token, TokenKind};

const STATE_FILE: &str = "flagpost-state.json";
const FORMAT: u32 = 1;

/// The SHA-256 of a raw token, hex.
pub fn digest(raw: &str) -> String {
    let d = Sha256::digest(raw.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

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

/// A backup folder.
#[derive(Debug, Clone)]
pub struct Backup {
    dir: PathBuf,
}

/// A backup that cannot be read or written.
#[derive(Debug, thiserror::Error)]
#[error("backup folder {dir}: {problem}")]
pub struct BackupError {
    dir: String,
    problem: String,
}

impl Backup {
    pub fn new(dir: &Path) -> Backup {
        Backup {
            dir: dir.to_path_buf(),
        }
    }

    fn fail(&self, problem: impl Into<String>) -> BackupError {
        BackupError {
            dir: self.dir.display().to_string(),
            problem: problem.into(),
        }
    }

    fn features_path(&self, environment: &str) -> PathBuf {
        let name: String = environment.bytes().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("features-{name}.json"))
    }

    /// Writes `bytes` to `path` atomically: a temporary file, synced, then renamed over it.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), BackupError> {
        use std::io::Write as _;
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| self.fail(format!("cannot create it: {e}")))?;
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.fail(format!("cannot write {}: {e}", path.display())));
        }
        Ok(())
    }

    /// Writes the startup tokens' scopes and the request tokens' verdicts (token digests).
    pub fn save_state(
        &self,
        startup: &[(Token, Scope)],
        tokens: &[(String, TokenKind, Scope)],
    ) -> Result<(), BackupError> {
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
        let bytes = serde_json::to_vec_pretty(&state).map_err(|e| self.fail(e.to_string()))?;
        self.write_atomic(&self.dir.join(STATE_FILE), &bytes)
    }

    /// Writes one environment's features. An empty list never replaces a non-empty backup:
    /// an upstream that suddenly lists nothing is more often broken than right, and a restart
    /// in that window should not boot empty. Returns whether the file was written.
    pub fn save_features(
        &self,
        environment: &str,
        document: &Document,
    ) -> Result<bool, BackupError> {
        if document.features.is_empty() && self.has_features(environment) {
            tracing::warn!(
                environment,
                "not replacing the backed-up features with an empty list"
            );
            return Ok(false);
        }
        let text = document.to_json();
        let raw = RawValue::from_string(text).map_err(|e| self.fail(e.to_string()))?;
        let file = FeaturesFile {
            environment: environment.to_string(),
            features: &raw,
        };
        let bytes = serde_json::to_vec(&file).map_err(|e| self.fail(e.to_string()))?;
        self.write_atomic(&self.features_path(environment), &bytes)?;
        Ok(true)
    }

    /// Whether the backup holds at least one feature for `environment`.
    fn has_features(&self, environment: &str) -> bool {
        std::fs::read(self.features_path(environment))
            .ok()
            .and_then(|bytes| {
                let file: FeaturesFile<'_> = serde_json::from_slice(&bytes).ok()?;
                let doc = Document::parse(file.features.get().as_bytes()).ok()?;
                Some(!doc.features.is_empty())
            })
            .unwrap_or(false)
    }

    /// Reads the backup; `None` when there is none.
    pub fn load(&self) -> Result<Option<Restored>, BackupError> {
        let state_path = self.dir.join(STATE_FILE);
        let text = match std::fs::read(&state_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.fail(format!("cannot read {}: {e}", state_path.display()))),
        };
        let state: State = serde_json::from_slice(&text).map_err(|e| {
            self.fail(format!(
                "{} is not a flagpost backup: {e}",
                state_path.display()
            ))
        })?;
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
            let path = self.features_path(&env);
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let file: FeaturesFile<'_> = serde_json::from_slice(&bytes)
                .map_err(|e| self.fail(format!("{}: {e}", path.display())))?;
            let document = Document::parse(file.features.get().as_bytes())
                .map_err(|e| self.fail(format!("{}: {e}", path.display())))?;
            restored.documents.insert(env, document);
        }
        Ok(Some(restored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_without_clear_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let backup = Backup::new(&dir.path().join("nested"));
        assert!(backup.load().unwrap().is_none());
        let token = Token::parse("default:development.secret-in-clear-0001").unwrap();
        let scope = Scope::new("development", Projects::from_names(["default"]));
        let front = (
            digest("*:development.front-secret-0002"),
            TokenKind::Frontend,
            Scope::new("development", Projects::All),
        );
        backup
            .save_state(&[(token.clone(), scope.clone())], &[front])
            .unwrap();
        let doc = Document::parse(br#"{"features":[{"name":"a","enabled":true,"project":"default"}],"segments":[{"id":1,"constraints":[]}]}"#).unwrap();
        backup.save_features("development", &doc).unwrap();
        for entry in std::fs::read_dir(dir.path().join("nested")).unwrap() {
            let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
            assert!(
                !text.contains("secret-in-clear") && !text.contains("front-secret"),
                "{text}"
            );
            assert!(!text.contains("tmp-"));
        }
        let restored = backup.load().unwrap().unwrap();
        assert_eq!(restored.startup[&digest(token.expose())], scope);
        let (kind, s) = &restored.tokens[&digest("*:development.front-secret-0002")];
        assert_eq!(
            (*kind, s.projects.clone()),
            (TokenKind::Frontend, Projects::All)
        );
        assert_eq!(restored.documents["development"].features[0].name, "a");
        assert_eq!(restored.documents["development"].segments.len(), 1);
    }

    #[test]
    fn an_empty_list_never_replaces_a_non_empty_backup() {
        let dir = tempfile::tempdir().unwrap();
        let backup = Backup::new(dir.path());
        let full = Document::parse(br#"{"features":[{"name":"a","enabled":true}]}"#).unwrap();
        let empty = Document::parse(br#"{"features":[]}"#).unwrap();
        assert!(backup.save_features("development", &empty).unwrap());
        assert!(backup.save_features("development", &full).unwrap());
        assert!(!backup.save_features("development", &empty).unwrap());
        assert!(backup.has_features("development"));
        assert!(backup.save_features("production", &empty).unwrap());
    }

    #[test]
    fn a_broken_backup_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"{nope").unwrap();
        assert!(Backup::new(dir.path()).load().is_err());
    }
}
