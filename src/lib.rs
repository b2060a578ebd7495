//! stream-manager-patches: native, bounded replacements for the Roboflow Inference
//! stream manager's fragile functions, exposed to Python as
//! `stream_manager_patches._native`.
//!
//! One module per concern:
//! * `config`   – environment parsing and validation (pure Rust);
//! * `state`    – per-pipeline records and the shutdown signal;
//! * `wait`     – poll(2) on queue, sentinel and shutdown fds (pure Rust);
//! * `target`   – the bound upstream `app` module and its error helpers;
//! * `command`  – `handle_command` / `get_response_ignoring_thrash`;
//! * `logging`  – structured records through Python `logging`;
//! * `bindings` – the Python-facing classes and functions.

pub mod bindings;
pub mod command;
pub mod config;
pub mod logging;
pub mod state;
pub mod target;
pub mod wait;

use pyo3::prelude::*;

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    bindings::register(m)
}
