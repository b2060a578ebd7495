//! When to send the next STATUS probe to a pipeline (pure, unit-tested).
//!
//! Healthy pipelines back off from the base interval by x1.5 per consecutive success,
//! but never beyond 2x base (capped at 5 s unless the base itself is larger), because
//! users wait on depletion detection. Failing pipelines are probed sooner: base / 2^n,
//! never below 100 ms (or the base, if smaller), so a hung pipeline reaches the failure
//! limit quickly.

use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ProbePolicy {
    pub base: Duration,
    pub max_healthy: Duration,
    pub min_failing: Duration,
}

impl ProbePolicy {
    pub fn new(base: Duration) -> Self {
        let max_healthy = base.max((base * 2).min(Duration::from_secs(5)));
        let min_failing = base.min(Duration::from_millis(100));
        ProbePolicy {
            base,
            max_healthy,
            min_failing,
        }
    }

    /// Interval after the `successes`-th consecutive success (1-based).
    pub fn after_success(&self, successes: u32) -> Duration {
        let factor = 1.5f64.powi(successes.saturating_sub(1).min(32) as i32);
        self.base.mul_f64(factor).min(self.max_healthy)
    }

    /// Interval after the `failures`-th consecutive failure (1-based).
    pub fn after_failure(&self, failures: u32) -> Duration {
        let divisor = 2f64.powi(failures.clamp(1, 32) as i32);
        self.base.div_f64(divisor).max(self.min_failing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn healthy_pipelines_back_off_to_twice_the_base() {
        let p = ProbePolicy::new(secs(1.0));
        assert_eq!(p.after_success(1), secs(1.0));
        assert_eq!(p.after_success(2), secs(1.5));
        assert_eq!(p.after_success(3), secs(2.0));
        assert_eq!(p.after_success(1000), secs(2.0));
    }

    #[test]
    fn backoff_never_exceeds_five_seconds_unless_the_base_does() {
        assert_eq!(ProbePolicy::new(secs(4.0)).after_success(10), secs(5.0));
        assert_eq!(ProbePolicy::new(secs(8.0)).after_success(10), secs(8.0));
    }

    #[test]
    fn failing_pipelines_are_probed_sooner_with_a_floor() {
        let p = ProbePolicy::new(secs(1.0));
        assert_eq!(p.after_failure(1), secs(0.5));
        assert_eq!(p.after_failure(2), secs(0.25));
        assert_eq!(p.after_failure(3), secs(0.125));
        assert_eq!(p.after_failure(4), secs(0.1));
        assert_eq!(p.after_failure(u32::MAX), secs(0.1));
        let tiny = ProbePolicy::new(secs(0.05));
        assert_eq!(tiny.after_failure(5), secs(0.05));
    }

    #[test]
    fn intervals_stay_within_bounds_for_any_input() {
        for base_ms in [1u64, 10, 100, 1000, 10_000] {
            let p = ProbePolicy::new(Duration::from_millis(base_ms));
            for n in 0..100 {
                let ok = p.after_success(n);
                assert!(ok >= p.base && ok <= p.max_healthy);
                let bad = p.after_failure(n);
                assert!(bad <= p.base && bad >= p.min_failing);
            }
        }
    }
}
