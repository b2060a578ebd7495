//! Ending pipeline processes: the SIGTERM/SIGINT handler (`execute_termination`), the
//! bounded `join_inference_pipeline`, and the reap used by the health daemon.
//!
//! Every wait here is on process sentinels through poll(2), with the GIL released, so
//! N processes cost one wait, not N, and a wait ends the moment the last one exits.
//! Upstream's handler sends SIGTERM and joins pipelines one by one with no bound (and
//! in 0.54–1.5 crashes before doing so); the pure-Python patches always sleep the full
//! grace period.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::command::CommandPath;
use crate::logging::{self, Channel, Fields, Level};
use crate::metrics::METRICS;
use crate::state::{PIPELINES, SHUTDOWN};
use crate::target::remove_if_same;
use crate::validate;
use crate::wait;

/// How long the health daemon's reap waits after SIGTERM before SIGKILL.
const REAP_TERM_GRACE: Duration = Duration::from_secs(1);
/// How long to wait for a SIGKILLed process to disappear (it cannot refuse).
const KILL_WAIT: Duration = Duration::from_secs(2);
/// Table-lock bound for the short critical sections here.
const TABLE_LOCK_BOUND: Duration = Duration::from_secs(1);

/// Guards against a second signal re-entering the handler while it runs.
static TERMINATION_RUNNING: AtomicBool = AtomicBool::new(false);

fn sentinel(process: &Bound<'_, PyAny>) -> Option<i32> {
    process
        .getattr("sentinel")
        .ok()
        .and_then(|s| s.extract::<i32>().ok())
}

fn is_alive(process: &Bound<'_, PyAny>) -> bool {
    process
        .call_method0("is_alive")
        .and_then(|a| a.is_truthy())
        .unwrap_or(false)
}

/// Wait (GIL released) until every process in `processes` has exited or `timeout`
/// passes; returns the indices of those still running. Processes without a usable
/// sentinel (never started, already closed) count as exited.
pub fn wait_for_exits(
    py: Python<'_>,
    processes: &[Bound<'_, PyAny>],
    timeout: Duration,
) -> Vec<usize> {
    let mut indices = Vec::new();
    let mut fds = Vec::new();
    for (i, p) in processes.iter().enumerate() {
        if let Some(fd) = sentinel(p) {
            indices.push(i);
            fds.push(fd);
        }
    }
    let deadline = Instant::now() + timeout;
    let pending = py.allow_threads(|| wait::wait_all(&fds, None, deadline));
    pending.into_iter().map(|slot| indices[slot]).collect()
}

/// Best-effort reap of an exited child so it does not linger as a zombie.
fn reap(process: &Bound<'_, PyAny>) {
    let _ = process.call_method1("join", (0.1,));
}

/// SIGTERM, wait up to `grace`, SIGKILL, wait, reap. Returns true if the process is gone.
pub fn stop_process(py: Python<'_>, process: &Bound<'_, PyAny>, grace: Duration) -> bool {
    if is_alive(process) {
        let _ = process.call_method0("terminate");
        let still = wait_for_exits(py, std::slice::from_ref(process), grace);
        if !still.is_empty() && is_alive(process) {
            let _ = process.call_method0("kill");
            wait_for_exits(py, std::slice::from_ref(process), KILL_WAIT);
        }
    }
    reap(process);
    !is_alive(process)
}

/// Stop the queues' feeder threads from blocking interpreter exit on a pipe nobody
/// reads any more, then close them.
fn close_queues(managed: &Bound<'_, PyAny>) {
    for name in ["command_queue", "responses_queue"] {
        if let Ok(queue) = managed.getattr(name) {
            let _ = queue.call_method0("cancel_join_thread");
            let _ = queue.call_method0("close");
        }
    }
}

fn cancel_feeder(managed: &Bound<'_, PyAny>) {
    if let Ok(queue) = managed.getattr("command_queue") {
        let _ = queue.call_method0("cancel_join_thread");
    }
}

/// Terminate (then kill) a pipeline found faulty, reap it and remove it from the table.
/// New commands are refused from the first step on.
pub fn reap_pipeline(
    py: Python<'_>,
    path: &CommandPath,
    pipeline_id: &str,
    managed: &Bound<'_, PyAny>,
    reason: &str,
) -> PyResult<()> {
    let started = Instant::now();
    PIPELINES.mark_for_removal(pipeline_id);
    PIPELINES.set_terminating(pipeline_id, true);
    let process = managed.getattr("pipeline_manager")?;
    let grace = REAP_TERM_GRACE.min(Duration::from_secs_f64(
        path.config.termination_grace_period,
    ));
    let gone = stop_process(py, &process, grace);
    cancel_feeder(managed);
    let table = path.target.table(py)?;
    let key = pipeline_id.into_pyobject(py)?.into_any();
    let (removed, _) = path.target.with_table_lock(py, TABLE_LOCK_BOUND, || {
        remove_if_same(&table, &key, managed)
    })?;
    PIPELINES.remove(pipeline_id);
    METRICS.pipelines_reaped.fetch_add(1, Ordering::Relaxed);
    logging::emit(
        py,
        Channel::Health,
        Level::Error,
        Fields {
            event: "pipeline_reaped",
            pipeline_id: Some(pipeline_id),
            duration_ms: Some(started.elapsed().as_secs_f64() * 1e3),
            success: Some(gone),
            error: Some(reason),
            ..Default::default()
        },
        || {
            format!(
                "Reaped pipeline_id={pipeline_id} ({reason}); process gone: {gone}, removed from table: {removed}"
            )
        },
    );
    Ok(())
}

/// Native `join_inference_pipeline(processes_table, pipeline_id)`: wait for the process
/// up to `STREAM_MANAGER_PROCESS_JOIN_TIMEOUT`, then terminate, then kill; reap it and
/// remove it from the table. A pipeline already gone from the table is not an error.
pub fn join_inference_pipeline(
    py: Python<'_>,
    path: &CommandPath,
    processes_table: &Bound<'_, PyAny>,
    pipeline_id: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let started = Instant::now();
    let id_text = pipeline_id.str()?.to_string();
    validate::table(processes_table)?;
    let managed = processes_table.call_method1("get", (pipeline_id,))?;
    if managed.is_none() {
        logging::emit(
            py,
            Channel::Termination,
            Level::Warning,
            Fields {
                event: "join_missing",
                pipeline_id: Some(&id_text),
                success: Some(false),
                error: Some("not in table"),
                ..Default::default()
            },
            || format!("Pipeline {id_text} already removed from processes table."),
        );
        return Ok(());
    }
    validate::managed(&managed, &id_text)?;
    let process = managed.getattr("pipeline_manager")?;
    let join_timeout = Duration::from_secs_f64(path.config.process_join_timeout);
    let exited_in_time =
        wait_for_exits(py, std::slice::from_ref(&process), join_timeout).is_empty();
    let gone = if exited_in_time {
        reap(&process);
        true
    } else {
        let grace = Duration::from_secs_f64(path.config.termination_grace_period).min(KILL_WAIT);
        stop_process(py, &process, grace)
    };
    cancel_feeder(&managed);
    remove_if_same(processes_table, pipeline_id, &managed)?;
    PIPELINES.remove(&id_text);
    logging::emit(
        py,
        Channel::Termination,
        if exited_in_time {
            Level::Debug
        } else {
            Level::Warning
        },
        Fields {
            event: "pipeline_joined",
            pipeline_id: Some(&id_text),
            duration_ms: Some(started.elapsed().as_secs_f64() * 1e3),
            success: Some(gone && exited_in_time),
            error: (!exited_in_time).then_some("join timeout; terminated"),
            ..Default::default()
        },
        || {
            format!(
                "Joined pipeline_id={id_text} in {:.1} ms (exited by itself: {exited_in_time}, gone: {gone})",
                started.elapsed().as_secs_f64() * 1e3
            )
        },
    );
    Ok(())
}

fn phase(py: Python<'_>, event: &str, started: Instant, message: String) {
    logging::emit(
        py,
        Channel::Termination,
        Level::Info,
        Fields {
            event,
            duration_ms: Some(started.elapsed().as_secs_f64() * 1e3),
            success: Some(true),
            ..Default::default()
        },
        || message,
    );
}

/// Native `execute_termination(signal_number, frame, processes_table)`.
///
/// 1. request shutdown (daemons stop, waits in flight end) and mark every pipeline for
///    removal, so no new command reaches it;
/// 2. SIGTERM all at once; wait up to the grace period, returning as soon as all exited;
/// 3. SIGKILL survivors, bounded joins, close queues, empty the table;
///
/// then `sys.exit(0)` through the target module's own `sys`. Safe from a signal handler:
/// the table lock is taken with a bound (the interrupted main thread may hold it).
pub fn execute_termination(
    py: Python<'_>,
    path: &CommandPath,
    signal_number: &Bound<'_, PyAny>,
    processes_table: &Bound<'_, PyAny>,
) -> PyResult<()> {
    // A wrong table is the caller's wiring bug: say so before touching anything.
    validate::table(processes_table)?;
    if TERMINATION_RUNNING.swap(true, Ordering::AcqRel) {
        // A second signal while we are already terminating: the first run finishes.
        return Ok(());
    }
    let result = terminate_all(py, path, signal_number, processes_table);
    TERMINATION_RUNNING.store(false, Ordering::Release);
    result?;
    let sys = path
        .target
        .module(py)
        .getattr("sys")
        .or_else(|_| py.import("sys").map(Bound::into_any))?;
    sys.call_method1("exit", (0,))?;
    Ok(())
}

fn terminate_all(
    py: Python<'_>,
    path: &CommandPath,
    signal_number: &Bound<'_, PyAny>,
    processes_table: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let started = Instant::now();
    SHUTDOWN.request();

    // Phase 1: snapshot and mark, under the table lock if we can get it quickly.
    let (entries, _) = path.target.with_table_lock(py, TABLE_LOCK_BOUND, || {
        let copy = processes_table.call_method0("copy")?;
        let items: Vec<(Bound<'_, PyAny>, Bound<'_, PyAny>)> = copy
            .downcast::<PyDict>()
            .map(|d| d.iter().collect())
            .unwrap_or_default();
        Ok(items)
    })?;
    let mut ids = Vec::with_capacity(entries.len());
    let mut processes = Vec::with_capacity(entries.len());
    for (key, managed) in &entries {
        let id = key.str()?.to_string();
        PIPELINES.mark_for_removal(&id);
        PIPELINES.set_terminating(&id, true);
        if let Ok(process) = managed.getattr("pipeline_manager") {
            processes.push(process);
        }
        ids.push(id);
    }
    phase(
        py,
        "termination_marked",
        started,
        format!(
            "Termination (signal {}): {} pipeline(s) marked for removal",
            signal_number
                .str()
                .map(|s| s.to_string())
                .unwrap_or_default(),
            ids.len()
        ),
    );

    // Phase 2: SIGTERM everyone at once, then one wait for all of them.
    for process in &processes {
        if is_alive(process) {
            let _ = process.call_method0("terminate");
        }
    }
    let grace = Duration::from_secs_f64(path.config.termination_grace_period);
    let survivors = wait_for_exits(py, &processes, grace);
    phase(
        py,
        "termination_sigterm",
        started,
        format!(
            "SIGTERM sent to {} process(es); {} still running after the wait",
            processes.len(),
            survivors.len()
        ),
    );

    // Phase 3: SIGKILL survivors, bounded joins, queues closed, table emptied.
    for &i in &survivors {
        let _ = processes[i].call_method0("kill");
    }
    let join_timeout = Duration::from_secs_f64(path.config.process_join_timeout);
    let unkillable = if survivors.is_empty() {
        Vec::new()
    } else {
        let killed: Vec<Bound<'_, PyAny>> =
            survivors.iter().map(|&i| processes[i].clone()).collect();
        wait_for_exits(py, &killed, join_timeout)
    };
    for process in &processes {
        reap(process);
    }
    for (_, managed) in &entries {
        close_queues(managed);
    }
    path.target.with_table_lock(py, TABLE_LOCK_BOUND, || {
        processes_table.call_method0("clear").map(|_| ())
    })?;
    PIPELINES.clear();
    METRICS.active_pipelines.store(0, Ordering::Relaxed);
    logging::emit(
        py,
        Channel::Termination,
        if unkillable.is_empty() {
            Level::Info
        } else {
            Level::Error
        },
        Fields {
            event: "termination_completed",
            duration_ms: Some(started.elapsed().as_secs_f64() * 1e3),
            success: Some(unkillable.is_empty()),
            error: (!unkillable.is_empty()).then_some("processes survived SIGKILL"),
            ..Default::default()
        },
        || {
            format!(
                "Termination handler completed in {:.1} ms: {} terminated, {} killed, {} unkillable",
                started.elapsed().as_secs_f64() * 1e3,
                processes.len() - survivors.len(),
                survivors.len() - unkillable.len(),
                unkillable.len()
            )
        },
    );
    Ok(())
}
