//! The log lines client traffic causes, within a budget: one browser polling with an uncovered
//! token is hundreds of refusals a minute, and a client sending a new token with every request
//! would otherwise be a line per request. Each refusal is a debug line. At info and above,
//! requests may cause at most `log.request_lines_per_minute` lines a minute in total (the first
//! refusal of each token, redacted; a request that failed on flagpost's side; a failed
//! accept); what is over the budget is counted and folded into a summary written at most once
//! a minute: the refusals by error code, and `… and N more refusals of M distinct tokens`. The
//! metrics keep the exact counts (`flagpost_http_requests_total`,
//! `flagpost_token_decisions_total`), and `flagpost_log_lines_folded_total` counts the lines
//! folded away.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::token::Token;

/// How often the summary line may be written, by default (`log.summary_interval`).
pub const DEFAULT_SUMMARY_EVERY: Duration = Duration::from_secs(60);
/// Most tokens remembered as already logged.
const MAX_TOKENS_REMEMBERED: u64 = 10_000;
/// Most distinct folded tokens counted exactly in one window (beyond: "at least").
const MAX_FOLDED_TOKENS: usize = 100_000;

use crate::config::DEFAULT_LOG_LINES_PER_MINUTE;

/// What kind of line a request would cause, for [`RequestLog::line`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// The first refusal of a token for an error code.
    Refused(&'a Token, &'static str),
    /// A request that failed on flagpost's side or upstream's (5xx).
    Failed,
    /// A connection that could not be accepted.
    Accept,
}

#[derive(Debug)]
pub struct RequestLog {
    /// Lines at info and above that requests may cause in one summary interval.
    budget: u64,
    /// The summary interval.
    every: Duration,
    /// The budget as configured, per minute.
    per_minute: u64,
    /// Hashes of (token, error code) already logged (or folded) once.
    logged: moka::sync::Cache<u64, ()>,
    window: Mutex<Window>,
    folded_total: Option<prometheus::IntCounter>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    /// Refusals by error code (every one, logged or not).
    counts: BTreeMap<&'static str, u64>,
    /// Lines written this window.
    lines: u64,
    /// Lines folded this window: first refusals of tokens, and other lines.
    folded_refusals: u64,
    folded_other: u64,
    folded_tokens: HashSet<u64>,
}

impl Window {
    fn new() -> Window {
        Window {
            started: Instant::now(),
            counts: BTreeMap::new(),
            lines: 0,
            folded_refusals: 0,
            folded_other: 0,
            folded_tokens: HashSet::new(),
        }
    }
}

/// A summary written (returned for tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub counts: BTreeMap<&'static str, u64>,
    pub folded_refusals: u64,
    pub folded_tokens: usize,
    pub folded_other: u64,
}

impl Default for RequestLog {
    fn default() -> Self {
        RequestLog::new(DEFAULT_LOG_LINES_PER_MINUTE, DEFAULT_SUMMARY_EVERY, None)
    }
}

impl RequestLog {
    /// At most `per_minute` lines a minute (counted per summary interval `every`: that share
    /// of them, at least one); `folded_total` counts the lines folded away.
    pub fn new(
        per_minute: u64,
        every: Duration,
        folded_total: Option<prometheus::IntCounter>,
    ) -> RequestLog {
        let share = u128::from(per_minute) * every.as_millis() / 60_000;
        let budget = if per_minute == 0 {
            0
        } else {
            u64::try_from(share).unwrap_or(u64::MAX).max(1)
        };
        RequestLog {
            budget,
            every,
            per_minute,
            logged: moka::sync::Cache::builder()
                .max_capacity(MAX_TOKENS_REMEMBERED)
                .time_to_live(Duration::from_secs(3600))
                .build(),
            window: Mutex::new(Window::new()),
            folded_total,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a refusal with error `code`; writes the summary when a minute has passed.
    pub fn refused(&self, code: &'static str) -> Option<Summary> {
        let mut window = self.lock();
        *window.counts.entry(code).or_default() += 1;
        self.roll(&mut window)
    }

    /// Whether `line` may be written now (the caller then writes it): a token's refusal only
    /// the first time, and any line only within the minute's budget; otherwise it is counted
    /// for the summary.
    pub fn line(&self, line: Line<'_>) -> bool {
        let token_key = match line {
            Line::Refused(token, code) => {
                let key = xxhash_rust::xxh3::xxh3_64_with_seed(
                    token.expose().as_bytes(),
                    code.len() as u64,
                ) ^ xxhash_rust::xxh3::xxh3_64(code.as_bytes());
                if self.logged.contains_key(&key) {
                    return false;
                }
                self.logged.insert(key, ());
                Some(xxhash_rust::xxh3::xxh3_64(token.expose().as_bytes()))
            }
            Line::Failed | Line::Accept => None,
        };
        let mut window = self.lock();
        self.roll(&mut window);
        if window.lines < self.budget {
            window.lines += 1;
            return true;
        }
        match token_key {
            Some(key) => {
                window.folded_refusals += 1;
                if window.folded_tokens.len() < MAX_FOLDED_TOKENS {
                    window.folded_tokens.insert(key);
                }
            }
            None => window.folded_other += 1,
        }
        if let Some(c) = &self.folded_total {
            c.inc();
        }
        false
    }

    /// Writes the summary and starts a new window when a minute has passed and there is
    /// something to say.
    fn roll(&self, window: &mut Window) -> Option<Summary> {
        if window.started.elapsed() < self.every {
            return None;
        }
        let seconds = window.started.elapsed().as_secs();
        let old = std::mem::replace(window, Window::new());
        if old.counts.is_empty() && old.folded_refusals == 0 && old.folded_other == 0 {
            return None;
        }
        let summary = Summary {
            counts: old.counts,
            folded_refusals: old.folded_refusals,
            folded_tokens: old.folded_tokens.len(),
            folded_other: old.folded_other,
        };
        let refusals: Vec<String> = summary
            .counts
            .iter()
            .map(|(c, n)| format!("{c}={n}"))
            .collect();
        let at_least = if summary.folded_tokens >= MAX_FOLDED_TOKENS {
            "at least "
        } else {
            ""
        };
        tracing::info!(
            seconds,
            refusals = %refusals.join(" "),
            folded_refusals = summary.folded_refusals,
            folded_tokens = summary.folded_tokens,
            folded_other = summary.folded_other,
            "requests refused since the last summary, by error code (each one is logged at debug); \
             and {} more refusals of {at_least}{} distinct tokens and {} other lines over the budget \
             of {} lines a minute",
            summary.folded_refusals,
            summary.folded_tokens,
            summary.folded_other,
            self.per_minute,
        );
        Some(summary)
    }

    #[cfg(test)]
    fn age(&self, by: Duration) {
        let mut window = self.lock();
        window.started = window.started.checked_sub(by).unwrap_or(window.started);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_summary_a_minute_with_the_counts() {
        let r = RequestLog::default();
        for _ in 0..240 {
            assert!(r.refused("scope_not_covered").is_none());
        }
        r.refused("token_invalid");
        r.age(DEFAULT_SUMMARY_EVERY);
        let summary = r.refused("token_invalid").unwrap();
        assert_eq!(summary.counts["scope_not_covered"], 240);
        assert_eq!(summary.counts["token_invalid"], 2);
        assert!(r.refused("token_invalid").is_none());
    }

    #[test]
    fn each_token_is_logged_once_per_code() {
        let r = RequestLog::default();
        let a = Token::parse("default:development.aaaa").unwrap();
        let b = Token::parse("default:development.bbbb").unwrap();
        assert!(r.line(Line::Refused(&a, "scope_not_covered")));
        assert!(!r.line(Line::Refused(&a, "scope_not_covered")));
        assert!(r.line(Line::Refused(&a, "token_wrong_type")));
        assert!(r.line(Line::Refused(&b, "scope_not_covered")));
    }

    /// Past the budget, lines are folded: counted (distinct tokens too) for the summary,
    /// which the next minute writes, and the budget is whole again.
    #[test]
    fn lines_over_the_budget_are_folded_into_the_summary() {
        let folded = prometheus::IntCounter::new("folded", "folded").unwrap();
        let r = RequestLog::new(5, DEFAULT_SUMMARY_EVERY, Some(folded.clone()));
        let tokens: Vec<Token> = (0..100)
            .map(|i| Token::parse(&format!("default:development.secret{i}")).unwrap())
            .collect();
        let written = tokens
            .iter()
            .filter(|t| r.line(Line::Refused(t, "token_invalid")))
            .count();
        assert_eq!(written, 5);
        assert!(!r.line(Line::Failed));
        assert_eq!(folded.get(), 96);
        for _ in 0..100 {
            r.refused("token_invalid");
        }
        r.age(DEFAULT_SUMMARY_EVERY);
        let summary = r.refused("token_invalid").unwrap();
        assert_eq!(summary.counts["token_invalid"], 101);
        assert_eq!(
            (
                summary.folded_refusals,
                summary.folded_tokens,
                summary.folded_other
            ),
            (95, 95, 1)
        );
        assert!(r.line(Line::Failed), "a new minute, a new budget");
        let fresh = Token::parse("default:development.fresh").unwrap();
        assert!(r.line(Line::Refused(&fresh, "token_invalid")));
    }

    #[test]
    fn the_budget_is_shared_out_over_shorter_intervals() {
        let per = |m, secs| RequestLog::new(m, Duration::from_secs(secs), None).budget;
        assert_eq!(per(60, 60), 60);
        assert_eq!(per(60, 2), 2);
        assert_eq!(per(10, 1), 1, "at least one line");
        assert_eq!(per(0, 60), 0, "0: nothing but the summary");
    }
}
