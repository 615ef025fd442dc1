//! Logging refusals without flooding the log: one browser polling with an uncovered token is
//! hundreds of refusals a minute. Each refusal is a debug line; at info there is the first
//! refusal of each token (redacted) and, at most once a minute, a summary of the refusals by
//! error code. The metrics keep the exact counts.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::token::Token;

/// How often the summary line may be written.
const SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// Most tokens remembered as already logged.
const MAX_TOKENS_REMEMBERED: u64 = 10_000;

#[derive(Debug)]
pub struct Refusals {
    /// Hashes of (token, error code) already logged at info.
    logged: moka::sync::Cache<u64, ()>,
    window: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    counts: BTreeMap<&'static str, u64>,
}

impl Default for Refusals {
    fn default() -> Self {
        Refusals {
            logged: moka::sync::Cache::builder()
                .max_capacity(MAX_TOKENS_REMEMBERED)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            window: Mutex::new(Window {
                started: Instant::now(),
                counts: BTreeMap::new(),
            }),
        }
    }
}

impl Refusals {
    /// Counts a refusal with error `code`; writes the summary when a minute has passed.
    /// Returns the counts written, if it wrote them (for tests).
    pub fn refused(&self, code: &'static str) -> Option<BTreeMap<&'static str, u64>> {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        *window.counts.entry(code).or_default() += 1;
        if window.started.elapsed() < SUMMARY_EVERY {
            return None;
        }
        let counts = std::mem::take(&mut window.counts);
        let seconds = window.started.elapsed().as_secs();
        window.started = Instant::now();
        drop(window);
        let summary: Vec<String> = counts.iter().map(|(c, n)| format!("{c}={n}")).collect();
        tracing::info!(
            seconds,
            refusals = %summary.join(" "),
            "requests refused since the last summary, by error code (each one is logged at debug)"
        );
        Some(counts)
    }

    /// Whether this is the first refusal of `token` for `code` (then it is worth an info line).
    pub fn first_for(&self, token: &Token, code: &'static str) -> bool {
        let key =
            xxhash_rust::xxh3::xxh3_64_with_seed(token.expose().as_bytes(), code.len() as u64)
                ^ xxhash_rust::xxh3::xxh3_64(code.as_bytes());
        if self.logged.contains_key(&key) {
            return false;
        }
        self.logged.insert(key, ());
        true
    }

    #[cfg(test)]
    fn age(&self, by: Duration) {
        let mut window = self.window.lock().unwrap_or_else(|p| p.into_inner());
        window.started = window.started.checked_sub(by).unwrap_or(window.started);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_summary_a_minute_with_the_counts() {
        let r = Refusals::default();
        for _ in 0..240 {
            assert!(r.refused("scope_not_covered").is_none());
        }
        r.refused("token_invalid");
        r.age(SUMMARY_EVERY);
        let counts = r.refused("token_invalid").unwrap();
        assert_eq!(counts["scope_not_covered"], 240);
        assert_eq!(counts["token_invalid"], 2);
        assert!(r.refused("token_invalid").is_none());
    }

    #[test]
    fn each_token_is_logged_once_per_code() {
        let r = Refusals::default();
        let a = Token::parse("default:development.aaaa").unwrap();
        let b = Token::parse("default:development.bbbb").unwrap();
        assert!(r.first_for(&a, "scope_not_covered"));
        assert!(!r.first_for(&a, "scope_not_covered"));
        assert!(r.first_for(&a, "token_wrong_type"));
        assert!(r.first_for(&b, "scope_not_covered"));
    }
}
