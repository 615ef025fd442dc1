//! What upstream said about tokens: the verdict caches, and the queues to the validation
//! lanes.

use std::collections::HashMap;

use tokio::sync::{mpsc, oneshot};

use super::{settle, Access, AuthError, Budget, Known, Lookup};
use crate::token::{Projects, Scope, Shape, Token};
use crate::upstream::ValidatedToken;

#[derive(Debug, Clone)]
pub(super) enum Verdict {
    Valid(Known),
    Refused(AuthError),
    Unavailable,
}

#[derive(Clone)]
pub(super) struct Caches {
    pub(super) valid: moka::sync::Cache<String, Known>,
    pub(super) invalid: moka::sync::Cache<String, AuthError>,
    /// SHA-256 of each valid token → the token, so a revocation the fleet announces by digest
    /// finds it without hashing every cached token. Bounded like `valid`.
    pub(super) digests: moka::sync::Cache<String, String>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Caches")
    }
}

impl Caches {
    /// Remembers `raw` as valid, findable by its digest.
    fn insert_valid(&self, raw: &str, known: Known) {
        self.invalid.invalidate(raw);
        self.digests
            .insert(crate::token::digest(raw), raw.to_string());
        self.valid.insert(raw.to_string(), known);
    }

    /// The cached token whose SHA-256 is `digest`, if any.
    pub(super) fn by_digest(&self, digest: &str) -> Option<String> {
        self.digests
            .get(digest)
            .filter(|raw| self.valid.contains_key(raw))
    }

    pub(super) fn get(&self, raw: &str) -> Option<Verdict> {
        if let Some(known) = self.valid.get(raw) {
            return Some(Verdict::Valid(known));
        }
        self.invalid.get(raw).map(Verdict::Refused)
    }

    /// Stores a verdict the fleet shared; returns it as a local verdict.
    pub(super) fn put_shared(&self, raw: &str, shared: &super::SharedVerdict) -> Verdict {
        use super::SharedVerdict;
        match shared {
            SharedVerdict::Valid(kind, scope) => {
                let known = Known {
                    kind: *kind,
                    scope: scope.clone(),
                };
                self.insert_valid(raw, known.clone());
                Verdict::Valid(known)
            }
            SharedVerdict::Invalid | SharedVerdict::WrongType => {
                let e = if *shared == SharedVerdict::WrongType {
                    AuthError::AdminOrPersonal
                } else {
                    AuthError::Unknown
                };
                self.valid.invalidate(raw);
                self.invalid.insert(raw.to_string(), e.clone());
                Verdict::Refused(e)
            }
        }
    }

    /// Stores upstream's answer. Tokens in `asked` but not in `validated` are invalid.
    pub(super) fn record(
        &self,
        validated: &[ValidatedToken],
        asked: &[String],
    ) -> HashMap<String, Verdict> {
        let mut verdicts = HashMap::new();
        for v in validated {
            let verdict = verdict_of(v);
            match &verdict {
                Verdict::Valid(known) => {
                    self.insert_valid(&v.token, known.clone());
                }
                Verdict::Refused(e) => {
                    self.valid.invalidate(&v.token);
                    self.invalid.insert(v.token.clone(), e.clone());
                }
                Verdict::Unavailable => {}
            }
            verdicts.insert(v.token.clone(), verdict);
        }
        for raw in asked {
            if !verdicts.contains_key(raw) {
                self.valid.invalidate(raw);
                self.invalid.insert(raw.clone(), AuthError::Unknown);
                verdicts.insert(raw.clone(), Verdict::Refused(AuthError::Unknown));
            }
        }
        verdicts
    }
}

impl Verdict {
    /// The verdict to share with the fleet (`None`: nothing to share).
    pub(super) fn shared(&self) -> Option<super::SharedVerdict> {
        use super::SharedVerdict;
        match self {
            Verdict::Valid(k) => Some(SharedVerdict::Valid(k.kind, k.scope.clone())),
            Verdict::Refused(AuthError::AdminOrPersonal) => Some(SharedVerdict::WrongType),
            Verdict::Refused(_) => Some(SharedVerdict::Invalid),
            Verdict::Unavailable => None,
        }
    }
}

/// What `/edge/validate` says a token is.
pub(super) fn verdict_of(v: &ValidatedToken) -> Verdict {
    let Some(kind) = v.kind.sdk_kind() else {
        return Verdict::Refused(AuthError::AdminOrPersonal);
    };
    if v.environment.is_empty() || v.environment == "*" {
        return Verdict::Refused(AuthError::AdminOrPersonal);
    }
    let projects = if v.projects.is_empty() {
        Projects::none()
    } else {
        Projects::from_names(v.projects.iter().map(String::as_str))
    };
    Verdict::Valid(Known {
        kind,
        scope: Scope::new(v.environment.clone(), projects),
    })
}

#[derive(Debug)]
pub(super) struct RemoteTokens {
    pub(super) caches: Caches,
    /// Tokens seen on SDK requests.
    pub(super) tx: mpsc::Sender<Pending>,
    /// Tokens from `/edge/validate` callers, within `budget`.
    pub(super) relay_tx: mpsc::Sender<Pending>,
    pub(super) budget: Budget,
    /// Token digest → verdict, from a backup.
    pub(super) restored: arc_swap::ArcSwap<HashMap<String, Known>>,
}

pub(super) struct Pending {
    pub(super) token: String,
    pub(super) reply: oneshot::Sender<Verdict>,
    /// The waiting request's trace, when traces are exported: the validation joins it.
    pub(super) trace: Option<opentelemetry::Context>,
}

impl RemoteTokens {
    /// The cached verdict, if any; `None` when upstream must be asked.
    pub(super) fn known(&self, token: &Token) -> Option<Result<Access, AuthError>> {
        // Only Unleash-shaped tokens can be known upstream; the rest never leave flagpost.
        if !matches!(token.shape(), Shape::Scoped { .. } | Shape::Legacy) {
            return Some(Err(AuthError::Unknown));
        }
        let verdict = self.caches.get(token.expose())?;
        Some(settle(token.clone(), Ok(verdict)))
    }

    /// Queues `token` for upstream validation: on the SDK lane, or (`relay`) on the lane of
    /// `/edge/validate` callers.
    pub(super) fn ask(&self, token: &Token, relay: bool) -> Lookup {
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            token: token.expose().to_string(),
            reply,
            trace: crate::otel::propagate::current(),
        };
        let tx = if relay { &self.relay_tx } else { &self.tx };
        match tx.try_send(pending) {
            Ok(()) => Lookup::Ask(rx),
            Err(_) => Lookup::Done(Err(AuthError::UpstreamUnavailable)),
        }
    }
}
