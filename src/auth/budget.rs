//! The budgets of unknown tokens `/edge/validate` callers may have checked upstream.

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Metrics;

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
    pub(super) fn available(&self, caller: std::net::IpAddr) -> usize {
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

    pub(super) fn take(&self, caller: std::net::IpAddr, n: usize) -> (usize, Option<OverBudget>) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
