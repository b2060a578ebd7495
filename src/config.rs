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

/// The rule a duration must satisfy.
#[derive(Clone, Copy, Debug)]
pub enum DurationRule {
    Positive,
    NonNegative,
}

impl DurationRule {
    fn describe(self) -> &'static str {
        match self {
            DurationRule::Positive => "must be a finite number of seconds > 0",
            DurationRule::NonNegative => "must be a finite number of seconds >= 0",
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
