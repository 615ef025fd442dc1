//! What the refresher tells about itself: the startup tokens' state (for
//! `/internal-backstage/tokens`), readiness, the token usage is forwarded with, and the gauges.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Refresh;
use crate::token::{Scope, Token};

/// A startup token as `/internal-backstage/tokens` shows it.
#[derive(Debug, Clone)]
pub struct StartupStatus {
    pub token: Token,
    pub scope: Scope,
    /// Upstream accepts it.
    pub live: bool,
    /// It is polled (no other live startup token covers it).
    pub polled: bool,
    pub etag: Option<String>,
    pub last_success: Option<SystemTime>,
    pub features: Option<usize>,
    pub revision: Option<u64>,
    pub failures: u32,
    pub interval: Duration,
}

impl Refresh {
    /// The startup tokens and what each last fetched, for `/internal-backstage/tokens`.
    pub fn startup(&self) -> Vec<StartupStatus> {
        self.lock()
            .iter()
            .map(|s| StartupStatus {
                token: s.token.clone(),
                scope: s.scope.clone(),
                live: !s.revoked,
                polled: s.polling,
                etag: s.etag.clone(),
                last_success: s.last_success,
                features: s.document.as_ref().map(|d| d.features.len()),
                revision: s.document.as_ref().and_then(|d| d.revision),
                failures: s.failures,
                interval: self.interval,
            })
            .collect()
    }

    /// Why flagpost cannot serve every environment it was started for, if it cannot.
    pub fn not_usable(&self) -> Option<String> {
        let sources = self.lock();
        let mut unusable: Vec<&str> = sources
            .iter()
            .map(|s| s.scope.environment.as_str())
            .filter(|env| {
                !sources
                    .iter()
                    .any(|s| !s.revoked && s.scope.environment == *env)
            })
            .collect();
        unusable.sort_unstable();
        unusable.dedup();
        if unusable.is_empty() {
            None
        } else {
            Some(format!(
                "upstream refuses every startup token of environment {}",
                unusable.join(", ")
            ))
        }
    }

    /// A live startup token of `environment`, to forward usage with.
    pub fn token_for(&self, environment: &str) -> Option<Token> {
        let sources = self.lock();
        let live = || {
            sources
                .iter()
                .filter(|s| !s.revoked && s.scope.environment == environment)
        };
        live()
            .find(|s| s.polling)
            .or_else(|| live().next())
            .map(|s| s.token.clone())
    }

    /// Sets the sync-time and data-age gauges.
    pub fn observe(&self) {
        let now = SystemTime::now();
        let sources = self.lock();
        let mut usable: HashMap<&str, i64> = HashMap::new();
        for s in sources.iter() {
            *usable.entry(s.scope.environment.as_str()).or_default() += i64::from(!s.revoked);
        }
        for (env, n) in usable {
            self.app
                .metrics
                .startup_tokens_usable
                .with_label_values(&[env])
                .set(n);
        }
        let mut oldest: HashMap<&str, Option<SystemTime>> = HashMap::new();
        for s in sources.iter().filter(|s| s.polling && !s.revoked) {
            let entry = oldest
                .entry(s.scope.environment.as_str())
                .or_insert(s.last_success);
            *entry = match (*entry, s.last_success) {
                (Some(a), Some(b)) => Some(a.min(b)),
                _ => None,
            };
        }
        for (env, when) in oldest {
            if let Some(when) = when {
                let unix = when
                    .duration_since(UNIX_EPOCH)
                    .map_or(0.0, |d| d.as_secs_f64());
                let age = now.duration_since(when).map_or(0.0, |d| d.as_secs_f64());
                self.app
                    .metrics
                    .last_sync
                    .with_label_values(&[env])
                    .set(unix);
                self.app
                    .metrics
                    .snapshot_age
                    .with_label_values(&[env])
                    .set(age);
            }
        }
    }
}
