//! Retry delays: exponential, capped, with jitter.

use std::time::Duration;

use rand::Rng;

/// The longest delay between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Exponential backoff from `base`, doubling per failure up to [`MAX_BACKOFF`], with jitter
/// (between half and all of it), so many instances do not retry in step.
pub fn backoff(base: Duration, failures: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    let capped = exp.min(MAX_BACKOFF);
    let factor = rand::rng().random_range(0.5..=1.0);
    capped.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        for failures in 1..40 {
            let d = backoff(Duration::from_secs(1), failures);
            let full = Duration::from_secs(1)
                .saturating_mul(1 << (failures - 1).min(16))
                .min(MAX_BACKOFF);
            assert!(d >= full / 2 && d <= full, "{failures}: {d:?}");
        }
    }
}
