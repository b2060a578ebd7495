//! When native threads may call into Python.
//!
//! Worker threads attach to the interpreter only to call it, and must never do so once
//! the interpreter has started finalising: attaching then crashes or hangs. An `atexit`
//! hook (registered when the daemons are bound) closes the gate; closing waits, with the
//! GIL released, for every worker already inside Python to leave. Workers enter under a
//! read guard and give up if the gate is closed.
//!
//! A `fork()`ed child inherits this memory but none of the threads; its copy of the lock
//! may be held by a thread that does not exist there, so the child never touches it:
//! everything here checks that it runs in the process that opened the gate.

use parking_lot::RwLock;
use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use crate::state::SHUTDOWN;

/// Set once the interpreter is exiting. Read without blocking: threads that hold the
/// GIL test it, and must never wait on the lock below while holding the GIL.
static CLOSED: AtomicBool = AtomicBool::new(false);
/// Held (shared) by every native thread while it is inside Python; `close` takes it
/// exclusively, with the GIL released, to wait until they have all left.
static INSIDE: RwLock<()> = RwLock::new(());
/// pid of the process whose threads use the gate (0 = nobody yet).
static OWNER: AtomicI32 = AtomicI32::new(0);

fn current_pid() -> i32 {
    // SAFETY: getpid has no preconditions.
    unsafe { libc::getpid() }
}

/// True in the process that runs our native threads (not in a forked child).
pub fn in_owner_process() -> bool {
    let owner = OWNER.load(Ordering::Acquire);
    owner == 0 || owner == current_pid()
}

/// Run `f` with the GIL if the interpreter may still be called; `None` otherwise.
/// Must be called without the GIL (from a native thread).
pub fn with_python<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    if !in_owner_process() || CLOSED.load(Ordering::Acquire) {
        return None;
    }
    // Recursive read: a worker already inside may re-enter without deadlocking on a
    // writer that is waiting for it to leave.
    let inside = INSIDE.read_recursive();
    if CLOSED.load(Ordering::Acquire) {
        return None;
    }
    let result = Python::with_gil(f);
    drop(inside);
    Some(result)
}

/// Non-blocking: may be called with the GIL held.
pub fn is_open() -> bool {
    in_owner_process() && !CLOSED.load(Ordering::Acquire)
}

/// Register the `atexit` hook once per process; called when threads are about to start.
pub fn install(py: Python<'_>, close_hook: &Bound<'_, PyAny>) -> PyResult<()> {
    let pid = current_pid();
    if OWNER.swap(pid, Ordering::AcqRel) == pid {
        return Ok(());
    }
    py.import("atexit")?
        .call_method1("register", (close_hook,))?;
    Ok(())
}

/// Close the gate: request shutdown (waking every native wait), then wait for workers
/// inside Python to leave, with the GIL released so that they can finish.
pub fn close(py: Python<'_>) {
    if !in_owner_process() {
        return;
    }
    CLOSED.store(true, Ordering::Release);
    SHUTDOWN.request();
    py.allow_threads(|| drop(INSIDE.write()));
}

/// Reopen (tests that restart daemons in one interpreter). Takes no lock, so it is
/// safe with the GIL held while workers wait for the GIL.
pub fn reopen() {
    if in_owner_process() {
        CLOSED.store(false, Ordering::Release);
    }
}
