//! Configuration: read once from the environment (or given explicitly), validated, immutable.
//!
//! Everything here is pure Rust so that the parsing rules are unit-tested without Python.
//! A bad value is reported with the variable, the value and the rule, because the person
//! reading the error is usually editing a container's env file, not our source.

use std::fmt;
use std::time::Duration;

/// Every patch this library can install. The six function patches are named after the
/// upstream function they replace; `manager_handler` fixes races in upstream's request
/// handler class and `server` swaps its serial TCP server for a pooled threaded one.
/// The order is the order in which they are installed and reported.
pub const PATCH_NAMES: [&str; 8] = [
    "handle_command",
    "get_response_ignoring_thrash",
    "check_process_health",
    "execute_termination",
    "join_inference_pipeline",
    "ensure_idle_pipelines_warmed_up",
    "manager_handler",
    "server",
];

/// What `all` (and the default) means: everything but the opt-in `server`.
pub const DEFAULT_PATCH_NAMES: [&str; 7] = [
    "handle_command",
    "get_response_ignoring_thrash",
    "check_process_health",
    "execute_termination",
    "join_inference_pipeline",
    "ensure_idle_pipelines_warmed_up",
    "manager_handler",
];

pub const ENV_QUEUE_TIMEOUT: &str = "STREAM_MANAGER_QUEUE_TIMEOUT";
pub const ENV_HEALTH_CHECK_TIMEOUT: &str = "STREAM_MANAGER_HEALTH_CHECK_TIMEOUT";
pub const ENV_HEALTH_CHECK_INTERVAL: &str = "STREAM_MANAGER_HEALTH_CHECK_INTERVAL";
pub const ENV_MAX_HEALTH_FAILURES: &str = "STREAM_MANAGER_MAX_HEALTH_FAILURES";
pub const ENV_PROCESS_JOIN_TIMEOUT: &str = "STREAM_MANAGER_PROCESS_JOIN_TIMEOUT";
pub const ENV_TERMINATION_GRACE_PERIOD: &str = "STREAM_MANAGER_TERMINATION_GRACE_PERIOD";
pub const ENV_PATCHES: &str = "STREAM_MANAGER_PATCHES";
pub const ENV_ADAPTIVE_TIMEOUTS: &str = "STREAM_MANAGER_ADAPTIVE_TIMEOUTS";
pub const ENV_SERVER_THREADS: &str = "STREAM_MANAGER_SERVER_THREADS";

/// Which patches to install.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PatchSelection {
    All,
    Nothing,
    /// A subset, kept in `PATCH_NAMES` order without duplicates.
    Only(Vec<&'static str>),
}

impl PatchSelection {
    /// Parse `all`, `none`/`0`/`off`, or a comma list of patch names.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let value = raw.trim();
        match value.to_ascii_lowercase().as_str() {
            "" | "all" | "1" | "on" => return Ok(PatchSelection::All),
            "none" | "0" | "off" => return Ok(PatchSelection::Nothing),
            _ => {}
        }
        let mut requested: Vec<&str> = Vec::new();
        for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item.eq_ignore_ascii_case("all") {
                requested.extend(DEFAULT_PATCH_NAMES);
                continue;
            }
            match PATCH_NAMES.iter().find(|name| **name == item) {
                Some(name) => requested.push(name),
                None => return Err(format!("unknown patch name {item:?}")),
            }
        }
        Ok(Self::from_names(&requested))
    }

    /// Build a selection from known names (order and duplicates do not matter).
    pub fn from_names(names: &[&str]) -> Self {
        let chosen: Vec<&'static str> = PATCH_NAMES
            .iter()
            .copied()
            .filter(|known| names.contains(known))
            .collect();
        if chosen.is_empty() {
            PatchSelection::Nothing
        } else if chosen == DEFAULT_PATCH_NAMES {
            PatchSelection::All
        } else {
            PatchSelection::Only(chosen)
        }
    }

    pub fn names(&self) -> Vec<&'static str> {
        match self {
            PatchSelection::All => DEFAULT_PATCH_NAMES.to_vec(),
            PatchSelection::Nothing => Vec::new(),
            PatchSelection::Only(names) => names.clone(),
        }
    }
}

/// A validation failure, rendered as one sentence naming variable, value and rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub variable: String,
    pub value: String,
    pub rule: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={:?} is invalid: {}",
            self.variable, self.value, self.rule
        )
    }
}

impl std::error::Error for ConfigError {}

/// The validated configuration. Durations are kept as seconds (f64) because that is
/// how users write them, and converted with `duration()` where a wait needs one.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub queue_timeout: f64,
    pub health_check_timeout: f64,
    pub health_check_interval: f64,
    pub max_health_failures: u32,
    pub process_join_timeout: f64,
    pub termination_grace_period: f64,
    pub patches: PatchSelection,
    /// Derive command and health-check timeouts from recent behaviour (`adaptive`).
    pub adaptive_timeouts: bool,
    /// Worker threads of the pooled TCP server (`server` patch).
    pub server_threads: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            queue_timeout: 10.0,
            health_check_timeout: 5.0,
            health_check_interval: 1.0,
            max_health_failures: 3,
            process_join_timeout: 30.0,
            termination_grace_period: 5.0,
            patches: PatchSelection::All,
            adaptive_timeouts: false,
            server_threads: 8,
        }
    }
}

/// Largest accepted duration, in seconds (about 31.7 years). A finite but huge value is
/// "no bound" in practice, and it breaks the arithmetic downstream: `Duration` conversion
/// panics past ~1.8e19 s, `Instant + 2 x timeout` overflows, and Python's lock and queue
/// waits refuse timeouts above `threading.TIMEOUT_MAX` (~9.2e9 s on Linux), which stays
/// out of reach even after the adaptive policy doubles a timeout.
pub const MAX_SECONDS: f64 = 1e9;

/// The rule a duration must satisfy.
#[derive(Clone, Copy, Debug)]
pub enum DurationRule {
    Positive,
    NonNegative,
}

impl DurationRule {
    fn describe(self) -> &'static str {
        match self {
            DurationRule::Positive => "must be a finite number of seconds > 0 and <= 1e9",
            DurationRule::NonNegative => "must be a finite number of seconds >= 0 and <= 1e9",
        }
    }
}

fn error(variable: &str, value: &str, rule: &str) -> ConfigError {
    ConfigError {
        variable: variable.to_string(),
        value: value.to_string(),
        rule: rule.to_string(),
    }
}

/// Parse a duration in seconds. Infinity and NaN are refused: "no bound" is exactly
/// the failure this library exists to remove.
pub fn parse_seconds(variable: &str, raw: &str, rule: DurationRule) -> Result<f64, ConfigError> {
    let parsed: f64 = raw
        .trim()
        .parse()
        .map_err(|_| error(variable, raw, rule.describe()))?;
    check_seconds(variable, parsed, rule).map_err(|_| error(variable, raw, rule.describe()))
}

/// Check an already-numeric duration (used for explicit `Config(...)` arguments too).
pub fn check_seconds(variable: &str, value: f64, rule: DurationRule) -> Result<f64, ConfigError> {
    let ok = value.is_finite()
        && value <= MAX_SECONDS
        && match rule {
            DurationRule::Positive => value > 0.0,
            DurationRule::NonNegative => value >= 0.0,
        };
    if ok {
        Ok(value)
    } else {
        Err(error(variable, &value.to_string(), rule.describe()))
    }
}

const FAILURES_RULE: &str = "must be an integer >= 1";

/// Parse a positive integer (failure counts, thread counts).
pub fn parse_failures(variable: &str, raw: &str) -> Result<u32, ConfigError> {
    match raw.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(error(variable, raw, FAILURES_RULE)),
    }
}

pub fn check_failures(variable: &str, value: i64) -> Result<u32, ConfigError> {
    if value >= 1 && value <= u32::MAX as i64 {
        Ok(value as u32)
    } else {
        Err(error(variable, &value.to_string(), FAILURES_RULE))
    }
}

const BOOL_RULE: &str = "must be 1/true/on/yes or 0/false/off/no";

pub fn parse_bool(variable: &str, raw: &str) -> Result<bool, ConfigError> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        _ => Err(error(variable, raw, BOOL_RULE)),
    }
}

pub fn parse_patches(variable: &str, raw: &str) -> Result<PatchSelection, ConfigError> {
    PatchSelection::parse(raw).map_err(|why| {
        error(
            variable,
            raw,
            &format!(
                "{why}; use 'all', 'none' (or '0'/'off'), or a comma list of: {}",
                PATCH_NAMES.join(", ")
            ),
        )
    })
}

impl Config {
    /// Build from an environment lookup. Unset or empty variables take the default,
    /// because env files commonly carry `NAME=` lines that mean "not set".
    pub fn from_lookup<F>(lookup: F) -> Result<Config, ConfigError>
    where
        F: Fn(&str) -> Option<String>,
    {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let mut config = Config::default();
        if let Some(raw) = get(ENV_QUEUE_TIMEOUT) {
            config.queue_timeout = parse_seconds(ENV_QUEUE_TIMEOUT, &raw, DurationRule::Positive)?;
        }
        if let Some(raw) = get(ENV_HEALTH_CHECK_TIMEOUT) {
            config.health_check_timeout =
                parse_seconds(ENV_HEALTH_CHECK_TIMEOUT, &raw, DurationRule::Positive)?;
        }
        if let Some(raw) = get(ENV_HEALTH_CHECK_INTERVAL) {
            config.health_check_interval =
                parse_seconds(ENV_HEALTH_CHECK_INTERVAL, &raw, DurationRule::Positive)?;
        }
        if let Some(raw) = get(ENV_MAX_HEALTH_FAILURES) {
            config.max_health_failures = parse_failures(ENV_MAX_HEALTH_FAILURES, &raw)?;
        }
        if let Some(raw) = get(ENV_PROCESS_JOIN_TIMEOUT) {
            config.process_join_timeout =
                parse_seconds(ENV_PROCESS_JOIN_TIMEOUT, &raw, DurationRule::Positive)?;
        }
        if let Some(raw) = get(ENV_TERMINATION_GRACE_PERIOD) {
            config.termination_grace_period = parse_seconds(
                ENV_TERMINATION_GRACE_PERIOD,
                &raw,
                DurationRule::NonNegative,
            )?;
        }
        if let Some(raw) = get(ENV_ADAPTIVE_TIMEOUTS) {
            config.adaptive_timeouts = parse_bool(ENV_ADAPTIVE_TIMEOUTS, &raw)?;
        }
        if let Some(raw) = get(ENV_SERVER_THREADS) {
            config.server_threads = parse_failures(ENV_SERVER_THREADS, &raw)?;
        }
        if let Some(raw) = lookup(ENV_PATCHES) {
            config.patches = parse_patches(ENV_PATCHES, &raw)?;
        }
        Ok(config)
    }

    pub fn queue_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.queue_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn defaults_match_the_design() {
        let config = Config::from_lookup(lookup(&[])).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.queue_timeout, 10.0);
        assert_eq!(config.health_check_timeout, 5.0);
        assert_eq!(config.max_health_failures, 3);
        assert_eq!(config.process_join_timeout, 30.0);
        assert_eq!(config.termination_grace_period, 5.0);
        assert_eq!(config.patches, PatchSelection::All);
    }

    #[test]
    fn values_are_read_and_trimmed() {
        let config = Config::from_lookup(lookup(&[
            (ENV_QUEUE_TIMEOUT, " 1.5 "),
            (ENV_HEALTH_CHECK_TIMEOUT, "2"),
            (ENV_MAX_HEALTH_FAILURES, "7"),
            (ENV_PROCESS_JOIN_TIMEOUT, "0.25"),
            (ENV_TERMINATION_GRACE_PERIOD, "0"),
            (ENV_HEALTH_CHECK_INTERVAL, "0.5"),
        ]))
        .unwrap();
        assert_eq!(config.queue_timeout, 1.5);
        assert_eq!(config.health_check_timeout, 2.0);
        assert_eq!(config.max_health_failures, 7);
        assert_eq!(config.process_join_timeout, 0.25);
        assert_eq!(config.termination_grace_period, 0.0);
        assert_eq!(config.health_check_interval, 0.5);
    }

    #[test]
    fn empty_values_mean_unset() {
        let config = Config::from_lookup(lookup(&[(ENV_QUEUE_TIMEOUT, "  ")])).unwrap();
        assert_eq!(config.queue_timeout, 10.0);
    }

    #[test]
    fn bad_durations_name_variable_value_and_rule() {
        for bad in ["abc", "0", "-1", "nan", "inf", "1e400", "1s"] {
            let err = Config::from_lookup(lookup(&[(ENV_QUEUE_TIMEOUT, bad)])).unwrap_err();
            assert_eq!(err.variable, ENV_QUEUE_TIMEOUT);
            assert_eq!(err.value, bad);
            let text = err.to_string();
            assert!(text.contains(ENV_QUEUE_TIMEOUT), "{text}");
            assert!(text.contains(bad), "{text}");
            assert!(text.contains("> 0"), "{text}");
        }
    }

    #[test]
    fn grace_period_may_be_zero_but_not_negative() {
        assert!(Config::from_lookup(lookup(&[(ENV_TERMINATION_GRACE_PERIOD, "0")])).is_ok());
        let err =
            Config::from_lookup(lookup(&[(ENV_TERMINATION_GRACE_PERIOD, "-0.1")])).unwrap_err();
        assert!(err.to_string().contains(">= 0"));
    }

    #[test]
    fn failures_must_be_positive_integers() {
        for bad in ["0", "-3", "2.5", "three", "99999999999"] {
            let err = Config::from_lookup(lookup(&[(ENV_MAX_HEALTH_FAILURES, bad)])).unwrap_err();
            assert_eq!(err.variable, ENV_MAX_HEALTH_FAILURES);
            assert!(err.to_string().contains("integer >= 1"));
        }
        assert_eq!(check_failures("X", 1).unwrap(), 1);
        assert!(check_failures("X", 0).is_err());
    }

    #[test]
    fn adaptive_timeouts_flag() {
        assert!(!Config::from_lookup(lookup(&[])).unwrap().adaptive_timeouts);
        for on in ["1", "true", "ON", "yes"] {
            let c = Config::from_lookup(lookup(&[(ENV_ADAPTIVE_TIMEOUTS, on)])).unwrap();
            assert!(c.adaptive_timeouts);
        }
        let err = Config::from_lookup(lookup(&[(ENV_ADAPTIVE_TIMEOUTS, "maybe")])).unwrap_err();
        assert!(err.to_string().contains("maybe"));
        assert!(err.to_string().contains(ENV_ADAPTIVE_TIMEOUTS));
    }

    #[test]
    fn patch_selection_keywords() {
        for all in ["all", "ALL", " all ", "1", "on"] {
            assert_eq!(PatchSelection::parse(all).unwrap(), PatchSelection::All);
        }
        for none in ["none", "0", "off", "OFF"] {
            assert_eq!(
                PatchSelection::parse(none).unwrap(),
                PatchSelection::Nothing
            );
        }
    }

    #[test]
    fn patch_selection_lists_keep_canonical_order() {
        let sel =
            PatchSelection::parse("get_response_ignoring_thrash, handle_command,handle_command")
                .unwrap();
        assert_eq!(
            sel,
            PatchSelection::Only(vec!["handle_command", "get_response_ignoring_thrash"])
        );
        assert_eq!(
            PatchSelection::parse(&DEFAULT_PATCH_NAMES.join(",")).unwrap(),
            PatchSelection::All
        );
    }

    #[test]
    fn server_is_opt_in_and_all_can_be_combined() {
        assert!(!PatchSelection::All.names().contains(&"server"));
        let sel = PatchSelection::parse("all,server").unwrap();
        assert_eq!(sel.names(), PATCH_NAMES.to_vec());
        assert_eq!(
            PatchSelection::parse("server").unwrap().names(),
            vec!["server"]
        );
    }

    #[test]
    fn unknown_patch_names_list_the_valid_ones() {
        let err =
            Config::from_lookup(lookup(&[(ENV_PATCHES, "handle_command,bogus")])).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("bogus"), "{text}");
        for name in PATCH_NAMES {
            assert!(text.contains(name), "{text}");
        }
    }
}

#[cfg(test)]
mod proptests {
    //! Property tests: the parsers never panic, accepted values obey the documented
    //! rules, and every refusal names the variable and the value.
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    const VAR: &str = "STREAM_MANAGER_TEST_VARIABLE";

    /// Every variable `Config::from_lookup` reads, in the order it reads them.
    const ALL_VARS: [&str; 9] = [
        ENV_QUEUE_TIMEOUT,
        ENV_HEALTH_CHECK_TIMEOUT,
        ENV_HEALTH_CHECK_INTERVAL,
        ENV_MAX_HEALTH_FAILURES,
        ENV_PROCESS_JOIN_TIMEOUT,
        ENV_TERMINATION_GRACE_PERIOD,
        ENV_ADAPTIVE_TIMEOUTS,
        ENV_SERVER_THREADS,
        ENV_PATCHES,
    ];

    fn padding() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(vec![' ', '\t', '\n', '\r']), 0..3)
            .prop_map(|v| v.into_iter().collect())
    }

    /// Strings that look like what people put in env files: numbers of every shape
    /// (NaN, inf, huge, negative, exponents, commas), keywords, patch lists, unicode.
    fn env_value() -> impl Strategy<Value = String> {
        let word = prop::sample::select(vec![
            "nan",
            "NaN",
            "-nan",
            "inf",
            "-inf",
            "+inf",
            "infinity",
            "Infinity",
            "1e400",
            "-1e400",
            "1e308",
            "1e19",
            "1e10",
            "1e9",
            "1000000000.0000001",
            "5e-324",
            "0",
            "-0",
            "+0",
            "0.0",
            "-0.0",
            "1",
            "+1",
            "01",
            "1.",
            ".5",
            "1,5",
            "1_000",
            "0x10",
            "1s",
            "1 2",
            "4294967295",
            "4294967296",
            "-1",
            "18446744073709551616",
            "99999999999",
            "true",
            "FALSE",
            "On",
            "oFF",
            "yes",
            "No",
            "all",
            "ALL",
            "none",
            "off",
            "on",
            "all,server",
            "server,all",
            ",,",
            " , ",
            "handle_command,",
            "Handle_Command",
            "bogus",
            "٣",
            "１",
            "½",
            "e",
            "-",
            ".",
            "",
        ]);
        prop_oneof![
            3 => (padding(), word, padding()).prop_map(|(a, w, b)| format!("{a}{w}{b}")),
            2 => any::<f64>().prop_map(|v| v.to_string()),
            1 => any::<f64>().prop_map(|v| format!("{v:e}")),
            1 => any::<i64>().prop_map(|v| v.to_string()),
            1 => any::<u64>().prop_map(|v| format!(" {v} ")),
            1 => "[0-9.eE+-]{0,12}",
            1 => "[a-z_, ]{0,40}",
            2 => any::<String>(),
        ]
    }

    fn check_error(err: &ConfigError, variable: &str, raw: &str) {
        assert_eq!(err.variable, variable);
        assert_eq!(err.value, raw);
        let text = err.to_string();
        assert!(text.contains(variable), "{text}");
        assert!(text.contains(&format!("{raw:?}")), "{text}");
        assert!(!err.rule.is_empty());
    }

    fn check_seconds_ok(v: f64, rule: DurationRule) {
        assert!(v.is_finite() && v <= MAX_SECONDS, "{v}");
        match rule {
            DurationRule::Positive => assert!(v > 0.0, "{v}"),
            DurationRule::NonNegative => assert!(v >= 0.0, "{v}"),
        }
        // What `Config::queue_timeout()` and the Rust callers do with it must not panic,
        // including the deadline arithmetic with twice the value.
        let d = Duration::try_from_secs_f64(v).expect("fits a Duration");
        let _ = std::time::Instant::now() + d * 2;
    }

    fn check_config(c: &Config) {
        check_seconds_ok(c.queue_timeout, DurationRule::Positive);
        check_seconds_ok(c.health_check_timeout, DurationRule::Positive);
        check_seconds_ok(c.health_check_interval, DurationRule::Positive);
        check_seconds_ok(c.process_join_timeout, DurationRule::Positive);
        check_seconds_ok(c.termination_grace_period, DurationRule::NonNegative);
        assert!(c.max_health_failures >= 1);
        assert!(c.server_threads >= 1);
        let _ = c.queue_timeout();
        check_selection(&c.patches);
    }

    fn check_selection(sel: &PatchSelection) {
        let names = sel.names();
        // Canonical order, no duplicates, only known names.
        let positions: Vec<usize> = names
            .iter()
            .map(|n| PATCH_NAMES.iter().position(|k| k == n).expect("known name"))
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{names:?}");
        match sel {
            PatchSelection::All => assert_eq!(names, DEFAULT_PATCH_NAMES),
            PatchSelection::Nothing => assert!(names.is_empty()),
            PatchSelection::Only(only) => {
                assert!(!only.is_empty());
                assert_ne!(only.as_slice(), DEFAULT_PATCH_NAMES.as_slice());
            }
        }
    }

    fn rule() -> impl Strategy<Value = DurationRule> {
        prop_oneof![
            Just(DurationRule::Positive),
            Just(DurationRule::NonNegative)
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn parse_seconds_accepts_exactly_the_rule(raw in env_value(), rule in rule()) {
            let expected = raw.trim().parse::<f64>().ok().filter(|v| {
                v.is_finite()
                    && *v <= MAX_SECONDS
                    && match rule {
                        DurationRule::Positive => *v > 0.0,
                        DurationRule::NonNegative => *v >= 0.0,
                    }
            });
            match parse_seconds(VAR, &raw, rule) {
                Ok(v) => {
                    check_seconds_ok(v, rule);
                    prop_assert_eq!(Some(v), expected);
                }
                Err(err) => {
                    check_error(&err, VAR, &raw);
                    prop_assert!(err.rule.contains("finite"));
                    prop_assert_eq!(expected, None);
                }
            }
        }

        #[test]
        fn seconds_round_trip_through_text(
            v in 1e-9f64..=MAX_SECONDS, pre in padding(), post in padding(), sci in any::<bool>()
        ) {
            let text = if sci { format!("{pre}{v:e}{post}") } else { format!("{pre}{v}{post}") };
            prop_assert_eq!(parse_seconds(VAR, &text, DurationRule::Positive), Ok(v));
            prop_assert_eq!(parse_seconds(VAR, &text, DurationRule::NonNegative), Ok(v));
            prop_assert_eq!(check_seconds(VAR, v, DurationRule::Positive), Ok(v));
        }

        #[test]
        fn check_seconds_agrees_with_parse_seconds(v in any::<f64>(), rule in rule()) {
            let checked = check_seconds(VAR, v, rule);
            match &checked {
                Ok(ok) => {
                    check_seconds_ok(*ok, rule);
                    prop_assert_eq!(ok.to_bits(), v.to_bits());
                }
                Err(err) => check_error(err, VAR, &v.to_string()),
            }
            // `f64`'s Display is the shortest text that reads back to the same value.
            prop_assert_eq!(parse_seconds(VAR, &v.to_string(), rule).is_ok(), checked.is_ok());
        }

        #[test]
        fn parse_failures_accepts_positive_u32_only(raw in env_value()) {
            match parse_failures(VAR, &raw) {
                Ok(n) => {
                    prop_assert!(n >= 1);
                    prop_assert_eq!(raw.trim().parse::<u32>(), Ok(n));
                }
                Err(err) => {
                    check_error(&err, VAR, &raw);
                    prop_assert!(raw.trim().parse::<u32>().map_or(true, |n| n == 0));
                }
            }
        }

        #[test]
        fn failures_round_trip(n in 1u32.., pre in padding(), post in padding()) {
            prop_assert_eq!(parse_failures(VAR, &format!("{pre}{n}{post}")), Ok(n));
            prop_assert_eq!(check_failures(VAR, i64::from(n)), Ok(n));
        }

        #[test]
        fn check_failures_range(v in any::<i64>()) {
            match check_failures(VAR, v) {
                Ok(n) => prop_assert_eq!(i64::from(n), v),
                Err(err) => {
                    check_error(&err, VAR, &v.to_string());
                    prop_assert!(v < 1 || v > i64::from(u32::MAX));
                }
            }
        }

        #[test]
        fn parse_bool_accepts_the_listed_words_in_any_case(
            raw in env_value(),
            word in prop::sample::select(vec!["1", "true", "on", "yes", "0", "false", "off", "no"]),
            upper in prop::collection::vec(any::<bool>(), 5),
            pre in padding(),
            post in padding(),
        ) {
            match parse_bool(VAR, &raw) {
                Ok(b) => {
                    let lower = raw.trim().to_ascii_lowercase();
                    let words: &[&str] = if b {
                        &["1", "true", "on", "yes"]
                    } else {
                        &["0", "false", "off", "no"]
                    };
                    prop_assert!(words.contains(&lower.as_str()), "{raw:?}");
                }
                Err(err) => check_error(&err, VAR, &raw),
            }
            let mixed: String = word
                .chars()
                .zip(upper.iter().cycle())
                .map(|(c, &u)| if u { c.to_ascii_uppercase() } else { c })
                .collect();
            let expected = ["1", "true", "on", "yes"].contains(&word);
            prop_assert_eq!(parse_bool(VAR, &format!("{pre}{mixed}{post}")), Ok(expected));
        }

        #[test]
        fn patch_selection_never_panics_and_is_canonical(raw in env_value()) {
            match PatchSelection::parse(&raw) {
                Ok(sel) => check_selection(&sel),
                Err(why) => prop_assert!(why.contains("unknown patch name"), "{why}"),
            }
            match parse_patches(VAR, &raw) {
                Ok(sel) => check_selection(&sel),
                Err(err) => {
                    check_error(&err, VAR, &raw);
                    for name in PATCH_NAMES {
                        prop_assert!(err.rule.contains(name));
                    }
                }
            }
        }

        #[test]
        fn patch_lists_round_trip(
            picks in prop::collection::vec((0..PATCH_NAMES.len(), padding()), 1..12),
        ) {
            let raw = picks
                .iter()
                .map(|(i, pad)| format!("{pad}{}{pad}", PATCH_NAMES[*i]))
                .collect::<Vec<_>>()
                .join(",");
            let sel = PatchSelection::parse(&raw).unwrap();
            check_selection(&sel);
            let mut expected: Vec<&str> = PATCH_NAMES
                .iter()
                .enumerate()
                .filter(|(i, _)| picks.iter().any(|(p, _)| p == i))
                .map(|(_, n)| *n)
                .collect();
            expected.dedup();
            prop_assert_eq!(sel.names(), expected);
            // The canonical text of a selection parses back to the same selection.
            prop_assert_eq!(PatchSelection::parse(&sel.names().join(",")), Ok(sel.clone()));
            prop_assert_eq!(PatchSelection::from_names(&sel.names()), sel);
        }

        #[test]
        fn from_lookup_is_the_first_failure_or_every_value(
            values in prop::collection::vec(prop::option::of(env_value()), ALL_VARS.len()),
            noise in env_value(),
        ) {
            let mut env: HashMap<&str, String> = ALL_VARS
                .iter()
                .zip(&values)
                .filter_map(|(k, v)| v.clone().map(|v| (*k, v)))
                .collect();
            env.insert("STREAM_MANAGER_SOMETHING_ELSE", noise);
            let result = Config::from_lookup(|name| env.get(name).cloned());
            // Model: variables are read in order; blank means unset; the first bad value wins.
            let mut model = Config::default();
            let mut first_error: Option<ConfigError> = None;
            for var in ALL_VARS {
                let Some(raw) = env.get(var).filter(|v| !v.trim().is_empty()) else {
                    continue;
                };
                let step = match var {
                    ENV_QUEUE_TIMEOUT => parse_seconds(var, raw, DurationRule::Positive)
                        .map(|v| model.queue_timeout = v),
                    ENV_HEALTH_CHECK_TIMEOUT => parse_seconds(var, raw, DurationRule::Positive)
                        .map(|v| model.health_check_timeout = v),
                    ENV_HEALTH_CHECK_INTERVAL => parse_seconds(var, raw, DurationRule::Positive)
                        .map(|v| model.health_check_interval = v),
                    ENV_MAX_HEALTH_FAILURES => {
                        parse_failures(var, raw).map(|v| model.max_health_failures = v)
                    }
                    ENV_PROCESS_JOIN_TIMEOUT => parse_seconds(var, raw, DurationRule::Positive)
                        .map(|v| model.process_join_timeout = v),
                    ENV_TERMINATION_GRACE_PERIOD => {
                        parse_seconds(var, raw, DurationRule::NonNegative)
                            .map(|v| model.termination_grace_period = v)
                    }
                    ENV_ADAPTIVE_TIMEOUTS => parse_bool(var, raw).map(|v| model.adaptive_timeouts = v),
                    ENV_SERVER_THREADS => parse_failures(var, raw).map(|v| model.server_threads = v),
                    ENV_PATCHES => parse_patches(var, raw).map(|v| model.patches = v),
                    _ => unreachable!(),
                };
                if let Err(err) = step {
                    first_error = Some(err);
                    break;
                }
            }
            match (result, first_error) {
                (Ok(config), None) => {
                    check_config(&config);
                    prop_assert_eq!(config, model);
                }
                (Err(err), Some(expected)) => {
                    check_error(&err, &expected.variable, &env[expected.variable.as_str()]);
                    prop_assert_eq!(err, expected);
                }
                (got, want) => prop_assert!(false, "from_lookup {got:?}, model {want:?}"),
            }
        }
    }
}
