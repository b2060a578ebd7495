//! Adaptive timeouts (opt-in: `STREAM_MANAGER_ADAPTIVE_TIMEOUTS=1`).
//!
//! Each operation type keeps a window of its last 256 durations (lock-free ring of
//! atomics). Every 16 observations the window's p99 is recomputed. The effective
//! timeout is p99 x 3, clamped to [0.5x, 2x] of the configured base and never below an
//! absolute floor, so one slow burst cannot starve waits and a fast pipeline does not
//! keep a hung one waiting the full base.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use once_cell::sync::Lazy;

pub const WINDOW: usize = 256;
pub const RECOMPUTE_EVERY: usize = 16;
pub const MIN_SAMPLES: usize = 20;
pub const P99_FACTOR: f64 = 3.0;
pub const ABSOLUTE_FLOOR: Duration = Duration::from_millis(250);

/// Pure policy: the timeout to apply given the configured `base` and the recent p99
/// (`None` while there are too few samples).
pub fn effective_timeout(base: Duration, recent_p99: Option<Duration>) -> Duration {
    let Some(p99) = recent_p99 else {
        return base;
    };
    let low = base / 2;
    let high = base.saturating_mul(2);
    let floor = ABSOLUTE_FLOOR.min(base);
    // Not `mul_f64`: it panics past `Duration::MAX`; such a product is clamped anyway.
    let scaled = Duration::try_from_secs_f64(p99.as_secs_f64() * P99_FACTOR);
    scaled.unwrap_or(Duration::MAX).clamp(low, high).max(floor)
}

/// p99 of a sample set (nearest-rank), `None` if empty.
pub fn p99(samples: &mut [u64]) -> Option<u64> {
    if samples.is_empty() {
        return None;
    }
    samples.sort_unstable();
    let rank = ((samples.len() as f64) * 0.99).ceil() as usize;
    Some(samples[rank.clamp(1, samples.len()) - 1])
}

pub struct Window {
    slots: Vec<AtomicU64>,
    cursor: AtomicUsize,
    /// Cached p99 in ns; 0 = not enough samples yet.
    p99_nanos: AtomicU64,
}

impl Default for Window {
    fn default() -> Self {
        Window {
            slots: (0..WINDOW).map(|_| AtomicU64::new(0)).collect(),
            cursor: AtomicUsize::new(0),
            p99_nanos: AtomicU64::new(0),
        }
    }
}

impl Window {
    pub fn record(&self, duration: Duration) {
        let nanos = duration.as_nanos().min(u64::MAX as u128) as u64;
        let i = self.cursor.fetch_add(1, Ordering::Relaxed);
        self.slots[i % WINDOW].store(nanos.max(1), Ordering::Relaxed);
        let count = i + 1;
        if count >= MIN_SAMPLES && count % RECOMPUTE_EVERY == 0 {
            let mut samples: Vec<u64> = self.slots[..count.min(WINDOW)]
                .iter()
                .map(|s| s.load(Ordering::Relaxed))
                .filter(|&n| n > 0)
                .collect();
            if let Some(p) = p99(&mut samples) {
                self.p99_nanos.store(p, Ordering::Relaxed);
            }
        }
    }

    pub fn recent_p99(&self) -> Option<Duration> {
        match self.p99_nanos.load(Ordering::Relaxed) {
            0 => None,
            n => Some(Duration::from_nanos(n)),
        }
    }

    pub fn reset(&self) {
        for s in &self.slots {
            s.store(0, Ordering::Relaxed);
        }
        self.cursor.store(0, Ordering::Relaxed);
        self.p99_nanos.store(0, Ordering::Relaxed);
    }
}

/// The operation types that adapt.
pub struct Adaptive {
    pub enabled: AtomicBool,
    pub command: Window,
    pub health_check: Window,
    /// Configured bases (ns) of the last binding, for reporting.
    pub command_base_nanos: AtomicU64,
    pub health_base_nanos: AtomicU64,
}

impl Adaptive {
    pub fn command_timeout(&self, base: Duration) -> Duration {
        if self.enabled.load(Ordering::Relaxed) {
            effective_timeout(base, self.command.recent_p99())
        } else {
            base
        }
    }

    pub fn health_timeout(&self, base: Duration) -> Duration {
        if self.enabled.load(Ordering::Relaxed) {
            effective_timeout(base, self.health_check.recent_p99())
        } else {
            base
        }
    }

    pub fn configure(&self, enabled: bool, command_base: Duration, health_base: Duration) {
        self.enabled.store(enabled, Ordering::Relaxed);
        self.command_base_nanos
            .store(command_base.as_nanos() as u64, Ordering::Relaxed);
        self.health_base_nanos
            .store(health_base.as_nanos() as u64, Ordering::Relaxed);
    }

    /// `(operation, effective seconds)` for the last configured bases.
    pub fn report(&self) -> Vec<(&'static str, f64)> {
        let command = Duration::from_nanos(self.command_base_nanos.load(Ordering::Relaxed));
        let health = Duration::from_nanos(self.health_base_nanos.load(Ordering::Relaxed));
        vec![
            ("command", self.command_timeout(command).as_secs_f64()),
            ("health_check", self.health_timeout(health).as_secs_f64()),
        ]
    }
}

pub static ADAPTIVE: Lazy<Adaptive> = Lazy::new(|| Adaptive {
    enabled: AtomicBool::new(false),
    command: Window::default(),
    health_check: Window::default(),
    command_base_nanos: AtomicU64::new(Duration::from_secs(10).as_nanos() as u64),
    health_base_nanos: AtomicU64::new(Duration::from_secs(5).as_nanos() as u64),
});

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64) -> Duration {
        Duration::from_secs_f64(x)
    }

    #[test]
    fn without_samples_the_base_applies() {
        assert_eq!(effective_timeout(s(10.0), None), s(10.0));
    }

    #[test]
    fn fast_operations_shrink_to_half_the_base() {
        assert_eq!(effective_timeout(s(10.0), Some(s(0.01))), s(5.0));
    }

    #[test]
    fn slow_operations_grow_to_twice_the_base() {
        assert_eq!(effective_timeout(s(10.0), Some(s(30.0))), s(20.0));
    }

    #[test]
    fn in_between_it_follows_three_times_p99() {
        assert_eq!(effective_timeout(s(10.0), Some(s(2.0))), s(6.0));
    }

    #[test]
    fn never_below_the_absolute_floor_unless_the_base_is() {
        assert_eq!(effective_timeout(s(0.4), Some(s(0.001))), s(0.25));
        assert_eq!(effective_timeout(s(0.1), Some(s(0.001))), s(0.1));
    }

    #[test]
    fn p99_is_nearest_rank() {
        let mut v: Vec<u64> = (1..=100).collect();
        assert_eq!(p99(&mut v), Some(99));
        assert_eq!(p99(&mut []), None);
        assert_eq!(p99(&mut [5]), Some(5));
    }

    #[test]
    fn window_moves_within_clamps_under_a_slow_then_fast_sequence() {
        let w = Window::default();
        let base = s(1.0);
        assert_eq!(effective_timeout(base, w.recent_p99()), base);
        for _ in 0..WINDOW {
            w.record(s(0.9)); // slow: 3 x 0.9 = 2.7 -> clamped to 2 x base
        }
        assert_eq!(effective_timeout(base, w.recent_p99()), s(2.0));
        for _ in 0..WINDOW {
            w.record(s(0.002)); // fast: clamped to 0.5 x base
        }
        assert_eq!(effective_timeout(base, w.recent_p99()), s(0.5));
        for _ in 0..WINDOW {
            w.record(s(0.25)); // in between: 0.75
        }
        let t = effective_timeout(base, w.recent_p99());
        assert!((t.as_secs_f64() - 0.75).abs() < 1e-9, "{t:?}");
    }

    #[test]
    fn window_needs_min_samples() {
        let w = Window::default();
        for _ in 0..MIN_SAMPLES - 1 {
            w.record(s(0.001));
        }
        assert!(w.recent_p99().is_none());
    }
}

#[cfg(test)]
mod proptests {
    //! Property tests: the effective timeout stays within its clamps for any base and
    //! p99, p99 is a nearest-rank element, and a `Window` never panics.
    use super::*;
    use proptest::prelude::*;

    fn duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            Just(Duration::ZERO),
            Just(Duration::MAX),
            (0u64..=60_000_000_000).prop_map(Duration::from_nanos),
            any::<u64>().prop_map(Duration::from_nanos),
            (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        #[test]
        fn effective_timeout_stays_within_the_clamps(base in duration(), p in duration()) {
            prop_assert_eq!(effective_timeout(base, None), base);
            let t = effective_timeout(base, Some(p));
            let floor = ABSOLUTE_FLOOR.min(base);
            prop_assert!(t >= base / 2, "{t:?}");
            prop_assert!(t >= floor, "{t:?}");
            prop_assert!(t <= base.saturating_mul(2), "{t:?}");
        }

        #[test]
        fn effective_timeout_is_monotone_in_p99(
            base in duration(), a in duration(), b in duration()
        ) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(effective_timeout(base, Some(lo)) <= effective_timeout(base, Some(hi)));
        }

        #[test]
        fn effective_timeout_follows_three_times_p99_in_between(
            base_ms in 1u64..=600_000, p_us in 0u64..=2_000_000_000
        ) {
            let base = Duration::from_millis(base_ms);
            let p = Duration::from_micros(p_us);
            let target = p.as_secs_f64() * P99_FACTOR;
            let expected = target
                .clamp(base.as_secs_f64() / 2.0, base.as_secs_f64() * 2.0)
                .max(ABSOLUTE_FLOOR.min(base).as_secs_f64());
            let got = effective_timeout(base, Some(p)).as_secs_f64();
            prop_assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
        }

    }

    // Collections are costly to generate in debug builds: fewer, larger cases.
    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn p99_is_a_nearest_rank_element(
            mut samples in prop::collection::vec(
                prop_oneof![0u64..1000, any::<u64>(), Just(u64::MAX)], 0..600
            )
        ) {
            let original = samples.clone();
            let got = p99(&mut samples);
            prop_assert!(samples.windows(2).all(|w| w[0] <= w[1]));
            let Some(r) = got else {
                prop_assert!(original.is_empty());
                return Ok(());
            };
            prop_assert!(original.contains(&r));
            let n = original.len();
            let rank = (99 * n).div_ceil(100); // nearest rank, in exact integers
            let at_most = original.iter().filter(|&&x| x <= r).count();
            let below = original.iter().filter(|&&x| x < r).count();
            prop_assert!(at_most >= rank, "{at_most} of {n} <= {r}");
            prop_assert!(below < rank, "{below} of {n} < {r}");
            prop_assert!(100 * at_most >= 99 * n);
        }

        #[test]
        fn window_tracks_the_p99_of_its_last_samples(
            records in prop::collection::vec(duration(), 0..300),
            reset_at in prop::option::of(0usize..300),
        ) {
            let w = Window::default();
            let mut seen: Vec<u64> = Vec::new();
            let mut expected: Option<u64> = None;
            for (i, d) in records.iter().enumerate() {
                if reset_at == Some(i) {
                    w.reset();
                    seen.clear();
                    expected = None;
                    prop_assert_eq!(w.recent_p99(), None);
                }
                w.record(*d);
                seen.push(d.as_nanos().min(u64::MAX as u128).max(1) as u64);
                let count = seen.len();
                if count >= MIN_SAMPLES && count % RECOMPUTE_EVERY == 0 {
                    let mut last = seen[count.saturating_sub(WINDOW)..].to_vec();
                    expected = p99(&mut last);
                }
                prop_assert_eq!(w.recent_p99(), expected.map(Duration::from_nanos));
                // Whatever the window holds, the timeout it yields is within the clamps.
                let t = effective_timeout(Duration::from_secs(10), w.recent_p99());
                prop_assert!(t >= Duration::from_secs(5) && t <= Duration::from_secs(20));
            }
        }
    }
}
