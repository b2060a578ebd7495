//! The command path: `handle_command` and `get_response_ignoring_thrash`, bounded.
//!
//! Upstream puts a command on the pipeline's queue and then blocks in
//! `responses_queue.get()` with no timeout; a pipeline that died or hung wedges the
//! manager forever. Here every step has a share of one deadline:
//!
//! 1. refuse at once what cannot succeed (unknown, marked for removal, being terminated,
//!    process already dead, shutting down) without touching the pipeline's queues;
//! 2. take the pipeline's `operation_lock` with the remaining time ("busy" otherwise);
//! 3. `put` with the remaining time;
//! 4. `poll(2)` on the queue's reader fd, the process sentinel and our shutdown pipe with
//!    the GIL released, and read an item only once bytes are there. Answers to other
//!    requests are dropped and logged; malformed items are skipped.
//!
//! No thread is started per call. Reading takes the queue's own `_rlock` (natively, on
//! the same semaphore, see `frame`), so sharing the queue with other readers stays
//! correct: if another reader wins the race for the bytes, we go back to polling. The
//! read itself is bounded too: a pipeline that stalls or dies half-way through writing
//! an answer cannot hold us past the deadline (upstream's `recv_bytes` would block for
//! ever, the queue's lock held).

use std::time::{Duration, Instant};

use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};

use crate::adaptive::ADAPTIVE;
use crate::frame::{self, Frame, SemHandle};
use crate::logging::{self, Channel, Fields, Level};
use crate::metrics::METRICS;
use crate::state::{PIPELINES, SHUTDOWN};
use crate::target::{ErrorKind, Target};
use crate::validate;
use crate::wait::{self, WaitSet};

/// Longest single `get` once poll said data is there, and the slice used for queues we
/// cannot poll. Keeps death and shutdown noticed within this bound even if another
/// reader steals the bytes or the queue is a plain `queue.Queue`.
const GET_SLICE: Duration = Duration::from_millis(50);

/// Longest stretch without giving the interpreter a chance to run signal handlers.
/// Process-directed signals may be delivered to any thread, so the main thread's poll is
/// not always interrupted; waking this often keeps a SIGTERM handler prompt.
const SIGNAL_SLICE: Duration = Duration::from_millis(100);

/// How a command or wait ended, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Answered,
    UnknownPipeline,
    BeingRemoved,
    BeingTerminated,
    NotRunning,
    Busy,
    Timeout,
    QueueClosed,
    ShuttingDown,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Answered => "answered",
            Outcome::UnknownPipeline => "unknown_pipeline",
            Outcome::BeingRemoved => "being_removed",
            Outcome::BeingTerminated => "being_terminated",
            Outcome::NotRunning => "not_running",
            Outcome::Busy => "busy",
            Outcome::Timeout => "timeout",
            Outcome::QueueClosed => "queue_closed",
            Outcome::ShuttingDown => "shutting_down",
        }
    }
}

/// Result of waiting for one answer.
pub enum WaitResult {
    Answer(PyObject),
    Timeout,
    ProcessDied,
    ShuttingDown,
    QueueClosed,
}

fn queue_empty_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static EMPTY: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
    Ok(EMPTY
        .get_or_try_init(py, || {
            py.import("queue")?.getattr("Empty").map(Bound::unbind)
        })?
        .bind(py))
}

fn queue_full_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static FULL: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
    Ok(FULL
        .get_or_try_init(py, || {
            py.import("queue")?.getattr("Full").map(Bound::unbind)
        })?
        .bind(py))
}

fn seconds_left(deadline: Instant) -> f64 {
    deadline
        .saturating_duration_since(Instant::now())
        .as_secs_f64()
}

/// Shorten `repr(obj)` for a log line: stray payloads can be frames or huge dicts.
fn short_repr(obj: &Bound<'_, PyAny>) -> String {
    let text = obj
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| "<unrepresentable>".to_string());
    if text.chars().count() > 200 {
        let cut: String = text.chars().take(200).collect();
        format!("{cut}...")
    } else {
        text
    }
}

/// What one `get` produced.
enum Taken {
    Nothing,
    Item(PyObject),
    Closed,
}

fn forking_loads(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static LOADS: GILOnceCell<Py<PyAny>> = GILOnceCell::new();
    Ok(LOADS
        .get_or_try_init(py, || {
            py.import("multiprocessing.reduction")?
                .getattr("ForkingPickler")?
                .getattr("loads")
                .map(Bound::unbind)
        })?
        .bind(py))
}

/// Count and log one item dropped from a responses queue (an answer to another
/// request, a malformed item, or bytes that did not unpickle).
fn log_dropped(
    py: Python<'_>,
    event: &str,
    pipeline_id: Option<&str>,
    error: Option<&str>,
    message: impl FnOnce() -> String,
) {
    METRICS
        .stale_responses_dropped
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    logging::emit(
        py,
        Channel::Command,
        Level::Warning,
        Fields {
            event,
            pipeline_id,
            success: Some(false),
            error,
            ..Default::default()
        },
        message,
    );
}

fn log_unreadable(py: Python<'_>, err: &PyErr, pipeline_id: Option<&str>) {
    let text = err.to_string();
    log_dropped(
        py,
        "malformed_response_dropped",
        pipeline_id,
        Some(&text),
        || format!("Dropping unreadable item from responses queue: {text}"),
    );
}

/// Read one item from a `multiprocessing.Queue` whose reader fd poll(2) reported
/// readable. Mirrors `Queue.get()` step for step (the same `_rlock`, frame, `_sem` and
/// `ForkingPickler.loads`), but takes the lock and reads the frame in one GIL-released
/// stretch (see `frame`), and skips the selector `get(timeout=...)` builds on every call
/// to poll a pipe we have just polled. Readiness is checked again once we own the lock,
/// since another reader may have taken the bytes. Falls back to a bounded `get` if the
/// queue is not shaped like that.
///
/// The lock wait is bounded by `timeout` (a slice, so death and shutdown are still
/// noticed); the frame read by `read_deadline` (the command's deadline: a frame cut
/// short by a mere slice would leave the stream out of step) and by the death of the
/// pipeline process, whose sentinel ends the read once nothing it wrote is left.
fn take_ready(
    py: Python<'_>,
    responses: &Responses<'_>,
    data_fd: i32,
    timeout: Duration,
    read_deadline: Instant,
    pipeline_id: Option<&str>,
) -> PyResult<Taken> {
    let Some(native) = &responses.native else {
        return take_one(py, &responses.queue, timeout, pipeline_id);
    };
    let lock = native.lock;
    let lock_deadline = Instant::now() + timeout;
    let writer_exit = responses.sentinel;
    // SAFETY: `native._rlock` keeps the `_rlock` that owns the semaphore alive for this
    // whole call, even with the GIL released.
    let read = py.allow_threads(|| unsafe {
        frame::take_frame(lock, data_fd, lock_deadline, read_deadline, writer_exit)
    });
    match read {
        Ok(Frame::Bytes(bytes)) => {
            // A writer that bypassed put() (raw frames on the pipe) never took a slot of
            // the bounded semaphore, so releasing it may fail; the bytes still count.
            let _ = native.slots.call_method0("release");
            unpickle(py, PyBytes::new(py, &bytes).into_any(), pipeline_id)
        }
        Ok(Frame::Empty) | Ok(Frame::Busy) => Ok(Taken::Nothing),
        Ok(Frame::Torn) => {
            log_dropped(py, "torn_response_dropped", pipeline_id, None, || {
                "A responses-queue frame was cut short (its writer died or stalled \
                 mid-write); what follows on this queue may be unreadable"
                    .to_string()
            });
            Ok(Taken::Nothing)
        }
        Err(_) if queue_is_closed(&responses.queue) => Ok(Taken::Closed),
        Err(err)
            if err.kind() == std::io::ErrorKind::UnexpectedEof
                || err.raw_os_error() == Some(libc::EBADF) =>
        {
            Ok(Taken::Closed)
        }
        Err(err) => {
            let err = PyOSError::new_err(format!("reading the responses queue failed: {err}"));
            log_unreadable(py, &err, pipeline_id);
            Ok(Taken::Nothing)
        }
    }
}

/// Unpickle a frame after releasing the lock, as `Queue.get` does.
fn unpickle(py: Python<'_>, bytes: Bound<'_, PyAny>, pipeline_id: Option<&str>) -> PyResult<Taken> {
    match forking_loads(py)?.call1((bytes,)) {
        Ok(item) => Ok(Taken::Item(item.unbind())),
        Err(err) => {
            log_unreadable(py, &err, pipeline_id);
            Ok(Taken::Nothing)
        }
    }
}

/// True when `process`'s sentinel says it has exited; `None` if it has no usable
/// sentinel. One poll(2) with zero timeout: cheaper than `is_alive()`'s waitpid and
/// Python frames on every command.
fn sentinel_says_exited(process: &Bound<'_, PyAny>) -> Option<bool> {
    let fd = extract_fd(process.getattr("sentinel"))?;
    let polled = wait::poll_fds(&[fd], Instant::now()).ok()?;
    Some(polled.ready[0] || polled.broken[0])
}

/// One bounded `get`. `Empty` means another reader won the race; a broken item (it failed
/// to unpickle) is logged and skipped; a closed queue ends the wait.
fn take_one(
    py: Python<'_>,
    queue: &Bound<'_, PyAny>,
    timeout: Duration,
    pipeline_id: Option<&str>,
) -> PyResult<Taken> {
    match queue.call_method1("get", (true, timeout.as_secs_f64())) {
        Ok(item) => Ok(Taken::Item(item.unbind())),
        Err(err) if err.is_instance(py, queue_empty_type(py)?) => Ok(Taken::Nothing),
        Err(err) => {
            if queue_is_closed(queue) {
                return Ok(Taken::Closed);
            }
            log_unreadable(py, &err, pipeline_id);
            Ok(Taken::Nothing)
        }
    }
}

fn queue_is_closed(queue: &Bound<'_, PyAny>) -> bool {
    let flag = |obj: PyResult<Bound<'_, PyAny>>| obj.and_then(|v| v.is_truthy()).unwrap_or(false);
    flag(queue.getattr("_closed"))
        || flag(queue.getattr("_reader").and_then(|r| r.getattr("closed")))
}

/// `Some(payload)` when `item` is the `(request_id, payload)` answer we wait for.
/// Anything else (other ids, non-tuples, wrong arity) is logged and dropped.
fn match_answer(
    py: Python<'_>,
    item: &Bound<'_, PyAny>,
    request_id: &Bound<'_, PyAny>,
    pipeline_id: Option<&str>,
) -> Option<PyObject> {
    let pair: Option<(Bound<'_, PyAny>, Bound<'_, PyAny>)> =
        if let Ok(t) = item.downcast::<PyTuple>() {
            (t.len() == 2)
                .then(|| (t.get_item(0).ok(), t.get_item(1).ok()))
                .and_then(|(a, b)| Some((a?, b?)))
        } else if let Ok(l) = item.downcast::<PyList>() {
            (l.len() == 2)
                .then(|| (l.get_item(0).ok(), l.get_item(1).ok()))
                .and_then(|(a, b)| Some((a?, b?)))
        } else {
            None
        };
    match pair {
        Some((rid, payload)) => {
            if rid.eq(request_id).unwrap_or(false) {
                return Some(payload.unbind());
            }
            log_dropped(py, "stale_response_dropped", pipeline_id, None, || {
                format!(
                    "Dropping response for request_id={} with payload={}",
                    short_repr(&rid),
                    short_repr(&payload)
                )
            });
            None
        }
        None => {
            log_dropped(py, "malformed_response_dropped", pipeline_id, None, || {
                format!(
                    "Dropping malformed item from responses queue: {}",
                    short_repr(item)
                )
            });
            None
        }
    }
}

fn extract_fd(obj: PyResult<Bound<'_, PyAny>>) -> Option<i32> {
    obj.ok()
        .and_then(|v| v.extract::<i32>().ok())
        .filter(|fd| *fd >= 0)
}

/// A responses queue prepared for waiting. Everything is looked up *before* the command
/// is put: the queue's feeder thread needs the GIL to send the command, so the fewer
/// Python calls between `put` and releasing the GIL in poll(2), the sooner the pipeline
/// sees the command (measured: this was half of the wrapper's overhead).
pub struct Responses<'py> {
    pub queue: Bound<'py, PyAny>,
    data_fd: Option<i32>,
    sentinel: Option<i32>,
    /// Present when the queue is shaped like a `multiprocessing.Queue`: `take_ready`
    /// reads it natively.
    native: Option<NativeRead<'py>>,
}

/// What reading a `multiprocessing.Queue` natively needs.
struct NativeRead<'py> {
    /// `_rlock`, never called: held so that the semaphore it owns outlives every read.
    _rlock: Bound<'py, PyAny>,
    /// The semaphore behind `_rlock` (`_rlock._semlock.handle`).
    lock: SemHandle,
    /// `_sem`, the bounded semaphore `get` releases for every item taken.
    slots: Bound<'py, PyAny>,
}

impl<'py> Responses<'py> {
    pub fn prepare(queue: &Bound<'py, PyAny>, process: Option<&Bound<'py, PyAny>>) -> Self {
        let data_fd = extract_fd(
            queue
                .getattr("_reader")
                .and_then(|r| r.call_method0("fileno")),
        );
        let native = (|| {
            data_fd?;
            let rlock = queue.getattr("_rlock").ok()?;
            let handle = rlock
                .getattr("_semlock")
                .and_then(|s| s.getattr("handle"))
                .and_then(|h| h.extract::<usize>())
                .ok()
                .filter(|h| *h != 0)?;
            let slots = queue.getattr("_sem").ok()?;
            Some(NativeRead {
                _rlock: rlock,
                lock: SemHandle(handle),
                slots,
            })
        })();
        Responses {
            queue: queue.clone(),
            data_fd,
            sentinel: process.and_then(|p| extract_fd(p.getattr("sentinel"))),
            native,
        }
    }
}

/// Wait for the answer to `request_id` on `queue` until `deadline`.
///
/// With a `process`, its death ends the wait as soon as nothing it wrote is left
/// unread: an answer written just before dying is still delivered.
pub fn wait_for_answer(
    py: Python<'_>,
    responses: &Responses<'_>,
    request_id: &Bound<'_, PyAny>,
    process: Option<&Bound<'_, PyAny>>,
    pipeline_id: Option<&str>,
    deadline: Instant,
) -> PyResult<WaitResult> {
    let queue = &responses.queue;
    let data_fd = responses.data_fd;
    let sentinel = responses.sentinel;
    let shutdown_fd = SHUTDOWN.wake_fd();

    let matches = |item: PyObject| match_answer(py, item.bind(py), request_id, pipeline_id);

    loop {
        if SHUTDOWN.is_requested() {
            return Ok(WaitResult::ShuttingDown);
        }
        let Some(data_fd) = data_fd else {
            // Not a multiprocessing queue (e.g. `queue.Queue` in a user's test): let the
            // queue wait, in slices, and check the process between slices.
            let now = Instant::now();
            if now >= deadline {
                return Ok(WaitResult::Timeout);
            }
            match take_one(py, queue, GET_SLICE.min(deadline - now), pipeline_id)? {
                Taken::Item(item) => {
                    if let Some(answer) = matches(item) {
                        return Ok(WaitResult::Answer(answer));
                    }
                }
                Taken::Closed => return Ok(WaitResult::QueueClosed),
                Taken::Nothing => {
                    py.check_signals()?;
                    if let Some(p) = process {
                        if !p.call_method0("is_alive")?.is_truthy()? {
                            return Ok(WaitResult::ProcessDied);
                        }
                    }
                }
            }
            continue;
        };

        let set = WaitSet {
            data: Some(data_fd),
            process: sentinel,
            shutdown: shutdown_fd,
        };
        let slice_deadline = deadline.min(Instant::now() + SIGNAL_SLICE);
        let ready = py
            .allow_threads(|| wait::wait(set, slice_deadline))
            .map_err(|e| {
                PyOSError::new_err(format!(
                    "poll(2) failed while waiting for a pipeline answer: {e}"
                ))
            })?;
        if ready.interrupted || !ready.any() {
            // Let the interpreter run its signal handlers (a SIGTERM handler raising
            // SystemExit propagates from here), then keep waiting.
            py.check_signals()?;
            if Instant::now() >= deadline {
                return Ok(WaitResult::Timeout);
            }
            continue;
        }

        if ready.data {
            let slice = GET_SLICE
                .min(deadline.saturating_duration_since(Instant::now()))
                .max(Duration::from_millis(1));
            match take_ready(
                py,
                responses,
                data_fd,
                slice,
                deadline.max(Instant::now() + GET_SLICE),
                pipeline_id,
            )? {
                Taken::Item(item) => {
                    if let Some(answer) = matches(item) {
                        return Ok(WaitResult::Answer(answer));
                    }
                }
                Taken::Closed => return Ok(WaitResult::QueueClosed),
                Taken::Nothing => {}
            }
            continue;
        }
        if ready.data_broken {
            return Ok(WaitResult::QueueClosed);
        }
        if ready.process_exited {
            // Read what the process wrote before it died; it may hold our answer.
            loop {
                let drain = wait::wait(
                    WaitSet {
                        data: Some(data_fd),
                        ..Default::default()
                    },
                    Instant::now(),
                )
                .map_err(|e| PyOSError::new_err(e.to_string()))?;
                if !drain.data {
                    return Ok(WaitResult::ProcessDied);
                }
                match take_ready(
                    py,
                    responses,
                    data_fd,
                    GET_SLICE,
                    // The writer is dead: what is not in the pipe now never will be.
                    Instant::now() + GET_SLICE,
                    pipeline_id,
                )? {
                    Taken::Item(item) => {
                        if let Some(answer) = matches(item) {
                            return Ok(WaitResult::Answer(answer));
                        }
                    }
                    Taken::Closed => return Ok(WaitResult::QueueClosed),
                    Taken::Nothing => return Ok(WaitResult::ProcessDied),
                }
                if Instant::now() >= deadline {
                    return Ok(WaitResult::ProcessDied);
                }
            }
        }
        if ready.shutdown {
            return Ok(WaitResult::ShuttingDown);
        }
    }
}

/// Who sends a command: clients' commands are counted as commands and feed the
/// adaptive command timeout; health probes are accounted by the health daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    Command,
    HealthCheck,
}

/// `"success"` or `"pipeline_error"` for an answer, by its `status` field.
fn answered_outcome(py: Python<'_>, answer: &PyObject) -> &'static str {
    let failed = answer
        .bind(py)
        .downcast::<PyDict>()
        .ok()
        .and_then(|d| d.get_item("status").ok().flatten())
        .and_then(|s| s.eq("failure").ok())
        .unwrap_or(false);
    if failed {
        "pipeline_error"
    } else {
        "success"
    }
}

/// The command path bound to one target module and one queue timeout.
pub struct CommandPath {
    pub target: Target,
    pub queue_timeout: Duration,
    /// The whole configuration, for the daemons that share this binding.
    pub config: crate::config::Config,
}

/// Read `command["type"]` as text, if the command is a dict with a string-like type.
fn command_type(command: &Bound<'_, PyAny>) -> Option<String> {
    let dict = command.downcast::<PyDict>().ok()?;
    let value = dict.get_item("type").ok()??;
    // CommandType is a `str` Enum: `value` works for it, plain strings are taken as is.
    if let Ok(v) = value.getattr("value") {
        if let Ok(s) = v.extract::<String>() {
            return Some(s);
        }
    }
    value.extract::<String>().ok()
}

fn pipeline_id_text(pipeline_id: &Bound<'_, PyAny>) -> String {
    pipeline_id
        .str()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| "<unprintable>".to_string())
}

impl CommandPath {
    /// The command deadline now: the configured queue timeout, or its adaptive value.
    pub fn command_timeout(&self) -> Duration {
        ADAPTIVE.command_timeout(self.queue_timeout)
    }

    /// The health-probe deadline now (configured or adaptive).
    pub fn health_timeout(&self) -> Duration {
        ADAPTIVE.health_timeout(Duration::from_secs_f64(self.config.health_check_timeout))
    }

    fn error(&self, py: Python<'_>, kind: ErrorKind, message: String) -> PyResult<PyObject> {
        self.target.error(py, kind, &message)
    }

    /// Map a wait result to the answer returned to upstream code.
    fn answer_for(
        &self,
        py: Python<'_>,
        result: WaitResult,
        pipeline_id: &str,
        timeout: Duration,
    ) -> PyResult<(PyObject, Outcome)> {
        Ok(match result {
            WaitResult::Answer(answer) => (answer, Outcome::Answered),
            WaitResult::Timeout => (
                self.error(
                    py,
                    ErrorKind::OperationError,
                    format!(
                        "InferencePipeline with id={pipeline_id} did not answer within {:.3} s.",
                        timeout.as_secs_f64()
                    ),
                )?,
                Outcome::Timeout,
            ),
            WaitResult::ProcessDied => (
                self.error(
                    py,
                    ErrorKind::NotFound,
                    format!("InferencePipeline with id={pipeline_id} is not running."),
                )?,
                Outcome::NotRunning,
            ),
            WaitResult::ShuttingDown => (
                self.error(
                    py,
                    ErrorKind::OperationError,
                    "Stream manager is shutting down.".to_string(),
                )?,
                Outcome::ShuttingDown,
            ),
            WaitResult::QueueClosed => (
                self.error(
                    py,
                    ErrorKind::OperationError,
                    format!("Queues of InferencePipeline with id={pipeline_id} are closed."),
                )?,
                Outcome::QueueClosed,
            ),
        })
    }

    /// `handle_command(processes_table, request_id, pipeline_id, command)` with `timeout`
    /// bounding the whole call: lock, put and wait share one deadline.
    // Upstream's four arguments plus the deadline and who is asking.
    #[allow(clippy::too_many_arguments)]
    pub fn handle_command(
        &self,
        py: Python<'_>,
        processes_table: &Bound<'_, PyAny>,
        request_id: &Bound<'_, PyAny>,
        pipeline_id: &Bound<'_, PyAny>,
        command: &Bound<'_, PyAny>,
        timeout: Duration,
        purpose: Purpose,
    ) -> PyResult<(PyObject, Outcome)> {
        let started = Instant::now();
        let deadline = started + timeout;
        let id_text = pipeline_id_text(pipeline_id);
        let kind = command_type(command);
        let result = self.handle_command_inner(
            py,
            processes_table,
            request_id,
            pipeline_id,
            &id_text,
            command,
            kind.as_deref(),
            timeout,
            deadline,
        );
        if let Ok((answer, outcome)) = &result {
            let outcome = *outcome;
            if purpose == Purpose::Command {
                let elapsed = started.elapsed();
                let counted = match outcome {
                    Outcome::Answered => answered_outcome(py, answer),
                    other => other.name(),
                };
                METRICS.record_command(kind.as_deref(), counted, elapsed);
                match outcome {
                    Outcome::Answered => ADAPTIVE.command.record(elapsed),
                    Outcome::Timeout => ADAPTIVE.command.record(timeout),
                    _ => {}
                }
            }
            let (level, success) = match outcome {
                Outcome::Answered => (Level::Debug, true),
                _ => (Level::Warning, false),
            };
            logging::emit(
                py,
                Channel::Command,
                level,
                Fields {
                    event: if outcome == Outcome::Timeout {
                        "command_timeout"
                    } else {
                        "command"
                    },
                    pipeline_id: Some(&id_text),
                    command_type: kind.as_deref(),
                    duration_ms: Some(started.elapsed().as_secs_f64() * 1e3),
                    success: Some(success),
                    error: (!success).then(|| outcome.name()),
                },
                || {
                    format!(
                        "Command {} to pipeline_id={} ended: {} in {:.1} ms",
                        kind.as_deref().unwrap_or("?"),
                        id_text,
                        outcome.name(),
                        started.elapsed().as_secs_f64() * 1e3
                    )
                },
            );
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_command_inner(
        &self,
        py: Python<'_>,
        processes_table: &Bound<'_, PyAny>,
        request_id: &Bound<'_, PyAny>,
        pipeline_id: &Bound<'_, PyAny>,
        id_text: &str,
        command: &Bound<'_, PyAny>,
        kind: Option<&str>,
        timeout: Duration,
        deadline: Instant,
    ) -> PyResult<(PyObject, Outcome)> {
        if SHUTDOWN.is_requested() {
            return self.answer_for(py, WaitResult::ShuttingDown, id_text, timeout);
        }
        validate::table(processes_table)?;
        let managed = processes_table.call_method1("get", (pipeline_id,))?;
        if managed.is_none() {
            return Ok((
                self.error(
                    py,
                    ErrorKind::NotFound,
                    format!("Could not find InferencePipeline with id={id_text}."),
                )?,
                Outcome::UnknownPipeline,
            ));
        }
        validate::managed(&managed, id_text)?;
        let refuse_if_leaving = || -> PyResult<Option<(PyObject, Outcome)>> {
            if PIPELINES.is_marked_for_removal(id_text) {
                return Ok(Some((
                    self.error(
                        py,
                        ErrorKind::OperationError,
                        format!("InferencePipeline with id={id_text} is being removed."),
                    )?,
                    Outcome::BeingRemoved,
                )));
            }
            // Upstream flags a pipeline `is_terminating` before sending it TERMINATE; that
            // command must pass, anything else would queue behind a pipeline about to go.
            let terminating = managed
                .getattr("is_terminating")
                .and_then(|v| v.is_truthy())
                .unwrap_or(false)
                || PIPELINES.get(id_text).is_some_and(|r| r.terminating);
            if terminating && kind != Some("terminate") {
                return Ok(Some((
                    self.error(
                        py,
                        ErrorKind::OperationError,
                        format!("InferencePipeline with id={id_text} is being terminated."),
                    )?,
                    Outcome::BeingTerminated,
                )));
            }
            Ok(None)
        };
        if let Some(refusal) = refuse_if_leaving()? {
            return Ok(refusal);
        }
        let process = managed.getattr("pipeline_manager")?;
        let exited = match sentinel_says_exited(&process) {
            Some(exited) => exited,
            None => !process.call_method0("is_alive")?.is_truthy()?,
        };
        if exited {
            return self.answer_for(py, WaitResult::ProcessDied, id_text, timeout);
        }
        let lock = managed.getattr("operation_lock")?;
        let acquired = lock
            .call_method1("acquire", (true, seconds_left(deadline)))?
            .is_truthy()?;
        if !acquired {
            return Ok((
                self.error(
                    py,
                    ErrorKind::OperationError,
                    format!(
                        "InferencePipeline with id={id_text} is busy: its operation lock was not free within {:.3} s.",
                        timeout.as_secs_f64()
                    ),
                )?,
                Outcome::Busy,
            ));
        }
        let outcome = (|| -> PyResult<(PyObject, Outcome)> {
            // The pipeline may have been marked while we waited for the lock.
            if let Some(refusal) = refuse_if_leaving()? {
                return Ok(refusal);
            }
            let message = PyTuple::new(py, [request_id, command])?;
            let command_queue = managed.getattr("command_queue")?;
            let responses =
                Responses::prepare(&managed.getattr("responses_queue")?, Some(&process));
            let put_started = Instant::now();
            let put = command_queue
                .call_method1("put", (message, true, seconds_left(deadline).max(0.001)));
            METRICS.queue_put_duration.observe(put_started.elapsed());
            if let Err(err) = put {
                if err.is_instance(py, queue_full_type(py)?) {
                    return self.answer_for(py, WaitResult::Timeout, id_text, timeout);
                }
                if queue_is_closed(&command_queue) {
                    return self.answer_for(py, WaitResult::QueueClosed, id_text, timeout);
                }
                return Err(err);
            }
            let wait_started = Instant::now();
            let result = wait_for_answer(
                py,
                &responses,
                request_id,
                Some(&process),
                Some(id_text),
                deadline,
            )?;
            METRICS.queue_get_duration.observe(wait_started.elapsed());
            self.answer_for(py, result, id_text, timeout)
        })();
        let released = lock.call_method0("release");
        let outcome = outcome?;
        released?;
        Ok(outcome)
    }

    /// Find the process that owns `responses_queue` in the target's PROCESSES_TABLE, so
    /// that callers which do not pass `pipeline_process` (upstream's INIT path) still
    /// get death detection.
    pub fn find_owner<'py>(
        &self,
        py: Python<'py>,
        responses_queue: &Bound<'py, PyAny>,
    ) -> Option<(Bound<'py, PyAny>, Option<String>)> {
        let table = self.target.module(py).getattr("PROCESSES_TABLE").ok()?;
        let table = table.downcast::<PyDict>().ok()?.copy().ok()?;
        for (key, managed) in table.iter() {
            let queue = managed.getattr("responses_queue").ok()?;
            if queue.is(responses_queue) {
                let process = managed.getattr("pipeline_manager").ok()?;
                return Some((process, key.str().ok().map(|s| s.to_string())));
            }
        }
        None
    }

    /// `get_response_ignoring_thrash(responses_queue, matching_request_id, *, pipeline_process, pipeline_id)`.
    pub fn get_response(
        &self,
        py: Python<'_>,
        responses_queue: &Bound<'_, PyAny>,
        matching_request_id: &Bound<'_, PyAny>,
        pipeline_process: Option<&Bound<'_, PyAny>>,
        pipeline_id: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyObject> {
        validate::queue("responses_queue", responses_queue)?;
        if let Some(process) = pipeline_process {
            validate::process("pipeline_process", process)?;
        }
        let started = Instant::now();
        let timeout = self.command_timeout();
        let mut id_text = pipeline_id.map(pipeline_id_text);
        let found;
        let process = match pipeline_process {
            Some(p) => Some(p.clone()),
            None => {
                found = self.find_owner(py, responses_queue);
                found.map(|(p, id)| {
                    if id_text.is_none() {
                        id_text = id;
                    }
                    p
                })
            }
        };
        let label = id_text.clone().unwrap_or_else(|| "<unknown>".to_string());
        let result = wait_for_answer(
            py,
            &Responses::prepare(responses_queue, process.as_ref()),
            matching_request_id,
            process.as_ref(),
            id_text.as_deref(),
            started + timeout,
        )?;
        let (answer, outcome) = self.answer_for(py, result, &label, timeout)?;
        let success = outcome == Outcome::Answered;
        let elapsed = started.elapsed();
        METRICS.queue_get_duration.observe(elapsed);
        let counted = if success {
            answered_outcome(py, &answer)
        } else {
            outcome.name()
        };
        METRICS.record_command(None, counted, elapsed);
        logging::emit(
            py,
            Channel::Command,
            if success {
                Level::Debug
            } else {
                Level::Warning
            },
            Fields {
                event: if outcome == Outcome::Timeout {
                    "response_timeout"
                } else {
                    "response"
                },
                pipeline_id: id_text.as_deref(),
                duration_ms: Some(started.elapsed().as_secs_f64() * 1e3),
                success: Some(success),
                error: (!success).then(|| outcome.name()),
                ..Default::default()
            },
            || {
                format!(
                    "Waiting for response from pipeline_id={label} ended: {}",
                    outcome.name()
                )
            },
        );
        Ok(answer)
    }
}
