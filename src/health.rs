//! The health daemon: native `check_process_health()`.
//!
//! Upstream holds `PROCESSES_TABLE_LOCK` while it waits, without bound, for each
//! pipeline's STATUS answer, so one hung pipeline freezes the manager. Here:
//!
//! * the table lock is held only to copy the table and to delete an entry;
//! * every sweep does the cheap checks (is_alive, RSS from /proc) for every pipeline;
//! * STATUS probes run on pool workers, concurrently, on an adaptive per-pipeline
//!   schedule (`policy`), so a hung pipeline costs the sweep nothing;
//! * failures are counted per pipeline and the pipeline is reaped at the limit;
//! * between sweeps the daemon polls every pipeline's sentinel plus the shutdown pipe,
//!   so a dead process is reaped at once and shutdown stops the loop at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::adaptive::ADAPTIVE;
use crate::command::{CommandPath, Outcome, Purpose};
use crate::gate;
use crate::logging::{self, Channel, Fields, Level};
use crate::metrics::METRICS;
use crate::panics;
use crate::policy::ProbePolicy;
use crate::pool::POOL;
use crate::procfs;
use crate::state::{PIPELINES, SHUTDOWN};
use crate::termination;
use crate::wait;

/// Table-lock bound for the sweep's copy of the table.
const TABLE_LOCK_BOUND: Duration = Duration::from_millis(500);
/// Never sweep more often than this, even if a sentinel keeps firing.
const MIN_SWEEP_GAP: Duration = Duration::from_millis(20);

static PROBE_COUNTER: AtomicU64 = AtomicU64::new(0);

fn probe_request_id() -> String {
    // SAFETY: getpid has no preconditions.
    let pid = unsafe { libc::getpid() };
    format!(
        "health-{pid}-{}",
        PROBE_COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn truthy_attr(obj: &Bound<'_, PyAny>, name: &str) -> bool {
    obj.getattr(name)
        .and_then(|v| v.is_truthy())
        .unwrap_or(false)
}

/// What a sweep saw, for scheduling the next one.
struct SweepResult {
    /// Sentinels of live, probed pipelines: any becoming ready wakes the daemon.
    sentinels: Vec<i32>,
    /// Earliest next probe among them.
    next_probe: Option<Instant>,
}

pub struct HealthDaemon {
    pub path: Arc<CommandPath>,
}

impl HealthDaemon {
    fn policy(&self) -> ProbePolicy {
        ProbePolicy::new(Duration::from_secs_f64(
            self.path.config.health_check_interval,
        ))
    }

    /// The daemon loop; returns when shutdown is requested.
    pub fn run(&self, py: Python<'_>) -> PyResult<()> {
        let base = Duration::from_secs_f64(self.path.config.health_check_interval);
        logging::emit(
            py,
            Channel::Health,
            Level::Info,
            Fields {
                event: "health_daemon_started",
                ..Default::default()
            },
            || {
                format!(
                    "Health daemon started (base interval {:.3} s)",
                    base.as_secs_f64()
                )
            },
        );
        while !SHUTDOWN.is_requested() && gate::is_open() {
            let sweep_started = Instant::now();
            let result = match self.sweep(py) {
                Ok(r) => r,
                Err(err) => {
                    // The daemon must outlive any one bad sweep.
                    let text = err.to_string();
                    logging::emit(
                        py,
                        Channel::Health,
                        Level::Warning,
                        Fields {
                            event: "health_sweep_failed",
                            success: Some(false),
                            error: Some(&text),
                            ..Default::default()
                        },
                        || format!("Health sweep failed: {text}"),
                    );
                    SweepResult {
                        sentinels: Vec::new(),
                        next_probe: None,
                    }
                }
            };
            let now = Instant::now();
            let mut wake = now + base;
            if let Some(next) = result.next_probe {
                wake = wake.min(next);
            }
            wake = wake.max(sweep_started + MIN_SWEEP_GAP);
            let mut fds = result.sentinels;
            if let Some(stop) = SHUTDOWN.wake_fd() {
                fds.push(stop);
            }
            let _ = py.allow_threads(|| wait::poll_fds(&fds, wake));
        }
        logging::emit(
            py,
            Channel::Health,
            Level::Info,
            Fields {
                event: "health_daemon_stopped",
                ..Default::default()
            },
            || "Health daemon stopped".to_string(),
        );
        Ok(())
    }

    fn sweep(&self, py: Python<'_>) -> PyResult<SweepResult> {
        let target = &self.path.target;
        let module = target.module(py);
        let table = target.table(py)?;
        // Copy under the lock, then never touch the lock again while looking at pipelines.
        let (entries, _) = target.with_table_lock(py, TABLE_LOCK_BOUND, || {
            let copy = table.call_method0("copy")?;
            Ok(copy
                .downcast::<PyDict>()
                .map(|d| d.iter().collect::<Vec<_>>())
                .unwrap_or_default())
        })?;
        let max_ram_mb: Option<f64> = module
            .getattr("STREAM_MANAGER_MAX_RAM_MB")
            .ok()
            .and_then(|v| v.extract::<f64>().ok());
        let mut total_ram = procfs::rss_mb(None).unwrap_or(0.0);
        let now = Instant::now();
        let mut out = SweepResult {
            sentinels: Vec::new(),
            next_probe: None,
        };
        let mut live_ids = Vec::with_capacity(entries.len());
        let mut active = 0i64;

        for (key, managed) in entries {
            let id = key.str()?.to_string();
            live_ids.push(id.clone());
            let Ok(process) = managed.getattr("pipeline_manager") else {
                continue;
            };
            let pid: Option<i64> = process.getattr("pid").ok().and_then(|p| p.extract().ok());
            let ram = pid.and_then(|p| procfs::rss_mb(Some(p))).unwrap_or(0.0);
            if let Ok(queue) = managed.getattr("ram_usage_queue") {
                let _ = queue.call_method1("append", (ram,));
            }
            let record = PIPELINES.get(&id).unwrap_or_default();
            if truthy_attr(&managed, "is_terminating")
                || record.terminating
                || record.marked_for_removal
            {
                continue;
            }
            let alive = process
                .call_method0("is_alive")
                .and_then(|a| a.is_truthy())
                .unwrap_or(false);
            if !alive {
                self.submit_reap(&id, &managed, "process is not alive");
                continue;
            }
            active += 1;
            total_ram += ram;
            if let Some(limit) = max_ram_mb {
                if total_ram > limit {
                    logging::emit(
                        py,
                        Channel::Health,
                        Level::Warning,
                        Fields {
                            event: "ram_limit_exceeded",
                            pipeline_id: Some(&id),
                            success: Some(false),
                            error: Some("STREAM_MANAGER_MAX_RAM_MB"),
                            ..Default::default()
                        },
                        || format!("Process for pipeline_id={id} is above RAM limit."),
                    );
                }
            }
            if truthy_attr(&managed, "is_idle") {
                continue;
            }
            if let Some(fd) = process
                .getattr("sentinel")
                .ok()
                .and_then(|s| s.extract::<i32>().ok())
            {
                out.sentinels.push(fd);
            }
            if PIPELINES.claim_probe(&id, now) {
                self.submit_probe(&id, &managed);
            } else if let Some(next) = PIPELINES.get(&id).and_then(|r| r.next_probe) {
                out.next_probe = Some(out.next_probe.map_or(next, |n: Instant| n.min(next)));
            }
        }
        METRICS.active_pipelines.store(active, Ordering::Relaxed);
        METRICS.health_sweeps.fetch_add(1, Ordering::Relaxed);
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        METRICS.last_sweep_unix_ms.store(unix_ms, Ordering::Relaxed);
        // Forget records of pipelines that left the table by other paths.
        for (id, record) in PIPELINES.snapshot() {
            if !record.terminating && !record.probe_in_flight && !live_ids.contains(&id) {
                PIPELINES.remove(&id);
            }
        }
        Ok(out)
    }

    fn submit_reap(&self, id: &str, managed: &Bound<'_, PyAny>, reason: &'static str) {
        if !PIPELINES.begin_termination(id) {
            return;
        }
        let path = Arc::clone(&self.path);
        let id = id.to_string();
        let managed = managed.clone().unbind();
        POOL.submit(move || {
            let reaped = panics::contain(|| {
                gate::with_python(|py| {
                    if let Err(err) =
                        termination::reap_pipeline(py, &path, &id, managed.bind(py), reason)
                    {
                        err.write_unraisable(py, None);
                    }
                })
            });
            if let Err(message) = reaped {
                // Abandoned half-way: let the next sweep try again rather than leave the
                // pipeline marked as terminating, unprobed and unreaped, forever.
                PIPELINES.set_terminating(&id, false);
                report_worker_panic("reap", &id, &message);
            }
        });
    }

    fn submit_probe(&self, id: &str, managed: &Bound<'_, PyAny>) {
        let path = Arc::clone(&self.path);
        let policy = self.policy();
        let id = id.to_string();
        let managed = managed.clone().unbind();
        POOL.submit(move || {
            let finished = panics::contain(|| gate::with_python(|py| {
                let outcome = probe(py, &path, &id, managed.bind(py));
                let next = match outcome {
                    Ok(ProbeVerdict::Healthy) => {
                        PIPELINES.record_check(&id, true);
                        let n = PIPELINES.get(&id).map_or(1, |r| r.successes);
                        policy.after_success(n)
                    }
                    Ok(ProbeVerdict::Failed(reason)) => {
                        METRICS.health_check_failures.fetch_add(1, Ordering::Relaxed);
                        let failures = PIPELINES.record_check(&id, false);
                        logging::emit(
                            py,
                            Channel::Health,
                            Level::Warning,
                            Fields {
                                event: "health_check_failed",
                                pipeline_id: Some(&id),
                                success: Some(false),
                                error: Some(reason),
                                ..Default::default()
                            },
                            || {
                                format!(
                                    "Health check of pipeline_id={id} failed ({reason}), {failures}/{} consecutive",
                                    path.config.max_health_failures
                                )
                            },
                        );
                        if failures >= path.config.max_health_failures {
                            if PIPELINES.begin_termination(&id) {
                                let reason = format!("{failures} consecutive failed health checks");
                                if let Err(err) =
                                    termination::reap_pipeline(py, &path, &id, managed.bind(py), &reason)
                                {
                                    err.write_unraisable(py, None);
                                }
                            }
                            return;
                        }
                        policy.after_failure(failures)
                    }
                    Ok(ProbeVerdict::Dead) => {
                        if PIPELINES.begin_termination(&id) {
                            if let Err(err) = termination::reap_pipeline(
                                py,
                                &path,
                                &id,
                                managed.bind(py),
                                "process died during a health check",
                            ) {
                                err.write_unraisable(py, None);
                            }
                        }
                        return;
                    }
                    Ok(ProbeVerdict::Depleted(updates)) => {
                        PIPELINES.record_check(&id, true);
                        if PIPELINES.begin_termination(&id) {
                            if let Err(err) = terminate_depleted(py, &path, &id, managed.bind(py), updates) {
                                err.write_unraisable(py, None);
                            }
                        }
                        return;
                    }
                    Ok(ProbeVerdict::Skipped) => policy.base,
                    Err(err) => {
                        err.write_unraisable(py, None);
                        policy.base
                    }
                };
                PIPELINES.finish_probe(&id, Instant::now() + next);
            }));
            match finished {
                Ok(Some(())) => {}
                // The interpreter is exiting: nothing will probe again anyway.
                Ok(None) => PIPELINES.finish_probe(&id, Instant::now()),
                Err(message) => {
                    // A probe that is never marked finished is never run again.
                    PIPELINES.finish_probe(&id, Instant::now() + policy.base);
                    report_worker_panic("probe", &id, &message);
                }
            }
        });
    }
}

/// Log a panic caught on a worker thread (the default panic hook has already printed
/// its location to stderr).
fn report_worker_panic(work: &str, id: &str, message: &str) {
    gate::with_python(|py| {
        logging::emit(
            py,
            Channel::Health,
            Level::Error,
            Fields {
                event: "worker_panic",
                pipeline_id: Some(id),
                success: Some(false),
                error: Some(message),
                ..Default::default()
            },
            || format!("Internal error in the {work} of pipeline_id={id}: {message}; recovered"),
        );
    });
}

enum ProbeVerdict {
    Healthy,
    Failed(&'static str),
    Dead,
    /// All sources ENDED/ERROR: the pipeline's last inference-pipeline event, if any.
    Depleted(Option<Py<PyAny>>),
    /// Not a verdict on the pipeline (busy with a client's command, being removed).
    Skipped,
}

fn probe(
    py: Python<'_>,
    path: &CommandPath,
    id: &str,
    managed: &Bound<'_, PyAny>,
) -> PyResult<ProbeVerdict> {
    let started = Instant::now();
    let module = path.target.module(py);
    let command = PyDict::new(py);
    command.set_item("type", module.getattr("CommandType")?.getattr("STATUS")?)?;
    command.set_item("pipeline_id", id)?;
    let table = PyDict::new(py);
    table.set_item(id, managed)?;
    let timeout = path.health_timeout();
    let request_id = probe_request_id().into_pyobject(py)?.into_any();
    let key = id.into_pyobject(py)?.into_any();
    let (answer, outcome) = path.handle_command(
        py,
        table.as_any(),
        &request_id,
        &key,
        command.as_any(),
        timeout,
        Purpose::HealthCheck,
    )?;
    let elapsed = started.elapsed();
    METRICS.health_check_duration.observe(elapsed);
    METRICS.health_checks.fetch_add(1, Ordering::Relaxed);
    match outcome {
        Outcome::Answered => ADAPTIVE.health_check.record(elapsed),
        Outcome::Timeout => ADAPTIVE.health_check.record(timeout),
        _ => {}
    }
    let verdict = match outcome {
        Outcome::Answered => match depletion(py, module, answer.bind(py))? {
            Some(last_event) => ProbeVerdict::Depleted(last_event),
            None => ProbeVerdict::Healthy,
        },
        Outcome::Timeout => {
            ProbeVerdict::Failed("no answer within STREAM_MANAGER_HEALTH_CHECK_TIMEOUT")
        }
        Outcome::QueueClosed => ProbeVerdict::Failed("queues closed"),
        Outcome::NotRunning => ProbeVerdict::Dead,
        _ => ProbeVerdict::Skipped,
    };
    logging::emit(
        py,
        Channel::Health,
        Level::Debug,
        Fields {
            event: "health_check",
            pipeline_id: Some(id),
            command_type: Some("status"),
            duration_ms: Some(started.elapsed().as_secs_f64() * 1e3),
            success: Some(matches!(
                verdict,
                ProbeVerdict::Healthy | ProbeVerdict::Depleted(_)
            )),
            error: (outcome != Outcome::Answered).then(|| outcome.name()),
        },
        || format!("Health check of pipeline_id={id}: {}", outcome.name()),
    );
    Ok(verdict)
}

/// Upstream's depletion rule: every source that reports a state is ENDED or ERROR (and
/// at least one does). Returns `Some(last inference_pipeline status update or None)`.
fn depletion(
    py: Python<'_>,
    module: &Bound<'_, PyAny>,
    answer: &Bound<'_, PyAny>,
) -> PyResult<Option<Option<Py<PyAny>>>> {
    let Ok(answer) = answer.downcast::<PyDict>() else {
        return Ok(None);
    };
    let Some(report) = answer.get_item("report")? else {
        return Ok(None);
    };
    let Ok(report) = report.downcast::<PyDict>() else {
        return Ok(None);
    };
    let Some(sources) = report.get_item("sources_metadata")? else {
        return Ok(None);
    };
    let stream_state = module.getattr("StreamState")?;
    let ended = stream_state.getattr("ENDED")?;
    let error = stream_state.getattr("ERROR")?;
    let mut any_state = false;
    for source in sources.try_iter()? {
        let source = source?;
        let Ok(source) = source.downcast::<PyDict>() else {
            continue;
        };
        let Some(state) = source.get_item("state")? else {
            continue;
        };
        any_state = true;
        if !(state.eq(&ended)? || state.eq(&error)?) {
            return Ok(None);
        }
    }
    if !any_state {
        return Ok(None);
    }
    let mut last = None;
    if let Some(updates) = report.get_item("video_source_status_updates")? {
        for update in updates.try_iter()? {
            let update = update?;
            let is_pipeline = update
                .get_item("context")
                .and_then(|c| c.eq("inference_pipeline"))
                .unwrap_or(false);
            if is_pipeline {
                last = Some(update.unbind());
            }
        }
    }
    let _ = py;
    Ok(Some(last))
}

/// Upstream's depletion path, off the sweep: if the inference thread already finished,
/// stop the process directly; else send TERMINATE and join (bounded). Without any
/// inference-pipeline status update upstream leaves the pipeline alone, and so do we.
fn terminate_depleted(
    py: Python<'_>,
    path: &CommandPath,
    id: &str,
    managed: &Bound<'_, PyAny>,
    last_update: Option<Py<PyAny>>,
) -> PyResult<()> {
    let Some(last_update) = last_update else {
        PIPELINES.set_terminating(id, false);
        PIPELINES.finish_probe(
            id,
            Instant::now() + Duration::from_secs_f64(path.config.health_check_interval),
        );
        return Ok(());
    };
    logging::emit(
        py,
        Channel::Health,
        Level::Info,
        Fields {
            event: "pipeline_depleted",
            pipeline_id: Some(id),
            ..Default::default()
        },
        || format!("All sources depleted in pipeline {id}, terminating"),
    );
    let module = path.target.module(py);
    let finished_event = module.getattr("INFERENCE_THREAD_FINISHED_EVENT")?;
    let event_type = last_update.bind(py).get_item("event_type").ok();
    let thread_finished = match event_type {
        Some(e) => e.eq(&finished_event)?,
        None => false,
    };
    if thread_finished {
        return termination::reap_pipeline(
            py,
            path,
            id,
            managed,
            "sources depleted, inference thread finished",
        );
    }
    let command = PyDict::new(py);
    command.set_item("type", module.getattr("CommandType")?.getattr("TERMINATE")?)?;
    command.set_item("pipeline_id", id)?;
    let table = PyDict::new(py);
    table.set_item(id, managed)?;
    let request_id = probe_request_id().into_pyobject(py)?.into_any();
    let key = id.into_pyobject(py)?.into_any();
    let (answer, _) = path.handle_command(
        py,
        table.as_any(),
        &request_id,
        &key,
        command.as_any(),
        path.command_timeout(),
        Purpose::Command,
    )?;
    let ok = answer
        .bind(py)
        .get_item("status")
        .and_then(|s| s.eq("success"))
        .unwrap_or(false);
    if !ok {
        logging::emit(
            py,
            Channel::Health,
            Level::Error,
            Fields {
                event: "depleted_terminate_failed",
                pipeline_id: Some(id),
                success: Some(false),
                error: Some("malformed or failed TERMINATE answer"),
                ..Default::default()
            },
            || {
                format!(
                    "Malformed response returned by termination command, '{}'",
                    answer.bind(py)
                )
            },
        );
    }
    if ok {
        // It agreed to stop: a bounded join (terminate, then kill, past the join timeout).
        let table = path.target.table(py)?;
        return termination::join_inference_pipeline(py, path, &table, &key);
    }
    // It is depleted either way; end it rather than probe it forever.
    termination::reap_pipeline(py, path, id, managed, "depleted pipeline refused TERMINATE")
}
