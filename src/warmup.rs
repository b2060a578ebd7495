//! The warm-up pool: native `ensure_idle_pipelines_warmed_up(expected_warmed_up_pipelines)`.
//!
//! Keeps `expected` idle pipelines spawned, like upstream, but: pipelines marked for
//! removal or being terminated do not count as idle; the target's
//! `STREAM_MANAGER_MAX_ACTIVE_PIPELINES` (inference-core 1.6+) is respected; the table
//! lock is taken with a bound; and the loop ends as soon as shutdown is requested instead
//! of sleeping 5 s at a time forever.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::command::CommandPath;
use crate::gate;
use crate::logging::{self, Channel, Fields, Level};
use crate::state::{PIPELINES, SHUTDOWN};
use crate::wait;

/// Upstream's period between warm-up checks.
pub const WARMUP_PERIOD: Duration = Duration::from_secs(5);
const TABLE_LOCK_BOUND: Duration = Duration::from_secs(1);

pub struct WarmUp {
    pub path: Arc<CommandPath>,
    /// streamvision's pipeline host descriptor, forwarded to its spawn function.
    pub host_descriptor: Option<Py<PyAny>>,
}

/// What one check decided.
#[derive(Debug, PartialEq, Eq)]
pub enum WarmUpDecision {
    Enough,
    AtActiveLimit,
    Spawn,
}

/// Pure rule: spawn when short of idle pipelines and below the active limit (if any).
pub fn decide(idle: usize, total: usize, expected: usize, limit: Option<usize>) -> WarmUpDecision {
    if idle >= expected {
        WarmUpDecision::Enough
    } else if limit.is_some_and(|l| total >= l) {
        WarmUpDecision::AtActiveLimit
    } else {
        WarmUpDecision::Spawn
    }
}

impl WarmUp {
    /// One check; spawns at most one pipeline. Holds the table lock (bounded) across the
    /// spawn, as upstream does, so the active-pipeline limit cannot be overshot by a
    /// concurrent `get_or_spawn_pipeline_process`.
    pub fn check_once(&self, py: Python<'_>, expected: usize) -> PyResult<WarmUpDecision> {
        let target = &self.path.target;
        let module = target.module(py);
        let limit: Option<usize> = module
            .getattr("STREAM_MANAGER_MAX_ACTIVE_PIPELINES")
            .ok()
            .and_then(|v| v.extract::<usize>().ok());
        let table = target.table(py)?;
        let (decision, _) = target.with_table_lock(py, TABLE_LOCK_BOUND, || {
            let copy = table.call_method0("copy")?;
            let mut idle = 0usize;
            let mut total = 0usize;
            if let Ok(copy) = copy.downcast::<PyDict>() {
                for (key, managed) in copy.iter() {
                    let id = key.str()?.to_string();
                    let leaving = PIPELINES
                        .get(&id)
                        .is_some_and(|r| r.marked_for_removal || r.terminating)
                        || managed
                            .getattr("is_terminating")
                            .and_then(|v| v.is_truthy())
                            .unwrap_or(false);
                    if leaving {
                        continue;
                    }
                    total += 1;
                    if managed
                        .getattr("is_idle")
                        .and_then(|v| v.is_truthy())
                        .unwrap_or(false)
                    {
                        idle += 1;
                    }
                }
            }
            let decision = decide(idle, total, expected, limit);
            if decision == WarmUpDecision::Spawn && !SHUTDOWN.is_requested() {
                let kwargs = PyDict::new(py);
                kwargs.set_item("processes_table", &table)?;
                if let Some(descriptor) = &self.host_descriptor {
                    kwargs.set_item("host_descriptor", descriptor.bind(py))?;
                }
                module
                    .getattr("spawn_managed_pipeline_process")?
                    .call((), Some(&kwargs))?;
            }
            Ok(decision)
        })?;
        Ok(decision)
    }

    pub fn run(&self, py: Python<'_>, expected: usize) -> PyResult<()> {
        while !SHUTDOWN.is_requested() && gate::is_open() {
            let decision = match self.check_once(py, expected) {
                Ok(d) => d,
                Err(err) => {
                    let text = err.to_string();
                    logging::emit(
                        py,
                        Channel::Health,
                        Level::Warning,
                        Fields {
                            event: "warmup_failed",
                            success: Some(false),
                            error: Some(&text),
                            ..Default::default()
                        },
                        || format!("Warm-up check failed: {text}"),
                    );
                    WarmUpDecision::Enough
                }
            };
            // Still short: check again soon (one spawn per pass keeps lock holds short).
            let pause = if decision == WarmUpDecision::Spawn {
                Duration::from_millis(50)
            } else {
                WARMUP_PERIOD
            };
            let deadline = Instant::now() + pause;
            let fds: Vec<i32> = SHUTDOWN.wake_fd().into_iter().collect();
            let _ = py.allow_threads(|| wait::poll_fds(&fds, deadline));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spawns_only_when_short_and_below_the_limit() {
        assert_eq!(decide(1, 3, 1, None), WarmUpDecision::Enough);
        assert_eq!(decide(0, 3, 1, None), WarmUpDecision::Spawn);
        assert_eq!(decide(0, 2, 1, Some(2)), WarmUpDecision::AtActiveLimit);
        assert_eq!(decide(0, 1, 1, Some(2)), WarmUpDecision::Spawn);
        assert_eq!(decide(0, 0, 0, Some(0)), WarmUpDecision::Enough);
    }
}
