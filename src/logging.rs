//! Structured log records through Python's `logging`.
//!
//! We call `logging` directly rather than through `pyo3-log`: pyo3-log forwards the Rust
//! `log` crate's records, which carry no `extra` fields, and the design asks every record
//! to carry `event`, `pipeline_id`, `command_type`, `duration_ms`, `success`, `error` as
//! attributes that handlers and JSON formatters can read. The disabled path is one
//! `isEnabledFor` call; the message and the `extra` dict are built only when enabled.

use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::PyDict;

/// Python logging levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug = 10,
    Info = 20,
    Warning = 30,
    Error = 40,
}

/// Logger channels, one per concern, all under `stream_manager_patches`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Channel {
    Command,
    Health,
    Termination,
}

impl Channel {
    pub fn logger_name(self) -> &'static str {
        match self {
            Channel::Command => "stream_manager_patches.command",
            Channel::Health => "stream_manager_patches.health",
            Channel::Termination => "stream_manager_patches.termination",
        }
    }

    fn cell(self) -> &'static GILOnceCell<Py<PyAny>> {
        static COMMAND: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
        static HEALTH: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
        static TERMINATION: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
        match self {
            Channel::Command => &COMMAND,
            Channel::Health => &HEALTH,
            Channel::Termination => &TERMINATION,
        }
    }

    fn logger<'py>(self, py: Python<'py>) -> PyResult<&'py Bound<'py, PyAny>> {
        let logger = self.cell().get_or_try_init(py, || {
            py.import("logging")?
                .call_method1("getLogger", (self.logger_name(),))
                .map(Bound::unbind)
        })?;
        Ok(logger.bind(py))
    }
}

/// The structured fields of one record.
#[derive(Clone, Debug, Default)]
pub struct Fields<'a> {
    pub event: &'a str,
    pub pipeline_id: Option<&'a str>,
    pub command_type: Option<&'a str>,
    pub duration_ms: Option<f64>,
    pub success: Option<bool>,
    pub error: Option<&'a str>,
}

/// True when a record at `level` on `channel` would be handled.
pub fn enabled(py: Python<'_>, channel: Channel, level: Level) -> bool {
    channel
        .logger(py)
        .and_then(|l| l.call_method1("isEnabledFor", (level as i32,)))
        .and_then(|r| r.is_truthy())
        .unwrap_or(false)
}

/// Emit one record. `message` is only evaluated when the level is enabled. Logging must
/// never break the operation it describes, so failures inside `logging` are swallowed
/// (after being reported by Python's own unraisable hook).
pub fn emit<'a>(
    py: Python<'_>,
    channel: Channel,
    level: Level,
    fields: Fields<'a>,
    message: impl FnOnce() -> String,
) {
    if !enabled(py, channel, level) {
        return;
    }
    let result = (|| -> PyResult<()> {
        let logger = channel.logger(py)?;
        let extra = PyDict::new(py);
        extra.set_item("event", fields.event)?;
        extra.set_item("pipeline_id", fields.pipeline_id)?;
        extra.set_item("command_type", fields.command_type)?;
        extra.set_item("duration_ms", fields.duration_ms)?;
        extra.set_item("success", fields.success)?;
        extra.set_item("error", fields.error)?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("extra", extra)?;
        logger.call_method("log", (level as i32, message()), Some(&kwargs))?;
        Ok(())
    })();
    if let Err(err) = result {
        err.write_unraisable(py, None);
    }
}
