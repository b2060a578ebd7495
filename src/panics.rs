//! Panics never cross into Python as panics.
//!
//! PyO3 turns a panic that reaches its trampoline into `pyo3_runtime.PanicException`, a
//! `BaseException`: the `except Exception` blocks of the manager's server loop do not
//! catch it, so one bug in a probe or a command would take the whole manager down. Every
//! Python-facing entry point runs its body under `guard`, which turns a panic into a
//! plain `RuntimeError` naming the function. Work on native threads runs under
//! `contain`, which reports the panic and lets the caller restore its bookkeeping (a
//! probe that panicked must still be marked finished, or its pipeline is never probed
//! again).

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::exceptions::PyRuntimeError;
use pyo3::PyResult;

/// The message a panic was raised with, if it was a string.
pub fn message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "panic with a non-string payload".to_string()
    }
}

/// The `RuntimeError` text for a panic in `function`.
pub fn describe(function: &str, payload: &(dyn Any + Send)) -> String {
    format!(
        "internal error in native {function}: {} (this is a bug in stream-manager-patches; \
         the call was abandoned, the manager's state is intact)",
        message(payload)
    )
}

/// Run a Python-facing body; a panic becomes `RuntimeError`.
///
/// Unwind safety: our shared state is atomics and a mutex whose critical sections
/// never panic, so a caught panic cannot leave it half-updated.
pub fn guard<T>(function: &str, body: impl FnOnce() -> PyResult<T>) -> PyResult<T> {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(result) => result,
        Err(payload) => Err(PyRuntimeError::new_err(describe(function, &*payload))),
    }
}

/// Run native-thread work; `Err(message)` if it panicked.
pub fn contain<T>(work: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(work)).map_err(|payload| message(&*payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet<T>(f: impl FnOnce() -> T) -> T {
        // The default hook prints every caught panic; keep the test output readable.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let out = f();
        std::panic::set_hook(hook);
        out
    }

    #[test]
    fn string_and_str_payloads_are_read() {
        assert_eq!(message(&"boom"), "boom");
        assert_eq!(message(&String::from("bang")), "bang");
        assert_eq!(message(&42u8), "panic with a non-string payload");
    }

    #[test]
    fn contain_reports_the_panic_and_passes_values_through() {
        assert_eq!(contain(|| 7), Ok(7));
        let caught = quiet(|| contain(|| -> u8 { panic!("worker {}", 3) }));
        assert_eq!(caught, Err("worker 3".to_string()));
    }

    #[test]
    fn describe_names_the_function() {
        let text = describe("handle_command", &"index out of bounds");
        assert!(text.starts_with("internal error in native handle_command: index out of bounds"));
    }
}
