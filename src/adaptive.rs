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
    let high = base * 2;
    let floor = ABSOLUTE_FLOOR.min(base);
    p99.mul_f64(P99_FACTOR).clamp(low, high).max(floor)
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
