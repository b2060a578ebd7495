//! Native metrics: counters, gauges and latency histograms, lock-free on the hot path.
//!
//! Recording is a handful of relaxed atomic adds. A histogram keeps two views of the
//! same observations: fine log-linear buckets (16 per power of two, ~3% relative error)
//! for percentiles, and the fixed Prometheus buckets for exposition, so `le` counts are
//! exact. Memory is fixed: about 8 KiB per histogram whatever the traffic.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use once_cell::sync::Lazy;

const SUB_BUCKETS: usize = 16;
const SUB_BITS: u32 = 4;
const FINE_BUCKETS: usize = 64 * SUB_BUCKETS;

/// Prometheus bucket upper bounds, in seconds.
pub const PROMETHEUS_BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Index of the fine bucket holding `nanos`.
pub fn fine_index(nanos: u64) -> usize {
    if nanos < SUB_BUCKETS as u64 {
        return nanos as usize;
    }
    let exponent = 63 - nanos.leading_zeros();
    let sub = (nanos >> (exponent - SUB_BITS)) as usize & (SUB_BUCKETS - 1);
    ((exponent - SUB_BITS + 1) as usize) * SUB_BUCKETS + sub
}

/// Smallest value (ns) that lands in fine bucket `index`.
pub fn fine_lower_bound(index: usize) -> u64 {
    if index < SUB_BUCKETS {
        return index as u64;
    }
    // Compared before narrowing: `as u32` would wrap huge indices back into range.
    let exponent = index / SUB_BUCKETS + SUB_BITS as usize - 1;
    if exponent >= 64 {
        return u64::MAX;
    }
    let exponent = exponent as u32;
    let sub = (index % SUB_BUCKETS) as u64;
    (1u64 << exponent) | (sub << (exponent - SUB_BITS))
}

pub struct Histogram {
    fine: Vec<AtomicU64>,
    prometheus: [AtomicU64; PROMETHEUS_BOUNDS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
    max_nanos: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            fine: (0..FINE_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            prometheus: Default::default(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
            max_nanos: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    pub fn observe(&self, value: Duration) {
        let nanos = value.as_nanos().min(u64::MAX as u128) as u64;
        self.fine[fine_index(nanos).min(FINE_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
        let seconds = value.as_secs_f64();
        let slot = PROMETHEUS_BOUNDS
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(PROMETHEUS_BOUNDS.len());
        self.prometheus[slot].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.max_nanos.fetch_max(nanos, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    pub fn mean_seconds(&self) -> f64 {
        let n = self.count();
        if n == 0 {
            0.0
        } else {
            self.sum_seconds() / n as f64
        }
    }

    pub fn max_seconds(&self) -> f64 {
        self.max_nanos.load(Ordering::Relaxed) as f64 / 1e9
    }

    /// The `q`-quantile (0..=1) in seconds: midpoint of the bucket holding it, capped
    /// at the observed maximum. 0 when empty.
    pub fn quantile(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self
            .fine
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let low = fine_lower_bound(i);
                let high = if i + 1 < FINE_BUCKETS {
                    fine_lower_bound(i + 1)
                } else {
                    low
                };
                let mid = low + (high - low) / 2;
                return (mid as f64 / 1e9).min(self.max_seconds());
            }
        }
        self.max_seconds()
    }

    /// Cumulative Prometheus bucket counts, `+Inf` last.
    pub fn cumulative_buckets(&self) -> Vec<u64> {
        let mut running = 0;
        self.prometheus
            .iter()
            .map(|c| {
                running += c.load(Ordering::Relaxed);
                running
            })
            .collect()
    }

    pub fn reset(&self) {
        for c in self.fine.iter().chain(self.prometheus.iter()) {
            c.store(0, Ordering::Relaxed);
        }
        self.count.store(0, Ordering::Relaxed);
        self.sum_nanos.store(0, Ordering::Relaxed);
        self.max_nanos.store(0, Ordering::Relaxed);
    }
}

/// Command types with their own latency histogram (upstream `CommandType` values).
pub const COMMAND_TYPES: [&str; 9] = [
    "init",
    "webrtc",
    "mute",
    "resume",
    "status",
    "terminate",
    "list_pipelines",
    "consume_result",
    "other",
];

pub fn command_index(kind: Option<&str>) -> usize {
    kind.and_then(|k| COMMAND_TYPES.iter().position(|t| *t == k))
        .unwrap_or(COMMAND_TYPES.len() - 1)
}

/// How a command ended, as counted (outcome names of `command::Outcome`, plus
/// `pipeline_error`: the pipeline answered with a failure status).
pub const OUTCOMES: [&str; 10] = [
    "success",
    "pipeline_error",
    "unknown_pipeline",
    "being_removed",
    "being_terminated",
    "not_running",
    "busy",
    "timeout",
    "queue_closed",
    "shutting_down",
];

pub fn outcome_index(name: &str) -> usize {
    OUTCOMES.iter().position(|o| *o == name).unwrap_or(1)
}

/// Every number this library keeps.
pub struct Metrics {
    pub command_duration: Vec<Histogram>,
    /// `commands[type][outcome]`.
    commands: Vec<AtomicU64>,
    pub health_check_duration: Histogram,
    pub queue_put_duration: Histogram,
    pub queue_get_duration: Histogram,
    pub stale_responses_dropped: AtomicU64,
    pub dead_pipelines_detected: AtomicU64,
    pub pipelines_reaped: AtomicU64,
    pub health_check_failures: AtomicU64,
    pub health_checks: AtomicU64,
    pub health_sweeps: AtomicU64,
    /// UNIX time (ms) of the last completed health sweep: a readiness heartbeat.
    pub last_sweep_unix_ms: AtomicU64,
    pub active_pipelines: AtomicI64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            command_duration: (0..COMMAND_TYPES.len())
                .map(|_| Histogram::default())
                .collect(),
            commands: (0..COMMAND_TYPES.len() * OUTCOMES.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            health_check_duration: Histogram::default(),
            queue_put_duration: Histogram::default(),
            queue_get_duration: Histogram::default(),
            stale_responses_dropped: AtomicU64::new(0),
            dead_pipelines_detected: AtomicU64::new(0),
            pipelines_reaped: AtomicU64::new(0),
            health_check_failures: AtomicU64::new(0),
            health_checks: AtomicU64::new(0),
            health_sweeps: AtomicU64::new(0),
            last_sweep_unix_ms: AtomicU64::new(0),
            active_pipelines: AtomicI64::new(0),
        }
    }
}

/// A point-in-time summary (seconds as floats).
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub total_commands: u64,
    pub successful_commands: u64,
    pub success_rate: f64,
    pub avg_command_time: f64,
    pub p50_command_time: f64,
    pub p95_command_time: f64,
    pub p99_command_time: f64,
    pub max_command_time: f64,
    pub total_timeouts: u64,
    pub failures_by_type: Vec<(&'static str, u64)>,
    pub avg_health_check_time: f64,
    pub p95_health_check_time: f64,
    pub health_checks: u64,
    pub health_check_failures: u64,
    pub dead_pipelines_detected: u64,
    pub pipelines_reaped: u64,
    pub stale_responses_dropped: u64,
    pub active_pipelines: i64,
}

fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub fn record_command(&self, kind: Option<&str>, outcome: &str, duration: Duration) {
        let t = command_index(kind);
        self.command_duration[t].observe(duration);
        add(&self.commands[t * OUTCOMES.len() + outcome_index(outcome)]);
        if outcome == "not_running" {
            add(&self.dead_pipelines_detected);
        }
    }

    pub fn commands(&self, kind: usize, outcome: usize) -> u64 {
        self.commands[kind * OUTCOMES.len() + outcome].load(Ordering::Relaxed)
    }

    fn merged_command_histogram(&self) -> Histogram {
        let merged = Histogram::default();
        for h in &self.command_duration {
            for (m, c) in merged.fine.iter().zip(h.fine.iter()) {
                m.fetch_add(c.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            merged.count.fetch_add(h.count(), Ordering::Relaxed);
            merged
                .sum_nanos
                .fetch_add(h.sum_nanos.load(Ordering::Relaxed), Ordering::Relaxed);
            merged
                .max_nanos
                .fetch_max(h.max_nanos.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        merged
    }

    pub fn summary(&self) -> Summary {
        let all = self.merged_command_histogram();
        let mut failures_by_type = Vec::new();
        let mut total = 0;
        let mut successes = 0;
        for (o, name) in OUTCOMES.iter().enumerate() {
            let n: u64 = (0..COMMAND_TYPES.len()).map(|t| self.commands(t, o)).sum();
            total += n;
            if o == 0 {
                successes = n;
            } else {
                failures_by_type.push((*name, n));
            }
        }
        let timeouts = failures_by_type
            .iter()
            .find(|(n, _)| *n == "timeout")
            .map_or(0, |(_, c)| *c);
        Summary {
            total_commands: total,
            successful_commands: successes,
            success_rate: if total == 0 {
                1.0
            } else {
                successes as f64 / total as f64
            },
            avg_command_time: all.mean_seconds(),
            p50_command_time: all.quantile(0.50),
            p95_command_time: all.quantile(0.95),
            p99_command_time: all.quantile(0.99),
            max_command_time: all.max_seconds(),
            total_timeouts: timeouts,
            failures_by_type,
            avg_health_check_time: self.health_check_duration.mean_seconds(),
            p95_health_check_time: self.health_check_duration.quantile(0.95),
            health_checks: self.health_checks.load(Ordering::Relaxed),
            health_check_failures: self.health_check_failures.load(Ordering::Relaxed),
            dead_pipelines_detected: self.dead_pipelines_detected.load(Ordering::Relaxed),
            pipelines_reaped: self.pipelines_reaped.load(Ordering::Relaxed),
            stale_responses_dropped: self.stale_responses_dropped.load(Ordering::Relaxed),
            active_pipelines: self.active_pipelines.load(Ordering::Relaxed),
        }
    }

    pub fn reset(&self) {
        for h in self.command_duration.iter().chain([
            &self.health_check_duration,
            &self.queue_put_duration,
            &self.queue_get_duration,
        ]) {
            h.reset();
        }
        for c in self.commands.iter().chain([
            &self.stale_responses_dropped,
            &self.dead_pipelines_detected,
            &self.pipelines_reaped,
            &self.health_check_failures,
            &self.health_checks,
            &self.health_sweeps,
        ]) {
            c.store(0, Ordering::Relaxed);
        }
    }

    /// Prometheus text exposition format 0.0.4. `effective_timeouts` are
    /// `(operation, seconds)` pairs from the adaptive-timeout policy.
    pub fn render_prometheus(&self, effective_timeouts: &[(&str, f64)]) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        let _ = writeln!(
            out,
            "# HELP stream_manager_commands_total Commands handled, by command type and outcome.\n# TYPE stream_manager_commands_total counter"
        );
        for (t, kind) in COMMAND_TYPES.iter().enumerate() {
            for (o, outcome) in OUTCOMES.iter().enumerate() {
                let n = self.commands(t, o);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "stream_manager_commands_total{{command_type=\"{kind}\",outcome=\"{outcome}\"}} {n}"
                    );
                }
            }
        }
        let summary = self.summary();
        counter(
            &mut out,
            "stream_manager_command_timeouts_total",
            "Commands that got no answer within their deadline.",
            summary.total_timeouts,
        );
        counter(
            &mut out,
            "stream_manager_stale_responses_dropped_total",
            "Answers to other requests (or malformed items) dropped from responses queues.",
            summary.stale_responses_dropped,
        );
        counter(
            &mut out,
            "stream_manager_dead_pipelines_detected_total",
            "Pipelines found dead while a command waited on them.",
            summary.dead_pipelines_detected,
        );
        counter(
            &mut out,
            "stream_manager_pipelines_reaped_total",
            "Pipelines terminated, reaped and removed by the health daemon.",
            summary.pipelines_reaped,
        );
        counter(
            &mut out,
            "stream_manager_health_checks_total",
            "STATUS probes sent by the health daemon.",
            summary.health_checks,
        );
        counter(
            &mut out,
            "stream_manager_health_check_failures_total",
            "Failed STATUS probes.",
            summary.health_check_failures,
        );
        counter(
            &mut out,
            "stream_manager_health_sweeps_total",
            "Completed health-daemon sweeps.",
            self.health_sweeps.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP stream_manager_active_pipelines Pipelines in the table, not being removed.\n# TYPE stream_manager_active_pipelines gauge\nstream_manager_active_pipelines {}",
            summary.active_pipelines
        );
        let _ = writeln!(
            out,
            "# HELP stream_manager_last_health_sweep_timestamp_seconds UNIX time of the last completed health sweep.\n# TYPE stream_manager_last_health_sweep_timestamp_seconds gauge\nstream_manager_last_health_sweep_timestamp_seconds {}",
            self.last_sweep_unix_ms.load(Ordering::Relaxed) as f64 / 1e3
        );
        let _ = writeln!(
            out,
            "# HELP stream_manager_effective_timeout_seconds Timeout currently applied, by operation.\n# TYPE stream_manager_effective_timeout_seconds gauge"
        );
        for (operation, seconds) in effective_timeouts {
            let _ = writeln!(
                out,
                "stream_manager_effective_timeout_seconds{{operation=\"{operation}\"}} {seconds}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP stream_manager_command_duration_seconds Time to handle a command, by command type.\n# TYPE stream_manager_command_duration_seconds histogram"
        );
        for (t, kind) in COMMAND_TYPES.iter().enumerate() {
            let h = &self.command_duration[t];
            if h.count() > 0 {
                write_histogram(
                    &mut out,
                    "stream_manager_command_duration_seconds",
                    &format!("command_type=\"{kind}\","),
                    h,
                );
            }
        }
        for (name, help, h) in [
            (
                "stream_manager_health_check_duration_seconds",
                "Time of one STATUS probe by the health daemon.",
                &self.health_check_duration,
            ),
            (
                "stream_manager_queue_put_duration_seconds",
                "Time to put a command on a pipeline's queue.",
                &self.queue_put_duration,
            ),
            (
                "stream_manager_queue_get_duration_seconds",
                "Time waiting for a pipeline's answer.",
                &self.queue_get_duration,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            write_histogram(&mut out, name, "", h);
        }
        out
    }
}

fn write_histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let cumulative = h.cumulative_buckets();
    for (i, bound) in PROMETHEUS_BOUNDS.iter().enumerate() {
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}le=\"{bound}\"}} {}",
            cumulative[i]
        );
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels}le=\"+Inf\"}} {}",
        cumulative[PROMETHEUS_BOUNDS.len()]
    );
    let plain = labels.trim_end_matches(',');
    let braces = if plain.is_empty() {
        String::new()
    } else {
        format!("{{{plain}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {}", h.sum_seconds());
    let _ = writeln!(out, "{name}_count{braces} {}", h.count());
}

pub static METRICS: Lazy<Metrics> = Lazy::new(Metrics::default);

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn fine_buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in [
            1u64,
            15,
            16,
            17,
            100,
            1_000,
            123_456,
            1_000_000_000,
            u64::MAX / 2,
        ] {
            let i = fine_index(v);
            assert!(i >= last);
            last = i;
            let low = fine_lower_bound(i);
            let high = fine_lower_bound(i + 1);
            assert!(low <= v && v < high, "{v}: [{low}, {high})");
            if v >= 16 {
                assert!((high - low) as f64 / low as f64 <= 1.0 / 16.0 + 1e-9);
            }
        }
    }

    #[test]
    fn quantiles_are_accurate_within_bucket_precision() {
        let h = Histogram::default();
        for ms in 1..=1000u64 {
            h.observe(Duration::from_millis(ms));
        }
        for (q, expected) in [(0.5, 0.5), (0.95, 0.95), (0.99, 0.99)] {
            let got = h.quantile(q);
            assert!((got - expected).abs() / expected < 0.04, "q{q}: {got}");
        }
        assert!((h.mean_seconds() - 0.5005).abs() < 1e-6);
        assert_eq!(h.count(), 1000);
        assert_eq!(h.max_seconds(), 1.0);
    }

    #[test]
    fn empty_histogram_is_zero() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.99), 0.0);
        assert_eq!(h.mean_seconds(), 0.0);
    }

    #[test]
    fn prometheus_buckets_are_exact_and_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(1)); // le=0.001 exactly
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let c = h.cumulative_buckets();
        assert_eq!(c[1], 1); // le 0.001
        assert_eq!(c[6], 2); // le 0.05
        assert_eq!(c[PROMETHEUS_BOUNDS.len() - 1], 2); // le 10
        assert_eq!(c[PROMETHEUS_BOUNDS.len()], 3); // +Inf
    }

    #[test]
    fn counts_add_up_under_concurrency() {
        let m = Arc::new(Metrics::default());
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || {
                    for n in 0..10_000u64 {
                        let outcome = if n % 10 == 0 { "timeout" } else { "success" };
                        m.record_command(
                            Some(COMMAND_TYPES[i % 4]),
                            outcome,
                            Duration::from_micros(n % 500),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = m.summary();
        assert_eq!(s.total_commands, 80_000);
        assert_eq!(s.total_timeouts, 8_000);
        assert_eq!(s.successful_commands, 72_000);
        assert!((s.success_rate - 0.9).abs() < 1e-12);
        let hist_total: u64 = m.command_duration.iter().map(|h| h.count()).sum();
        assert_eq!(hist_total, 80_000);
    }

    #[test]
    fn unknown_names_fall_back() {
        assert_eq!(command_index(Some("teleport")), COMMAND_TYPES.len() - 1);
        assert_eq!(command_index(None), COMMAND_TYPES.len() - 1);
        assert_eq!(outcome_index("answered?"), 1);
    }

    #[test]
    fn exposition_has_help_type_and_units() {
        let m = Metrics::default();
        m.record_command(Some("status"), "success", Duration::from_millis(2));
        m.record_command(Some("status"), "timeout", Duration::from_secs(1));
        let text = m.render_prometheus(&[("command", 10.0)]);
        assert!(text.contains("# TYPE stream_manager_commands_total counter"));
        assert!(text.contains(
            "stream_manager_commands_total{command_type=\"status\",outcome=\"timeout\"} 1"
        ));
        assert!(text.contains(
            "stream_manager_command_duration_seconds_bucket{command_type=\"status\",le=\"+Inf\"} 2"
        ));
        assert!(text
            .contains("stream_manager_command_duration_seconds_count{command_type=\"status\"} 2"));
        assert!(text.contains("stream_manager_effective_timeout_seconds{operation=\"command\"} 10"));
        assert!(text.contains("stream_manager_queue_get_duration_seconds_count 0"));
    }
}

#[cfg(test)]
mod proptests {
    //! Property tests: fine buckets partition all of u64, quantiles are monotone and
    //! bounded, counts and sums add up, Prometheus buckets are exact and cumulative.
    use super::*;
    use proptest::prelude::*;

    fn nanos() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..64,
            any::<u64>(),
            (0u32..64).prop_map(|s| 1u64 << s),
            (1u32..64).prop_map(|s| (1u64 << s) - 1),
            Just(u64::MAX),
        ]
    }

    /// Observations up to ~2 min, so that the ns sum cannot wrap.
    fn observation() -> impl Strategy<Value = Duration> {
        prop_oneof![
            (0u64..100_000).prop_map(Duration::from_nanos),
            (0u64..120_000_000_000).prop_map(Duration::from_nanos),
            prop::sample::select(PROMETHEUS_BOUNDS.to_vec()).prop_map(Duration::from_secs_f64),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn fine_buckets_partition_u64(v in nanos()) {
            let i = fine_index(v);
            prop_assert!(i < FINE_BUCKETS);
            let low = fine_lower_bound(i);
            let high = fine_lower_bound(i + 1);
            prop_assert!(low <= v, "{v} below [{low}, {high})");
            // The last bucket's upper bound is the u64::MAX sentinel, which it contains.
            prop_assert!(v < high || high == u64::MAX, "{v} above [{low}, {high})");
            prop_assert_eq!(fine_index(low), i);
            if v >= SUB_BUCKETS as u64 {
                // 16 sub-buckets per power of two: relative width at most 1/16.
                prop_assert!((high - low) as f64 <= low as f64 / 16.0 * (1.0 + 1e-12));
            } else {
                prop_assert_eq!((low, i), (v, v as usize));
            }
        }

        #[test]
        fn fine_index_is_monotone(a in nanos(), b in nanos()) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            prop_assert!(fine_index(lo) <= fine_index(hi));
        }

        #[test]
        fn fine_lower_bound_is_monotone_and_total(
            i in prop_oneof![
                any::<usize>(),
                // Indices whose `index / 16` has small low 32 bits.
                (1usize..8, 0usize..64, 0usize..16).prop_map(|(h, e, s)| ((h << 32) + e) * 16 + s),
            ],
            j in 0usize..2 * FINE_BUCKETS,
        ) {
            let _ = fine_lower_bound(i); // no panic for any index
            prop_assert!(fine_lower_bound(j) <= fine_lower_bound(j + 1));
            if j < FINE_BUCKETS && fine_lower_bound(j) < u64::MAX {
                prop_assert_eq!(fine_index(fine_lower_bound(j)), j);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn histogram_is_consistent(
            values in prop::collection::vec(observation(), 1..200),
            qs in prop::collection::vec(prop_oneof![0.0f64..=1.0, any::<f64>()], 1..8),
        ) {
            let h = Histogram::default();
            for v in &values {
                h.observe(*v);
            }
            let n = values.len() as u64;
            prop_assert_eq!(h.count(), n);
            let sum: u128 = values.iter().map(Duration::as_nanos).sum();
            prop_assert!((h.sum_seconds() - sum as f64 / 1e9).abs() < 1e-9 * (1.0 + sum as f64 / 1e9));
            let max = values.iter().max().unwrap();
            prop_assert_eq!(h.max_seconds(), max.as_nanos() as f64 / 1e9);
            prop_assert!(h.mean_seconds() <= h.max_seconds() + 1e-12);

            // Prometheus buckets: exact counts, cumulative, +Inf holds everything.
            let cumulative = h.cumulative_buckets();
            prop_assert_eq!(cumulative.len(), PROMETHEUS_BOUNDS.len() + 1);
            prop_assert!(cumulative.windows(2).all(|w| w[0] <= w[1]));
            prop_assert_eq!(cumulative[PROMETHEUS_BOUNDS.len()], n);
            for (i, bound) in PROMETHEUS_BOUNDS.iter().enumerate() {
                let le = values.iter().filter(|v| v.as_secs_f64() <= *bound).count() as u64;
                prop_assert_eq!(cumulative[i], le, "le={}", bound);
            }

            // Quantiles: within [lowest bucket, max], monotone in q, close to nearest rank.
            let mut sorted: Vec<u64> = values.iter().map(|v| v.as_nanos() as u64).collect();
            sorted.sort_unstable();
            let floor = fine_lower_bound(fine_index(sorted[0])) as f64 / 1e9;
            let mut qs = qs;
            qs.extend([0.0, 0.5, 0.95, 0.99, 1.0]);
            let finite: Vec<f64> = qs.iter().copied().filter(|q| !q.is_nan()).collect();
            for q in &qs {
                let got = h.quantile(*q);
                prop_assert!(got >= floor && got <= h.max_seconds(), "q{q}: {got}");
            }
            let mut ordered = finite.clone();
            ordered.sort_by(f64::total_cmp);
            for w in ordered.windows(2) {
                prop_assert!(h.quantile(w[0]) <= h.quantile(w[1]), "q{} > q{}", w[0], w[1]);
            }
            for q in finite {
                let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
                let exact = sorted[rank as usize - 1] as f64 / 1e9;
                let got = h.quantile(q);
                prop_assert!((got - exact).abs() <= exact / 16.0 + 1e-9, "q{q}: {got} vs {exact}");
            }
            h.reset();
            prop_assert_eq!(h.count(), 0);
            prop_assert_eq!(h.quantile(0.5), 0.0);
            prop_assert_eq!(h.cumulative_buckets().last().copied(), Some(0));
        }

        #[test]
        fn extreme_observations_do_not_panic(values in prop::collection::vec(
            prop_oneof![
                Just(Duration::MAX),
                Just(Duration::ZERO),
                (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
            ],
            1..20,
        )) {
            let h = Histogram::default();
            for v in &values {
                h.observe(*v);
            }
            prop_assert_eq!(h.count(), values.len() as u64);
            for q in [0.0, 0.5, 1.0, f64::NAN, f64::INFINITY, -1.0] {
                let got = h.quantile(q);
                prop_assert!(got.is_finite() && got >= 0.0 && got <= h.max_seconds());
            }
            prop_assert_eq!(h.cumulative_buckets().last().copied(), Some(values.len() as u64));
        }

        #[test]
        fn command_summary_adds_up(
            commands in prop::collection::vec(
                (
                    prop::option::of(prop_oneof![
                        prop::sample::select(COMMAND_TYPES.to_vec()).prop_map(String::from),
                        "\\PC{0,8}",
                    ]),
                    prop_oneof![
                        prop::sample::select(OUTCOMES.to_vec()).prop_map(String::from),
                        "\\PC{0,8}",
                    ],
                    observation(),
                ),
                0..60,
            )
        ) {
            let m = Metrics::default();
            for (kind, outcome, d) in &commands {
                m.record_command(kind.as_deref(), outcome, *d);
            }
            let s = m.summary();
            let n = commands.len() as u64;
            prop_assert_eq!(s.total_commands, n);
            let successes = commands.iter().filter(|(_, o, _)| o == "success").count() as u64;
            let timeouts = commands.iter().filter(|(_, o, _)| o == "timeout").count() as u64;
            prop_assert_eq!(s.successful_commands, successes);
            prop_assert_eq!(s.total_timeouts, timeouts);
            let failures: u64 = s.failures_by_type.iter().map(|(_, c)| c).sum();
            prop_assert_eq!(successes + failures, n);
            prop_assert!((0.0..=1.0).contains(&s.success_rate));
            prop_assert!(s.p50_command_time <= s.p95_command_time);
            prop_assert!(s.p95_command_time <= s.p99_command_time);
            prop_assert!(s.p99_command_time <= s.max_command_time);
            let text = m.render_prometheus(&[("command", 1.0)]);
            prop_assert!(text.ends_with('\n'));
        }
    }
}
