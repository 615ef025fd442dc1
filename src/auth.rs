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
use tokio_util::sync::CancellationToken;

use crate::config::ConfiguredToken;
use crate::metrics::Metrics;
use crate::token::{Projects, Scope, Shape, Token, TokenError, TokenKind};
use crate::upstream::{Upstream, UpstreamError, ValidatedToken};

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
}

impl Authenticator {
    /// An authenticator that knows exactly the configured tokens and client keys.
    pub fn offline(tokens: Vec<ConfiguredToken>) -> Authenticator {
        Authenticator {
            local: tokens,
            remote: None,
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
        let caches = Caches { valid, invalid };
        let validator = Validator {
            sdk: Lane {
                rx,
                caches: caches.clone(),
                upstream: upstream.clone(),
                metrics: metrics.clone(),
            },
            relay: Lane {
                rx: relay_rx,
                caches: caches.clone(),
                upstream,
                metrics,
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
                match restored.get(&crate::persist::digest(token.expose())) {
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
            out.insert(crate::persist::digest(&raw), (known.kind, known.scope));
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
    }
}

fn parse_header(header: Option<&[u8]>) -> Result<Token, AuthError> {
    let Some(bytes) = header else {
        return Err(AuthError::Missing);
    };
    let text = std::str::from_utf8(bytes)
        .map_err(|_| AuthError::Malformed(TokenError::InvalidCharacter))?;
    match Token::parse(text) {
        Ok(t) => Ok(t),
        Err(TokenError::Empty) => Err(AuthError::Missing),
        Err(e) => Err(AuthError::Malformed(e)),
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

#[derive(Debug, Clone)]
enum Verdict {
    Valid(Known),
    Refused(AuthError),
    Unavailable,
}

#[derive(Clone)]
struct Caches {
    valid: moka::sync::Cache<String, Known>,
    invalid: moka::sync::Cache<String, AuthError>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Caches")
    }
}

impl Caches {
    fn get(&self, raw: &str) -> Option<Verdict> {
        if let Some(known) = self.valid.get(raw) {
            return Some(Verdict::Valid(known));
        }
        self.invalid.get(raw).map(Verdict::Refused)
    }

    /// Stores upstream's answer. Tokens in `asked` but not in `validated` are invalid.
    fn record(&self, validated: &[ValidatedToken], asked: &[String]) -> HashMap<String, Verdict> {
        let mut verdicts = HashMap::new();
        for v in validated {
            let verdict = verdict_of(v);
            match &verdict {
                Verdict::Valid(known) => {
                    self.invalid.invalidate(&v.token);
                    self.valid.insert(v.token.clone(), known.clone());
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

/// What `/edge/validate` says a token is.
fn verdict_of(v: &ValidatedToken) -> Verdict {
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
struct RemoteTokens {
    caches: Caches,
    /// Tokens seen on SDK requests.
    tx: mpsc::Sender<Pending>,
    /// Tokens from `/edge/validate` callers, within `budget`.
    relay_tx: mpsc::Sender<Pending>,
    budget: Budget,
    /// Token digest → verdict, from a backup.
    restored: arc_swap::ArcSwap<HashMap<String, Known>>,
}

struct Pending {
    token: String,
    reply: oneshot::Sender<Verdict>,
}

impl RemoteTokens {
    /// The cached verdict, if any; `None` when upstream must be asked.
    fn known(&self, token: &Token) -> Option<Result<Access, AuthError>> {
        // Only Unleash-shaped tokens can be known upstream; the rest never leave flagpost.
        if !matches!(token.shape(), Shape::Scoped { .. } | Shape::Legacy) {
            return Some(Err(AuthError::Unknown));
        }
        let verdict = self.caches.get(token.expose())?;
        Some(settle(token.clone(), Ok(verdict)))
    }

    /// Queues `token` for upstream validation: on the SDK lane, or (`relay`) on the lane of
    /// `/edge/validate` callers.
    fn ask(&self, token: &Token, relay: bool) -> Lookup {
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            token: token.expose().to_string(),
            reply,
        };
        let tx = if relay { &self.relay_tx } else { &self.tx };
        match tx.try_send(pending) {
            Ok(()) => Lookup::Ask(rx),
            Err(_) => Lookup::Done(Err(AuthError::UpstreamUnavailable)),
        }
    }
}

/// How many unknown tokens `/edge/validate` callers may have checked upstream: a token bucket
/// per caller address (bounded in number) and one for all of them, each refilled evenly over a
/// minute.
#[derive(Debug)]
pub struct Budget {
    per_caller: u64,
    total: u64,
    callers: moka::sync::Cache<std::net::IpAddr, Arc<std::sync::Mutex<Bucket>>>,
    all: std::sync::Mutex<Bucket>,
    metrics: Arc<Metrics>,
}

/// A refused `/edge/validate`: which budget ran out, and in how many seconds it allows the
/// request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    pub budget: &'static str,
    pub retry_after: u32,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: std::time::Instant,
}

impl Bucket {
    fn full(capacity: u64, now: std::time::Instant) -> Bucket {
        Bucket {
            tokens: capacity as f64,
            last: now,
        }
    }

    /// Refills for the time passed since the last call, up to `capacity`.
    fn refill(&mut self, capacity: u64, now: std::time::Instant) {
        let passed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + passed * capacity as f64 / 60.0).min(capacity as f64);
        self.last = now;
    }

    /// Whole tokens there now.
    fn whole(&self) -> usize {
        self.tokens.max(0.0).floor() as usize
    }

    /// Seconds until `n` (at most `capacity`) are there, at least 1, at most 60.
    fn seconds_until(&self, capacity: u64, n: usize) -> u32 {
        let n = (n as f64).min(capacity as f64);
        let missing = n - self.tokens;
        let per_second = (capacity as f64 / 60.0).max(f64::MIN_POSITIVE);
        (missing / per_second).ceil().clamp(1.0, 60.0) as u32
    }
}

/// Most caller addresses whose budgets are remembered.
const MAX_BUDGET_CALLERS: u64 = 10_000;

impl Budget {
    pub fn new(per_caller: u64, total: u64, metrics: Arc<Metrics>) -> Budget {
        Budget {
            per_caller,
            total,
            callers: moka::sync::Cache::builder()
                .max_capacity(MAX_BUDGET_CALLERS)
                .time_to_idle(Duration::from_secs(120))
                .build(),
            all: std::sync::Mutex::new(Bucket::full(total, std::time::Instant::now())),
            metrics,
        }
    }

    /// Takes as many of `n` as both the caller's and the total budget allow, from both.
    /// Returns how many were granted and, when not all, which budget ran out and when to retry
    /// for the rest. The granted ones are asked upstream, so a caller with more unknown tokens
    /// than its budget makes progress on every retry.
    /// Whole tokens both the caller's and the total budget hold now.
    fn available(&self, caller: std::net::IpAddr) -> usize {
        let now = std::time::Instant::now();
        let whole = |bucket: &std::sync::Mutex<Bucket>, capacity| {
            let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
            b.refill(capacity, now);
            b.whole()
        };
        let mine = self
            .callers
            .get(&caller)
            .map_or(self.per_caller as usize, |b| whole(&b, self.per_caller));
        mine.min(whole(&self.all, self.total))
    }

    fn take(&self, caller: std::net::IpAddr, n: usize) -> (usize, Option<OverBudget>) {
        self.take_at(caller, n, std::time::Instant::now())
    }

    fn take_at(
        &self,
        caller: std::net::IpAddr,
        n: usize,
        now: std::time::Instant,
    ) -> (usize, Option<OverBudget>) {
        let bucket = self.callers.get_with(caller, || {
            Arc::new(std::sync::Mutex::new(Bucket::full(self.per_caller, now)))
        });
        let mut mine = bucket.lock().unwrap_or_else(|p| p.into_inner());
        let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        mine.refill(self.per_caller, now);
        all.refill(self.total, now);
        let granted = n.min(mine.whole()).min(all.whole());
        mine.tokens -= granted as f64;
        all.tokens -= granted as f64;
        if granted == n {
            return (n, None);
        }
        let rest = n - granted;
        let (budget, retry_after) = if mine.whole() == 0 {
            ("caller", mine.seconds_until(self.per_caller, rest))
        } else {
            ("total", all.seconds_until(self.total, rest))
        };
        self.metrics
            .validate_budget_refused
            .with_label_values(&[budget])
            .inc();
        (
            granted,
            Some(OverBudget {
                budget,
                retry_after,
            }),
        )
    }
}

/// The background work that asks upstream about new tokens, in batches: one lane for tokens
/// seen on SDK requests and one for `/edge/validate` callers, each with its own queue and
/// upstream calls, so a flood on one never delays the other.
pub struct Validator {
    sdk: Lane,
    relay: Lane,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Validator")
    }
}

impl Validator {
    /// Runs both lanes until `cancel`.
    pub async fn run(self, cancel: CancellationToken) {
        tokio::join!(self.sdk.run(cancel.clone()), self.relay.run(cancel));
    }
}

struct Lane {
    rx: mpsc::Receiver<Pending>,
    caches: Caches,
    upstream: Arc<Upstream>,
    metrics: Arc<Metrics>,
}

impl Lane {
    /// Runs until `cancel`: takes every validation waiting, asks upstream once for the tokens
    /// not yet known, answers every waiter.
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut failing = false;
        loop {
            let first = tokio::select! {
                _ = cancel.cancelled() => return,
                next = self.rx.recv() => match next {
                    Some(p) => p,
                    None => return,
                },
            };
            let mut waiting: HashMap<String, Vec<oneshot::Sender<Verdict>>> = HashMap::new();
            let mut next = Some(first);
            while let Some(p) = next.take() {
                match self.caches.get(&p.token) {
                    // Answered by an earlier batch while this one waited.
                    Some(verdict) => {
                        let _ = p.reply.send(verdict);
                    }
                    None => waiting.entry(p.token).or_default().push(p.reply),
                }
                if waiting.len() < MAX_VALIDATE_BATCH {
                    next = self.rx.try_recv().ok();
                }
            }
            if waiting.is_empty() {
                continue;
            }
            let asked: Vec<String> = waiting.keys().cloned().collect();
            let refs: Vec<&str> = asked.iter().map(String::as_str).collect();
            match self.upstream.validate(&refs, &self.metrics).await {
                Ok(validated) => {
                    if failing {
                        tracing::info!("token validation upstream works again");
                        failing = false;
                    }
                    let verdicts = self.caches.record(&validated, &asked);
                    for (raw, replies) in waiting {
                        let verdict = verdicts.get(&raw).cloned().unwrap_or(Verdict::Unavailable);
                        let result = match &verdict {
                            Verdict::Valid(_) => "valid",
                            Verdict::Refused(AuthError::AdminOrPersonal) => "wrong_type",
                            Verdict::Refused(_) => "invalid",
                            Verdict::Unavailable => "unavailable",
                        };
                        self.metrics
                            .token_validations
                            .with_label_values(&[result])
                            .inc_by(replies.len() as u64);
                        for reply in replies {
                            let _ = reply.send(verdict.clone());
                        }
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot validate new tokens upstream; requests with tokens not seen before get 503 until it answers");
                        failing = true;
                    }
                    for replies in waiting.into_values() {
                        self.metrics
                            .token_validations
                            .with_label_values(&["unavailable"])
                            .inc_by(replies.len() as u64);
                        for reply in replies {
                            let _ = reply.send(Verdict::Unavailable);
                        }
                    }
                }
            }
        }
    }
}

/// Validates every known-valid token again, in batches, every `interval`, until `cancel`. A
/// token upstream no longer knows becomes invalid.
pub async fn revalidate(
    auth: Arc<Authenticator>,
    (upstream, metrics): (Arc<Upstream>, Arc<Metrics>),
    interval: Duration,
    cancel: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let known = auth.known_valid();
        for chunk in known.chunks(MAX_VALIDATE_BATCH) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            match upstream.validate(&refs, &metrics).await {
                Ok(validated) => {
                    let dropped = chunk
                        .iter()
                        .filter(|raw| !validated.iter().any(|v| &v.token == *raw))
                        .count();
                    if dropped > 0 {
                        tracing::info!(tokens = dropped, "tokens no longer valid upstream");
                    }
                    auth.revalidated(chunk, &validated);
                }
                Err(UpstreamError::Unreachable(e)) => {
                    tracing::warn!(error = %e, "token revalidation skipped: upstream unreachable");
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "token revalidation skipped");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_validation_queue_answers_unavailable_at_once() {
        use crate::config::{Config, Invocation, Mode};
        let args = [
            "flagpost",
            "--config",
            "/dev/null",
            "edge",
            "-u",
            "http://127.0.0.1:9",
        ];
        let Ok(Invocation::Serve(config)) =
            Config::from_args(args.into_iter().chain(["-t", "*:development.startup-0001"]))
        else {
            panic!("not a config")
        };
        let Mode::Edge(edge) = &config.mode else {
            panic!("not edge")
        };
        let upstream = Arc::new(Upstream::new(edge, "flagpost", "test").unwrap());
        let metrics = Arc::new(Metrics::new(&[]));
        let budget = Budget::new(1, 1, metrics.clone());
        let caches = (100, Duration::from_secs(60));
        // The validator is not run: nothing takes tokens off the queue.
        let (auth, _validator) = Authenticator::edge(vec![], upstream, metrics, caches, budget);
        let token = |i: usize| Token::parse(&format!("*:development.never-seen-{i:05}")).unwrap();
        for i in 0..MAX_PENDING {
            assert!(
                matches!(auth.lookup(&token(i)), Lookup::Ask(_)),
                "{i} queued"
            );
        }
        assert!(matches!(
            auth.lookup(&token(MAX_PENDING)),
            Lookup::Done(Err(AuthError::UpstreamUnavailable))
        ));
    }

    #[test]
    fn budgets_grant_what_they_hold_and_say_when_the_rest_can_come() {
        let budget = Budget::new(50, 80, Arc::new(Metrics::new(&[])));
        let t0 = std::time::Instant::now();
        let (a, b): (std::net::IpAddr, std::net::IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert_eq!(budget.take_at(a, 40, t0), (40, None));
        // Ten left for this caller: granted, the other 30 refused until they refill (50/min).
        let over = OverBudget {
            budget: "caller",
            retry_after: 36,
        };
        assert_eq!(budget.take_at(a, 40, t0), (10, Some(over)));
        // Another caller has its own budget, but only 30 remain in the total one.
        let (granted, over) = budget.take_at(b, 45, t0);
        assert_eq!(granted, 30);
        assert_eq!(over.unwrap().budget, "total");
        // More than a whole budget: it is granted in parts, never refused for good.
        let later = t0 + Duration::from_secs(60);
        let (granted, over) = budget.take_at(a, 500, later);
        assert_eq!(granted, 50);
        assert_eq!(over.unwrap().retry_after, 60);
        // Refilled evenly: 12 s give a fifth of the caller's budget.
        assert_eq!(
            budget.take_at(a, 10, later + Duration::from_secs(12)),
            (10, None)
        );
        let refused = |b: &str| {
            budget
                .metrics
                .validate_budget_refused
                .with_label_values(&[b])
                .get()
        };
        assert_eq!(
            (refused("caller"), refused("total")),
            (2, 1),
            "each refusal is counted"
        );
    }

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

    #[tokio::test]
    async fn resolves_configured_tokens_and_keys() {
        let auth = table();
        let a = auth.resolve(Some(b"*:development.client")).await.unwrap();
        assert_eq!(a.kind, TokenKind::Client);
        let a = auth.resolve(Some(b"Bearer proxy-key")).await.unwrap();
        assert_eq!(a.kind, TokenKind::Frontend);
        assert_eq!(a.scope.projects, Projects::from_names(["default"]));
    }

    #[tokio::test]
    async fn refuses_everything_else_with_the_reason() {
        let auth = table();
        let err = |h: &'static [u8]| {
            let auth = &auth;
            async move { auth.resolve(Some(h)).await.unwrap_err() }
        };
        assert_eq!(auth.resolve(None).await.unwrap_err(), AuthError::Missing);
        assert_eq!(err(b"").await, AuthError::Missing);
        assert_eq!(err(b"*:development.other").await, AuthError::Unknown);
        assert_eq!(err(b"*:*.admin").await, AuthError::AdminOrPersonal);
        assert_eq!(err(b"user:abc").await, AuthError::AdminOrPersonal);
        assert_eq!(
            err(b"default:development").await,
            AuthError::Malformed(TokenError::MissingSecret)
        );
        assert_eq!(
            err(&[0xff, 0xfe]).await,
            AuthError::Malformed(TokenError::InvalidCharacter)
        );
    }

    #[test]
    fn upstream_verdicts() {
        let v = |kind: &str, env: &str, projects: &[&str]| ValidatedToken {
            token: "t".into(),
            kind: serde_json::from_value(serde_json::Value::from(kind)).unwrap(),
            projects: projects.iter().map(|p| p.to_string()).collect(),
            environment: env.into(),
        };
        match verdict_of(&v("client", "development", &["a", "b"])) {
            Verdict::Valid(k) => {
                assert_eq!(k.kind, TokenKind::Client);
                assert_eq!(k.scope.projects, Projects::from_names(["a", "b"]));
            }
            other => panic!("{other:?}"),
        }
        match verdict_of(&v("frontend", "production", &["*"])) {
            Verdict::Valid(k) => assert_eq!(k.scope, Scope::new("production", Projects::All)),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            verdict_of(&v("admin", "*", &["*"])),
            Verdict::Refused(AuthError::AdminOrPersonal)
        ));
        // Newer Unleash says "backend" for client tokens; a type flagpost does not know is
        // never served.
        assert!(matches!(
            verdict_of(&v("backend", "development", &["*"])),
            Verdict::Valid(Known {
                kind: TokenKind::Client,
                ..
            })
        ));
        assert!(matches!(
            verdict_of(&v("some-future-type", "development", &["*"])),
            Verdict::Refused(AuthError::AdminOrPersonal)
        ));
    }
}
