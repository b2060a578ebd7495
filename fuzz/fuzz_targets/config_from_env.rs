//! Arbitrary bytes as the STREAM_MANAGER_* environment: `Config::from_lookup` and each
//! parser must never panic, every accepted value must obey its documented rule, and the
//! policies fed from an accepted configuration must stay within their bounds.
//!
//! Input layout: byte 0 is a presence mask for the first eight variables; the rest is
//! split on NUL (which no environment value can hold) into one value per variable, in
//! `VARS` order; a ninth chunk, if any, is `STREAM_MANAGER_PATCHES`. Values are decoded
//! lossily, as `os.environ` would hand them over after surrogate escapes are replaced.
#![no_main]

use std::time::Duration;

use _native::adaptive::{effective_timeout, ABSOLUTE_FLOOR};
use _native::config::{self, Config, ConfigError, DurationRule, PatchSelection};
use _native::policy::ProbePolicy;
use libfuzzer_sys::fuzz_target;

const VARS: [&str; 9] = [
    config::ENV_QUEUE_TIMEOUT,
    config::ENV_HEALTH_CHECK_TIMEOUT,
    config::ENV_HEALTH_CHECK_INTERVAL,
    config::ENV_MAX_HEALTH_FAILURES,
    config::ENV_PROCESS_JOIN_TIMEOUT,
    config::ENV_TERMINATION_GRACE_PERIOD,
    config::ENV_ADAPTIVE_TIMEOUTS,
    config::ENV_SERVER_THREADS,
    config::ENV_PATCHES,
];

fn check_error(err: &ConfigError, variable: &str, raw: &str) {
    assert_eq!(err.variable, variable);
    assert_eq!(err.value, raw);
    let text = err.to_string();
    assert!(text.contains(variable), "{text}");
    assert!(text.contains(&format!("{raw:?}")), "{text}");
}

fn check_seconds(v: f64, positive: bool) -> Duration {
    assert!(v.is_finite() && v <= config::MAX_SECONDS, "{v}");
    assert!(if positive { v > 0.0 } else { v >= 0.0 }, "{v}");
    let d = Duration::try_from_secs_f64(v).expect("accepted seconds fit a Duration");
    // The deadline arithmetic the callers do, with the adaptive policy's 2x.
    let _ = std::time::Instant::now() + d.saturating_mul(2);
    d
}

fn check_selection(sel: &PatchSelection) {
    let names = sel.names();
    let mut last = None;
    for name in &names {
        let i = config::PATCH_NAMES.iter().position(|k| k == name).expect("known name");
        assert!(last.is_none_or(|l| l < i), "not canonical: {names:?}");
        last = Some(i);
    }
    match sel {
        PatchSelection::All => assert_eq!(names, config::DEFAULT_PATCH_NAMES),
        PatchSelection::Nothing => assert!(names.is_empty()),
        PatchSelection::Only(only) => assert!(!only.is_empty()),
    }
    // The canonical text of a non-empty selection reads back to the same selection.
    if !names.is_empty() {
        assert_eq!(PatchSelection::parse(&names.join(",")).as_ref(), Ok(sel));
    }
}

/// Every parser on one raw value.
fn parsers(variable: &str, raw: &str) {
    for (rule, positive) in [(DurationRule::Positive, true), (DurationRule::NonNegative, false)] {
        match config::parse_seconds(variable, raw, rule) {
            Ok(v) => {
                check_seconds(v, positive);
                assert_eq!(raw.trim().parse::<f64>().ok(), Some(v));
            }
            Err(e) => check_error(&e, variable, raw),
        }
    }
    match config::parse_failures(variable, raw) {
        Ok(n) => assert!(n >= 1 && raw.trim().parse::<u32>() == Ok(n)),
        Err(e) => check_error(&e, variable, raw),
    }
    match config::parse_bool(variable, raw) {
        Ok(_) => assert!(raw.trim().len() <= 5),
        Err(e) => check_error(&e, variable, raw),
    }
    match config::parse_patches(variable, raw) {
        Ok(sel) => check_selection(&sel),
        Err(e) => check_error(&e, variable, raw),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mask, rest)) = data.split_first() else {
        return;
    };
    let chunks: Vec<String> = rest
        .split(|&b| b == 0)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let env: Vec<(&str, &String)> = VARS
        .iter()
        .zip(&chunks)
        .enumerate()
        .filter(|(i, _)| *i == 8 || mask & (1 << i) != 0)
        .map(|(_, (k, v))| (*k, v))
        .collect();
    for (k, v) in &env {
        parsers(k, v);
    }
    let lookup = |name: &str| {
        env.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).clone())
    };
    match Config::from_lookup(lookup) {
        Ok(c) => {
            let queue = check_seconds(c.queue_timeout, true);
            let health = check_seconds(c.health_check_timeout, true);
            let interval = check_seconds(c.health_check_interval, true);
            check_seconds(c.process_join_timeout, true);
            check_seconds(c.termination_grace_period, false);
            assert!(c.max_health_failures >= 1 && c.server_threads >= 1);
            assert_eq!(c.queue_timeout(), queue);
            check_selection(&c.patches);

            // The policies fed from this configuration, with counts from the input.
            let n = u32::from_le_bytes(
                std::array::from_fn(|i| rest.get(i).copied().unwrap_or(0)),
            );
            let p = ProbePolicy::new(interval);
            let ok = p.after_success(n);
            assert!(p.base <= ok && ok <= p.max_healthy);
            let bad = p.after_failure(n);
            assert!(p.min_failing <= bad && bad <= p.base);
            for base in [queue, health] {
                let p99 = Duration::from_nanos(u64::from(n).wrapping_mul(0x9e37_79b9));
                let t = effective_timeout(base, Some(p99));
                assert!(t >= base / 2 && t <= base * 2 && t >= ABSOLUTE_FLOOR.min(base));
            }
        }
        Err(e) => {
            let raw = lookup(&e.variable).expect("the error names a variable that was set");
            check_error(&e, &e.variable, &raw);
        }
    }
});
