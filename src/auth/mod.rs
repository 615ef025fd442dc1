//! Token → [`Access`] (what the token is and the scope it may see).
//!
//! Locally configured tokens and client keys are compared in constant time, all of them on every
//! lookup, so timing says nothing about which one nearly matched. In edge mode, other tokens are
//! asked of upstream (`/edge/validate`) and the verdicts kept in two bounded caches: valid
//! tokens (checked again in one batch on an interval) and invalid ones (for a short TTL), so a
//! flood of bad tokens cannot push out good ones. Tokens that arrive together are validated in
//! one batch, and concurrent first requests with the same token cause one upstream call.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::config::ConfiguredToken;
use crate::metrics::Metrics;
use crate::token::{Scope, Shape, Token, TokenError, TokenKind};
use crate::upstream::{Upstream, ValidatedToken};

/// Most tokens in one `/edge/validate` call.
pub const MAX_VALIDATE_BATCH: usize = 100;
/// Most validations waiting for upstream; past this, requests with new tokens get 503.
const MAX_PENDING: usize = 10_000;
/// Most validations for `/edge/validate` callers waiting for upstream.
const MAX_RELAY_PENDING: usize = 1_000;

/// A token that may use SDK endpoints, and what it may see.
#[derive(Debug, Clone)]
pub struct Access {
    pub token: Token,
    pub kind: TokenKind,
    pub scope: Scope,
}

/// A verdict as the fleet shares it (see [`crate::fleet`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SharedVerdict {
    Valid(TokenKind, Scope),
    /// Unknown to upstream (or expired, deleted).
    Invalid,
    /// An admin token or personal access token.
    WrongType,
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
    #[error("upstream cannot be asked about this token now")]
    UpstreamUnavailable,
}

/// What a token is, as upstream said.
#[derive(Debug, Clone)]
struct Known {
    kind: TokenKind,
    scope: Scope,
}

/// Looks tokens up: the configured table first, then (edge mode) upstream.
#[derive(Debug)]
pub struct Authenticator {
    local: Vec<ConfiguredToken>,
    remote: Option<RemoteTokens>,
    /// Bumped when verdicts were revised (a revalidation), so that long-lived streams check
    /// their tokens again.
    revised: tokio::sync::watch::Sender<u64>,
}

impl Authenticator {
    /// An authenticator that knows exactly the configured tokens and client keys.
    pub fn offline(tokens: Vec<ConfiguredToken>) -> Authenticator {
        Authenticator {
            local: tokens,
            remote: None,
            revised: Default::default(),
        }
    }

    /// An authenticator that asks upstream about tokens it does not know. The returned
    /// [`Validator`] must run for requests with new tokens to be answered.
    pub fn edge(
        local: Vec<ConfiguredToken>,
        upstream: Arc<Upstream>,
        metrics: Arc<Metrics>,
        caches: (u64, Duration),
        budget: Budget,
    ) -> (Authenticator, Validator) {
        let (cache_size, invalid_ttl) = caches;
        let (tx, rx) = mpsc::channel(MAX_PENDING);
        let (relay_tx, relay_rx) = mpsc::channel(MAX_RELAY_PENDING);
        let valid = moka::sync::Cache::builder()
            .max_capacity(cache_size)
            .build();
        let invalid = moka::sync::Cache::builder()
            .max_capacity(cache_size)
            .time_to_live(invalid_ttl)
            .build();
        let digests = moka::sync::Cache::builder()
            .max_capacity(cache_size)
            .build();
        let caches = Caches {
            valid,
            invalid,
            digests,
        };
        let validator = Validator {
            sdk: Lane {
                rx,
                caches: caches.clone(),
                upstream: upstream.clone(),
                metrics: metrics.clone(),
                fleet: None,
            },
            relay: Lane {
                rx: relay_rx,
                caches: caches.clone(),
                upstream,
                metrics,
                fleet: None,
            },
        };
        let remote = RemoteTokens {
            caches,
            tx,
            relay_tx,
            budget,
            restored: arc_swap::ArcSwap::from_pointee(HashMap::new()),
        };
        (
            Authenticator {
                local,
                remote: Some(remote),
                revised: Default::default(),
            },
            validator,
        )
    }

    /// Resolves the raw `Authorization` header value.
    pub async fn resolve(&self, header: Option<&[u8]>) -> Result<Access, AuthError> {
        let token = parse_header(header)?;
        let result = match self.lookup(&token) {
            Lookup::Done(result) => result,
            Lookup::Ask(rx) => settle(token.clone(), rx.await),
        };
        self.or_restored(token, result)
    }

    /// [`Authenticator::resolve`], saying where the verdict came from: `configuration`,
    /// `cache` (upstream's earlier answer), `upstream` (asked now, or the fleet's shared
    /// verdict) or `backup`.
    pub async fn explain(
        &self,
        header: Option<&[u8]>,
    ) -> (Result<Access, AuthError>, &'static str) {
        let token = match parse_header(header) {
            Ok(t) => t,
            Err(e) => return (Err(e), "header"),
        };
        if let Some(result) = self.lookup_local(&token) {
            return (result, "configuration");
        }
        let Some(remote) = &self.remote else {
            return (Err(AuthError::Unknown), "configuration");
        };
        if let Some(result) = remote.known(&token) {
            return (result, "cache");
        }
        let asked = match remote.ask(&token, false) {
            Lookup::Done(result) => result,
            Lookup::Ask(rx) => settle(token.clone(), rx.await),
        };
        let unavailable = matches!(asked, Err(AuthError::UpstreamUnavailable));
        let result = self.or_restored(token, asked);
        let source = if unavailable && result.is_ok() {
            "backup"
        } else {
            "upstream"
        };
        (result, source)
    }

    /// Every request token this instance has a verdict for: the configured ones, and (edge
    /// mode) those upstream validated or refused. `None`: refused.
    pub fn known_tokens(&self) -> Vec<(String, Option<(TokenKind, Scope)>)> {
        let mut out: Vec<(String, Option<(TokenKind, Scope)>)> = self
            .local
            .iter()
            .map(|t| {
                (
                    t.token.expose().to_string(),
                    Some((t.kind, t.scope.clone())),
                )
            })
            .collect();
        if let Some(remote) = &self.remote {
            out.extend(
                remote
                    .caches
                    .valid
                    .iter()
                    .map(|(raw, k)| (raw.as_ref().clone(), Some((k.kind, k.scope)))),
            );
            out.extend(
                remote
                    .caches
                    .invalid
                    .iter()
                    .map(|(raw, _)| (raw.as_ref().clone(), None)),
            );
        }
        out
    }

    /// When upstream cannot be asked, a verdict restored from the backup still counts.
    fn or_restored(
        &self,
        token: Token,
        result: Result<Access, AuthError>,
    ) -> Result<Access, AuthError> {
        match (&result, &self.remote) {
            (Err(AuthError::UpstreamUnavailable), Some(remote)) => {
                let restored = remote.restored.load();
                if restored.is_empty() {
                    return result;
                }
                match restored.get(&crate::token::digest(token.expose())) {
                    Some(known) => Ok(Access {
                        token,
                        kind: known.kind,
                        scope: known.scope.clone(),
                    }),
                    None => result,
                }
            }
            _ => result,
        }
    }

    /// Verdicts restored from a backup (token digest → kind and scope), used only while
    /// upstream cannot be asked.
    pub fn restore(&self, tokens: HashMap<String, (TokenKind, Scope)>) {
        if let Some(remote) = &self.remote {
            let map = tokens
                .into_iter()
                .map(|(digest, (kind, scope))| (digest, Known { kind, scope }))
                .collect();
            remote.restored.store(Arc::new(map));
        }
    }

    /// The request tokens known valid, as token digests with what they may do (for the
    /// backup): those validated since start, and those restored from a backup and not seen since.
    pub fn verdicts(&self) -> Vec<(String, TokenKind, Scope)> {
        let Some(r) = &self.remote else {
            return Vec::new();
        };
        r.caches.valid.run_pending_tasks();
        let mut out: HashMap<String, (TokenKind, Scope)> = r
            .restored
            .load()
            .iter()
            .map(|(digest, known)| (digest.clone(), (known.kind, known.scope.clone())))
            .collect();
        for (raw, known) in r.caches.valid.iter() {
            out.insert(crate::token::digest(&raw), (known.kind, known.scope));
        }
        out.into_iter().map(|(d, (k, s))| (d, k, s)).collect()
    }

    /// Resolves several tokens at once for a `/edge/validate` caller. Tokens flagpost knows are
    /// answered from its caches; the unknown ones go upstream in one batch, on a lane of their
    /// own (SDK requests never wait behind them), and only within the caller's and the total
    /// budget: over it, as many as the budgets allow are asked (and cached) and the caller is
    /// told when to retry for the rest.
    pub async fn resolve_many(
        &self,
        tokens: impl IntoIterator<Item = Token>,
        caller: std::net::IpAddr,
    ) -> Result<Vec<Result<Access, AuthError>>, OverBudget> {
        let mut tokens = tokens.into_iter();
        let mut lookups: Vec<(Token, Option<Lookup>)> = Vec::new();
        let mut unknown = 0;
        // Whole unknown tokens the budgets allow now: past them the answer is 429 whatever the
        // rest holds, so a flood of random tokens costs one lookup more than the budget, not one
        // per token.
        let available = self
            .remote
            .as_ref()
            .map_or(usize::MAX, |r| r.budget.available(caller));
        let mut cut_short = false;
        for token in tokens.by_ref() {
            let known = self.known(&token).map(Lookup::Done);
            if known.is_none() {
                if unknown == available {
                    cut_short = true;
                    break;
                }
                unknown += 1;
            }
            lookups.push((token, known));
        }
        if let (Some(remote), true) = (&self.remote, unknown > 0 || cut_short) {
            // Past a cut, the tokens not looked at may all be unknown: claim them all.
            let not_looked_at = tokens.size_hint().1.unwrap_or(0) + 1;
            let claimed = unknown + if cut_short { not_looked_at } else { 0 };
            let (granted, over) = remote.budget.take(caller, claimed);
            let unasked = lookups.iter_mut().filter(|(_, l)| l.is_none());
            for (token, lookup) in unasked.take(granted) {
                *lookup = Some(remote.ask(token, true));
            }
            if let Some(over) = over {
                // The granted ones are still asked: their answers are cached for the retry.
                return Err(over);
            }
        }
        let mut out = Vec::with_capacity(lookups.len());
        for (token, lookup) in lookups {
            let result = match lookup {
                Some(Lookup::Done(result)) => result,
                Some(Lookup::Ask(rx)) => settle(token.clone(), rx.await),
                None => Err(AuthError::Unknown),
            };
            out.push(self.or_restored(token, result));
        }
        Ok(out)
    }

    /// What flagpost knows about `token` without asking upstream; `None`: upstream must be
    /// asked.
    fn known(&self, token: &Token) -> Option<Result<Access, AuthError>> {
        match self.lookup_local(token) {
            Some(result) => Some(result),
            None => match &self.remote {
                Some(remote) => remote.known(token),
                None => Some(Err(AuthError::Unknown)),
            },
        }
    }

    fn lookup(&self, token: &Token) -> Lookup {
        if let Some(result) = self.known(token) {
            return Lookup::Done(result);
        }
        match &self.remote {
            Some(remote) => remote.ask(token, false),
            None => Lookup::Done(Err(AuthError::Unknown)),
        }
    }

    /// The configured tokens and client keys (and the shapes never valid on SDK endpoints).
    fn lookup_local(&self, token: &Token) -> Option<Result<Access, AuthError>> {
        if matches!(token.shape(), Shape::Admin | Shape::PersonalAccess) {
            return Some(Err(AuthError::AdminOrPersonal));
        }
        let mut found: Option<&ConfiguredToken> = None;
        for entry in &self.local {
            // No early exit: every entry is compared.
            if entry.token.ct_eq(token.expose()) && found.is_none() {
                found = Some(entry);
            }
        }
        found.map(|entry| {
            Ok(Access {
                token: token.clone(),
                kind: entry.kind,
                scope: entry.scope.clone(),
            })
        })
    }

    /// Records what upstream said about tokens validated elsewhere (the startup tokens).
    pub fn remember(&self, validated: &[ValidatedToken]) {
        if let Some(remote) = &self.remote {
            remote.caches.record(validated, &[]);
        }
    }

    /// What upstream said about these tokens, in the form the fleet shares.
    pub fn shared_verdicts(validated: &[ValidatedToken]) -> Vec<(String, SharedVerdict)> {
        validated
            .iter()
            .filter_map(|v| Some((v.token.clone(), remote::verdict_of(v).shared()?)))
            .collect()
    }

    /// Refreshes the token-cache gauges.
    pub fn observe(&self, metrics: &Metrics) {
        if let Some(remote) = &self.remote {
            let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            remote.caches.valid.run_pending_tasks();
            remote.caches.invalid.run_pending_tasks();
            metrics
                .token_cache_entries
                .with_label_values(&["valid"])
                .set(count(remote.caches.valid.entry_count()));
            metrics
                .token_cache_entries
                .with_label_values(&["invalid"])
                .set(count(remote.caches.invalid.entry_count()));
        }
    }

    /// The raw tokens currently known valid (for revalidation).
    pub fn known_valid(&self) -> Vec<String> {
        self.remote
            .as_ref()
            .map(|r| {
                r.caches
                    .valid
                    .iter()
                    .map(|(k, _)| k.as_ref().clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Applies a revalidation answer: `asked` tokens absent from `validated` became invalid.
    pub fn revalidated(&self, asked: &[String], validated: &[ValidatedToken]) {
        if let Some(remote) = &self.remote {
            remote.caches.record(validated, asked);
        }
        self.revised.send_modify(|n| *n += 1);
    }

    /// A token the fleet found revoked (by its SHA-256): refused here too from now on. Returns
    /// how many known tokens it was (0 or 1).
    pub fn revoke_digest(&self, digest: &str) -> usize {
        let Some(remote) = &self.remote else {
            return 0;
        };
        let matching: Vec<String> = remote.caches.by_digest(digest).into_iter().collect();
        for raw in &matching {
            remote.caches.valid.invalidate(raw);
            remote
                .caches
                .invalid
                .insert(raw.clone(), AuthError::Unknown);
        }
        if !matching.is_empty() {
            self.revised.send_modify(|n| *n += 1);
        }
        matching.len()
    }

    /// Changes whenever verdicts were revised.
    pub fn revisions(&self) -> tokio::sync::watch::Receiver<u64> {
        self.revised.subscribe()
    }
}

enum Lookup {
    Done(Result<Access, AuthError>),
    Ask(oneshot::Receiver<Verdict>),
}

fn settle(
    token: Token,
    verdict: Result<Verdict, oneshot::error::RecvError>,
) -> Result<Access, AuthError> {
    match verdict {
        Ok(Verdict::Valid(known)) => Ok(Access {
            token,
            kind: known.kind,
            scope: known.scope,
        }),
        Ok(Verdict::Refused(e)) => Err(e),
        Ok(Verdict::Unavailable) | Err(_) => Err(AuthError::UpstreamUnavailable),
    }
}

mod budget;
mod header;
use header::parse_header;
mod remote;
mod shared;
mod validator;

pub use budget::{Budget, OverBudget};
use remote::{Caches, Pending, RemoteTokens, Verdict};
pub use shared::{BoxFuture, SharedVerdicts};
use validator::Lane;
pub use validator::{revalidate, Validator};

#[cfg(test)]
mod tests;
