//! stream-manager-patches: native, bounded replacements for the Roboflow Inference
//! stream manager's fragile functions, exposed to Python as
//! `stream_manager_patches._native`.
//!
//! One module per concern:
//! * `config`   – environment parsing and validation (pure Rust);
//! * `state`    – per-pipeline records and the shutdown signal;
//! * `wait`     – poll(2) on queue, sentinel and shutdown fds (pure Rust);
//! * `frame`    – one queue item read natively: the queue's lock and `Connection` framing (pure Rust);
//! * `target`   – the bound upstream `app` module and its error helpers;
//! * `validate` – the shapes upstream's arguments must have (clear `TypeError`s);
//! * `command`  – `handle_command` / `get_response_ignoring_thrash`;
//! * `health`   – the health daemon (`check_process_health`);
//! * `policy`   – adaptive probe intervals (pure Rust);
//! * `pool`     – native worker threads for probes and reaps;
//! * `gate`     – when native threads may call into Python (shutdown, fork);
//! * `procfs`   – RSS from /proc;
//! * `termination` – `execute_termination`, `join_inference_pipeline`, reaps;
//! * `warmup`   – `ensure_idle_pipelines_warmed_up`;
//! * `metrics`  – counters and histograms, Prometheus text;
//! * `adaptive` – opt-in adaptive timeouts;
//! * `logging`  – structured records through Python `logging`;
//! * `panics`   – panics become Python `RuntimeError`s, never `PanicException`s;
//! * `bindings` – the Python-facing classes and functions.

pub mod adaptive;
pub mod bindings;
pub mod command;
pub mod config;
pub mod frame;
pub mod gate;
pub mod health;
pub mod logging;
pub mod metrics;
pub mod panics;
pub mod policy;
pub mod pool;
pub mod procfs;
pub mod state;
pub mod target;
pub mod termination;
pub mod validate;
pub mod wait;
pub mod warmup;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    // Before any native thread can exist: see `state` on fork().
    state::install_fork_handlers();
    bindings::register(m)
}
