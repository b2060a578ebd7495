//! The shapes the patched functions' arguments must have.
//!
//! Upstream passes the objects of its own app module: a dict of
//! `ManagedInferencePipeline`s, `multiprocessing` queues and processes. A caller that
//! passes something else (a test double missing a field, `None`, a list) gets a
//! `TypeError` naming the argument and what it should be, at once, instead of an
//! `AttributeError` from deep inside a wait, or a wait that spins until its timeout.
//! The checks are duck-typed (`hasattr`), so test doubles and other generations'
//! look-alikes keep working.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

/// The fields of `ManagedInferencePipeline` that the command path uses.
const MANAGED_FIELDS: [&str; 4] = [
    "pipeline_manager",
    "command_queue",
    "responses_queue",
    "operation_lock",
];

fn has_all(obj: &Bound<'_, PyAny>, names: &[&str]) -> PyResult<bool> {
    for name in names {
        if !obj.hasattr(*name)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_string())
}

/// `processes_table` must be a mapping: `get`, `keys` and `__getitem__`.
///
/// `get` alone is not enough: `multiprocessing.Queue.get(pipeline_id)` reads as
/// `get(block=True)` and would block forever (the randomized call-surface test found it).
pub fn table(processes_table: &Bound<'_, PyAny>) -> PyResult<()> {
    if has_all(processes_table, &["get", "keys", "__getitem__"])? {
        return Ok(());
    }
    Err(PyTypeError::new_err(format!(
        "processes_table must be a mapping of pipeline id to ManagedInferencePipeline, not {}",
        type_name(processes_table)
    )))
}

/// An entry of the table must look like a `ManagedInferencePipeline`.
pub fn managed(managed: &Bound<'_, PyAny>, pipeline_id: &str) -> PyResult<()> {
    let mut missing = Vec::new();
    for field in MANAGED_FIELDS {
        if !managed.hasattr(field)? {
            missing.push(field);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(PyTypeError::new_err(format!(
        "processes_table[{pipeline_id:?}] must be a ManagedInferencePipeline, not {} (missing {})",
        type_name(managed),
        missing.join(", ")
    )))
}

/// `responses_queue` must be a queue: `get` and `put`.
///
/// `get` alone is not enough: a dict's `get(True, timeout)` answers at once, and the
/// wait would spin on those answers until its deadline.
pub fn queue(name: &str, queue: &Bound<'_, PyAny>) -> PyResult<()> {
    if has_all(queue, &["get", "put"])? {
        return Ok(());
    }
    Err(PyTypeError::new_err(format!(
        "{name} must be a multiprocessing.Queue (or another queue with get()), not {}",
        type_name(queue)
    )))
}

/// `pipeline_process` must be a process: it has `is_alive`.
pub fn process(name: &str, process: &Bound<'_, PyAny>) -> PyResult<()> {
    if process.hasattr("is_alive")? {
        return Ok(());
    }
    Err(PyTypeError::new_err(format!(
        "{name} must be a multiprocessing.Process or None, not {}",
        type_name(process)
    )))
}
