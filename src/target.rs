//! The upstream `app` module we are bound to, and the error answers built with its helpers.
//!
//! Clients (`StreamManagerClient`) dispatch on the exact dicts produced by the module's own
//! `describe_error(...)` with its own `ErrorType` members, so we never build error dicts
//! ourselves: we call those helpers, looked up on the module at call time so that a test
//! (or a newer release) that swaps them is honoured.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// The error types we answer with (names of upstream `ErrorType` members).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    OperationError,
    InternalError,
}

impl ErrorKind {
    pub fn member(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::OperationError => "OPERATION_ERROR",
            ErrorKind::InternalError => "INTERNAL_ERROR",
        }
    }
}

/// Remove `table[key]` only if it is still `managed` (not a newer pipeline that reused
/// the id, nor already removed). Returns whether it removed anything.
pub fn remove_if_same(
    table: &Bound<'_, PyAny>,
    key: &Bound<'_, PyAny>,
    managed: &Bound<'_, PyAny>,
) -> PyResult<bool> {
    let current = table.call_method1("get", (key,))?;
    if current.is(managed) {
        table.del_item(key)?;
        Ok(true)
    } else {
        Ok(false)
    }
}

/// A validated handle on the target module.
pub struct Target {
    module: Py<PyAny>,
    name: String,
}

impl Target {
    /// Check that `module` offers what the patches call back into, so that a wrong
    /// target fails at install time with a clear message, not at the first command.
    pub fn bind(module: &Bound<'_, PyAny>) -> PyResult<Target> {
        let name = module
            .getattr("__name__")
            .and_then(|n| n.extract::<String>())
            .unwrap_or_else(|_| "<unnamed>".to_string());
        let describe = module.getattr("describe_error").map_err(|_| {
            PyTypeError::new_err(format!(
                "target module {name} has no describe_error(); is it the stream manager's app module?"
            ))
        })?;
        if !describe.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "{name}.describe_error is not callable"
            )));
        }
        let error_type = module.getattr("ErrorType").map_err(|_| {
            PyTypeError::new_err(format!("target module {name} has no ErrorType enum"))
        })?;
        for kind in [
            ErrorKind::NotFound,
            ErrorKind::OperationError,
            ErrorKind::InternalError,
        ] {
            if error_type.getattr(kind.member()).is_err() {
                return Err(PyTypeError::new_err(format!(
                    "{name}.ErrorType has no member {}",
                    kind.member()
                )));
            }
        }
        Ok(Target {
            module: module.clone().unbind(),
            name,
        })
    }

    pub fn module<'py>(&self, py: Python<'py>) -> &Bound<'py, PyAny> {
        self.module.bind(py)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The module's `PROCESSES_TABLE` (looked up each time: tests swap it).
    pub fn table<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.module(py).getattr("PROCESSES_TABLE")
    }

    /// Run `f` holding the module's `PROCESSES_TABLE_LOCK`, acquired with a bound.
    /// Returns `f`'s result and whether the lock was actually held: callers decide
    /// whether to go on without it (the GIL still makes single dict operations atomic).
    /// `f` must not wait on anything: the lock freezes the manager's table.
    pub fn with_table_lock<R>(
        &self,
        py: Python<'_>,
        bound: std::time::Duration,
        f: impl FnOnce() -> PyResult<R>,
    ) -> PyResult<(R, bool)> {
        let lock = self.module(py).getattr("PROCESSES_TABLE_LOCK")?;
        let acquired = lock
            .call_method1("acquire", (true, bound.as_secs_f64()))?
            .is_truthy()?;
        let result = f();
        if acquired {
            lock.call_method0("release")?;
        }
        Ok((result?, acquired))
    }

    /// `describe_error(exception=None, error_type=ErrorType.<kind>, public_error_message=message)`.
    pub fn error(&self, py: Python<'_>, kind: ErrorKind, message: &str) -> PyResult<PyObject> {
        let module = self.module(py);
        let error_type = module.getattr("ErrorType")?.getattr(kind.member())?;
        let kwargs = PyDict::new(py);
        kwargs.set_item("exception", py.None())?;
        kwargs.set_item("error_type", error_type)?;
        kwargs.set_item("public_error_message", message)?;
        Ok(module
            .getattr("describe_error")?
            .call((), Some(&kwargs))?
            .unbind())
    }
}
