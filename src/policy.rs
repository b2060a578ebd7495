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
        let max_healthy = base.max(base.saturating_mul(2).min(Duration::from_secs(5)));
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
        // Not `mul_f64`: it panics past `Duration::MAX` (such a product is capped anyway),
        // and f64 rounding of bases above 2^53 ns could land a few ns below the base.
        Duration::try_from_secs_f64(self.base.as_secs_f64() * factor)
            .unwrap_or(Duration::MAX)
            .clamp(self.base, self.max_healthy)
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

#[cfg(test)]
mod proptests {
    //! Property tests: for any base (zero to `Duration::MAX`) and any count, intervals
    //! stay within the documented bounds, move monotonically and never panic.
    use super::*;
    use proptest::prelude::*;

    fn base() -> impl Strategy<Value = Duration> {
        prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::MAX),
            Just(Duration::from_secs(5)),
            (0u64..=1_000_000_000).prop_map(Duration::from_nanos),
            (0u64..=100_000_000_000).prop_map(Duration::from_micros),
            (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        ]
    }

    fn count() -> impl Strategy<Value = u32> {
        prop_oneof![0u32..40, any::<u32>(), Just(u32::MAX)]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn new_bounds_are_ordered(base in base()) {
            let p = ProbePolicy::new(base);
            prop_assert_eq!(p.base, base);
            prop_assert!(p.min_failing <= p.base && p.base <= p.max_healthy);
            prop_assert!(p.min_failing <= Duration::from_millis(100));
            // Never beyond 2x base; beyond 5 s only when the base itself is.
            prop_assert!(p.max_healthy <= base.saturating_mul(2));
            prop_assert!(p.max_healthy <= Duration::from_secs(5).max(base));
        }

        #[test]
        fn intervals_are_bounded(base in base(), n in count()) {
            let p = ProbePolicy::new(base);
            let ok = p.after_success(n);
            prop_assert!(p.base <= ok && ok <= p.max_healthy, "{ok:?} vs {p:?}");
            let bad = p.after_failure(n);
            prop_assert!(p.min_failing <= bad && bad <= p.base, "{bad:?} vs {p:?}");
        }

        #[test]
        fn intervals_are_monotone(base in base(), n in count(), step in 0u32..40) {
            let p = ProbePolicy::new(base);
            let m = n.saturating_add(step);
            // More successes: never sooner; more failures: never later.
            prop_assert!(p.after_success(n) <= p.after_success(m));
            prop_assert!(p.after_failure(n) >= p.after_failure(m));
        }

        #[test]
        fn intervals_follow_the_formula_for_ordinary_bases(
            base_ms in 1u64..=60_000, n in 1u32..40
        ) {
            let base = Duration::from_millis(base_ms);
            let p = ProbePolicy::new(base);
            let grown = base.as_secs_f64() * 1.5f64.powi(n as i32 - 1);
            let expected = grown.min(p.max_healthy.as_secs_f64());
            prop_assert!((p.after_success(n).as_secs_f64() - expected).abs() < 1e-6);
            let shrunk = base.as_secs_f64() / 2f64.powi(n.min(32) as i32);
            let expected = shrunk.max(p.min_failing.as_secs_f64());
            prop_assert!((p.after_failure(n).as_secs_f64() - expected).abs() < 1e-6);
        }
    }
}
