//! Python bindings: the `Config` class, the state manager handle, the patched callables
//! and the module-level functions of `stream_manager_patches._native`.
//!
//! Everything here is glue: argument conversion and Python-facing names. Behaviour lives
//! in `config`, `state` and `command`.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::adaptive::ADAPTIVE;
use crate::command::{CommandPath, Purpose};
use crate::config::{self, Config, DurationRule, PatchSelection, DEFAULT_PATCH_NAMES, PATCH_NAMES};
use crate::gate;
use crate::health::HealthDaemon;
use crate::metrics::METRICS;
use crate::panics;
use crate::state::{PIPELINES, SHUTDOWN};
use crate::target::Target;
use crate::termination;
use crate::warmup::WarmUp;

fn config_error(err: config::ConfigError) -> PyErr {
    PyValueError::new_err(err.to_string())
}

/// Validated configuration of the patches. Immutable; build a new one to change it.
#[pyclass(name = "Config", module = "stream_manager_patches._native", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct PyConfig {
    pub inner: Config,
}

fn patches_from_py(value: &Bound<'_, PyAny>) -> PyResult<PatchSelection> {
    if let Ok(text) = value.extract::<String>() {
        return config::parse_patches("patches", &text).map_err(config_error);
    }
    let names: Vec<String> = value.extract().map_err(|_| {
        PyTypeError::new_err("patches must be 'all', 'none' or an iterable of patch names")
    })?;
    config::parse_patches("patches", &names.join(",")).map_err(config_error)
}

#[pymethods]
impl PyConfig {
    #[new]
    #[pyo3(signature = (
        *,
        queue_timeout = 10.0,
        health_check_timeout = 5.0,
        health_check_interval = 1.0,
        max_health_failures = 3,
        process_join_timeout = 30.0,
        termination_grace_period = 5.0,
        patches = None,
        adaptive_timeouts = false,
        server_threads = 8,
    ))]
    // One keyword argument per setting, as Python users expect.
    #[allow(clippy::too_many_arguments)]
    fn new(
        queue_timeout: f64,
        health_check_timeout: f64,
        health_check_interval: f64,
        max_health_failures: i64,
        process_join_timeout: f64,
        termination_grace_period: f64,
        patches: Option<&Bound<'_, PyAny>>,
        adaptive_timeouts: bool,
        server_threads: i64,
    ) -> PyResult<Self> {
        let pos = DurationRule::Positive;
        let inner = Config {
            queue_timeout: config::check_seconds("queue_timeout", queue_timeout, pos)
                .map_err(config_error)?,
            health_check_timeout: config::check_seconds(
                "health_check_timeout",
                health_check_timeout,
                pos,
            )
            .map_err(config_error)?,
            health_check_interval: config::check_seconds(
                "health_check_interval",
                health_check_interval,
                pos,
            )
            .map_err(config_error)?,
            max_health_failures: config::check_failures("max_health_failures", max_health_failures)
                .map_err(config_error)?,
            process_join_timeout: config::check_seconds(
                "process_join_timeout",
                process_join_timeout,
                pos,
            )
            .map_err(config_error)?,
            termination_grace_period: config::check_seconds(
                "termination_grace_period",
                termination_grace_period,
                DurationRule::NonNegative,
            )
            .map_err(config_error)?,
            patches: match patches {
                None => PatchSelection::All,
                Some(p) => patches_from_py(p)?,
            },
            adaptive_timeouts,
            server_threads: config::check_failures("server_threads", server_threads)
                .map_err(config_error)?,
        };
        Ok(PyConfig { inner })
    }

    /// Read and validate the `STREAM_MANAGER_*` variables from `environ` (default `os.environ`).
    #[staticmethod]
    #[pyo3(signature = (environ = None))]
    fn from_env(py: Python<'_>, environ: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let environ = match environ {
            Some(e) => e.clone(),
            None => py.import("os")?.getattr("environ")?,
        };
        let lookup_error: std::cell::RefCell<Option<PyErr>> = std::cell::RefCell::new(None);
        let lookup = |name: &str| -> Option<String> {
            match environ.call_method1("get", (name,)) {
                Ok(v) if v.is_none() => None,
                Ok(v) => v.extract::<String>().ok(),
                Err(e) => {
                    // Remember the first failure; a broken mapping is the caller's bug.
                    lookup_error.borrow_mut().get_or_insert(e);
                    None
                }
            }
        };
        let parsed = Config::from_lookup(lookup);
        if let Some(err) = lookup_error.into_inner() {
            return Err(err);
        }
        Ok(PyConfig {
            inner: parsed.map_err(config_error)?,
        })
    }

    #[getter]
    fn queue_timeout(&self) -> f64 {
        self.inner.queue_timeout
    }
    #[getter]
    fn health_check_timeout(&self) -> f64 {
        self.inner.health_check_timeout
    }
    #[getter]
    fn health_check_interval(&self) -> f64 {
        self.inner.health_check_interval
    }
    #[getter]
    fn max_health_failures(&self) -> u32 {
        self.inner.max_health_failures
    }
    #[getter]
    fn process_join_timeout(&self) -> f64 {
        self.inner.process_join_timeout
    }
    #[getter]
    fn termination_grace_period(&self) -> f64 {
        self.inner.termination_grace_period
    }
    #[getter]
    fn adaptive_timeouts(&self) -> bool {
        self.inner.adaptive_timeouts
    }
    #[getter]
    fn server_threads(&self) -> u32 {
        self.inner.server_threads
    }
    /// The selected patch names, in install order.
    #[getter]
    fn patches(&self) -> Vec<&'static str> {
        self.inner.patches.names()
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("queue_timeout", self.inner.queue_timeout)?;
        d.set_item("health_check_timeout", self.inner.health_check_timeout)?;
        d.set_item("health_check_interval", self.inner.health_check_interval)?;
        d.set_item("max_health_failures", self.inner.max_health_failures)?;
        d.set_item("process_join_timeout", self.inner.process_join_timeout)?;
        d.set_item(
            "termination_grace_period",
            self.inner.termination_grace_period,
        )?;
        d.set_item("patches", self.inner.patches.names())?;
        d.set_item("adaptive_timeouts", self.inner.adaptive_timeouts)?;
        d.set_item("server_threads", self.inner.server_threads)?;
        Ok(d)
    }

    fn __repr__(&self) -> String {
        let c = &self.inner;
        format!(
            "Config(queue_timeout={:?}, health_check_timeout={:?}, health_check_interval={:?}, max_health_failures={}, process_join_timeout={:?}, termination_grace_period={:?}, patches=[{}], adaptive_timeouts={}, server_threads={})",
            c.queue_timeout,
            c.health_check_timeout,
            c.health_check_interval,
            c.max_health_failures,
            c.process_join_timeout,
            c.termination_grace_period,
            c.patches
                .names()
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", "),
            if c.adaptive_timeouts { "True" } else { "False" },
            c.server_threads
        )
    }
}

/// Handle on the process-wide pipeline state table.
#[pyclass(
    name = "PipelineStates",
    module = "stream_manager_patches._native",
    frozen
)]
pub struct PyPipelineStates;

#[pymethods]
impl PyPipelineStates {
    /// `{pipeline_id: {"failures", "last_check", "marked_for_removal", "terminating"}}`;
    /// `last_check` is a UNIX timestamp or None.
    fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (id, record) in PIPELINES.snapshot() {
            let d = PyDict::new(py);
            d.set_item("failures", record.failures)?;
            d.set_item(
                "last_check",
                record
                    .last_check_wall
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map(|d| d.as_secs_f64()),
            )?;
            d.set_item("marked_for_removal", record.marked_for_removal)?;
            d.set_item("terminating", record.terminating)?;
            out.set_item(id, d)?;
        }
        Ok(out)
    }

    /// Refuse every new command to `pipeline_id` (OPERATION_ERROR) until it is forgotten.
    fn mark_for_removal(&self, pipeline_id: &str) {
        PIPELINES.mark_for_removal(pipeline_id);
    }

    fn set_terminating(&self, pipeline_id: &str, terminating: bool) {
        PIPELINES.set_terminating(pipeline_id, terminating);
    }

    /// Record a health-check outcome; returns the consecutive failure count.
    fn record_check(&self, pipeline_id: &str, success: bool) -> u32 {
        PIPELINES.record_check(pipeline_id, success)
    }

    /// Drop the record of `pipeline_id`; returns whether there was one.
    fn forget(&self, pipeline_id: &str) -> bool {
        PIPELINES.remove(pipeline_id).is_some()
    }

    fn clear(&self) {
        PIPELINES.clear();
    }

    fn __len__(&self) -> usize {
        PIPELINES.snapshot().len()
    }
}

/// Defines a frozen pyclass holding the shared binding, with upstream-looking metadata
/// (`__name__`, `__qualname__`, `__doc__`) and the given `__call__`.
macro_rules! native_patch {
    ($ty:ident, $name:literal, $doc:literal, { $($call:tt)* }) => {
        #[doc = $doc]
        #[pyclass(module = "stream_manager_patches._native", frozen)]
        pub struct $ty {
            path: Arc<CommandPath>,
        }

        #[pymethods]
        impl $ty {
            $($call)*

            #[getter]
            fn __name__(&self) -> &'static str {
                $name
            }
            #[getter]
            fn __qualname__(&self) -> &'static str {
                $name
            }
            #[getter]
            fn __doc__(&self) -> &'static str {
                $doc
            }
            /// The module whose function this callable replaces.
            #[getter]
            fn target(&self) -> &str {
                self.path.target.name()
            }
            #[getter]
            fn queue_timeout(&self) -> f64 {
                self.path.queue_timeout.as_secs_f64()
            }
            #[getter]
            fn config(&self) -> PyConfig {
                PyConfig {
                    inner: self.path.config.clone(),
                }
            }
            fn __repr__(&self) -> String {
                format!("<native {} for {}>", $name, self.path.target.name())
            }
        }
    };
}

native_patch!(
    HandleCommand,
    "handle_command",
    "Native handle_command(processes_table, request_id, pipeline_id, command) -> dict: bounded by STREAM_MANAGER_QUEUE_TIMEOUT, notices a dead pipeline at once.",
    {
        #[pyo3(signature = (processes_table, request_id, pipeline_id, command))]
        fn __call__(
            &self,
            py: Python<'_>,
            processes_table: &Bound<'_, PyAny>,
            request_id: &Bound<'_, PyAny>,
            pipeline_id: &Bound<'_, PyAny>,
            command: &Bound<'_, PyAny>,
        ) -> PyResult<PyObject> {
            panics::guard("handle_command", || {
                let (answer, _) = self.path.handle_command(
                    py,
                    processes_table,
                    request_id,
                    pipeline_id,
                    command,
                    self.path.command_timeout(),
                    Purpose::Command,
                )?;
                Ok(answer)
            })
        }
    }
);

native_patch!(
    GetResponseIgnoringThrash,
    "get_response_ignoring_thrash",
    "Native get_response_ignoring_thrash(responses_queue, matching_request_id, *, pipeline_process=None, pipeline_id=None) -> dict: bounded wait, stale answers dropped.",
    {
        #[pyo3(signature = (responses_queue, matching_request_id, *, pipeline_process = None, pipeline_id = None))]
        fn __call__(
            &self,
            py: Python<'_>,
            responses_queue: &Bound<'_, PyAny>,
            matching_request_id: &Bound<'_, PyAny>,
            pipeline_process: Option<&Bound<'_, PyAny>>,
            pipeline_id: Option<&Bound<'_, PyAny>>,
        ) -> PyResult<PyObject> {
            let pipeline_process = pipeline_process.filter(|p| !p.is_none());
            let pipeline_id = pipeline_id.filter(|p| !p.is_none());
            panics::guard("get_response_ignoring_thrash", || {
                self.path.get_response(
                    py,
                    responses_queue,
                    matching_request_id,
                    pipeline_process,
                    pipeline_id,
                )
            })
        }
    }
);

native_patch!(
    CheckProcessHealth,
    "check_process_health",
    "Native check_process_health() -> None: the health daemon loop; returns on request_shutdown().",
    {
        fn __call__(&self, py: Python<'_>) -> PyResult<()> {
            panics::guard("check_process_health", || {
                HealthDaemon {
                    path: Arc::clone(&self.path),
                }
                .run(py)
            })
        }
    }
);

native_patch!(
    ExecuteTermination,
    "execute_termination",
    "Native execute_termination(signal_number, frame, processes_table) -> None: SIGTERM all, wait at most the grace period, SIGKILL survivors, empty the table, sys.exit(0).",
    {
        #[pyo3(signature = (signal_number, frame, processes_table))]
        fn __call__(
            &self,
            py: Python<'_>,
            signal_number: &Bound<'_, PyAny>,
            frame: &Bound<'_, PyAny>,
            processes_table: &Bound<'_, PyAny>,
        ) -> PyResult<()> {
            let _ = frame;
            panics::guard("execute_termination", || {
                termination::execute_termination(py, &self.path, signal_number, processes_table)
            })
        }
    }
);

native_patch!(
    JoinInferencePipeline,
    "join_inference_pipeline",
    "Native join_inference_pipeline(processes_table, pipeline_id) -> None: bounded join, then terminate, then kill; reaped and removed.",
    {
        #[pyo3(signature = (processes_table, pipeline_id))]
        fn __call__(
            &self,
            py: Python<'_>,
            processes_table: &Bound<'_, PyAny>,
            pipeline_id: &Bound<'_, PyAny>,
        ) -> PyResult<()> {
            panics::guard("join_inference_pipeline", || {
                termination::join_inference_pipeline(py, &self.path, processes_table, pipeline_id)
            })
        }
    }
);

native_patch!(
    EnsureIdlePipelinesWarmedUp,
    "ensure_idle_pipelines_warmed_up",
    "Native ensure_idle_pipelines_warmed_up(expected_warmed_up_pipelines) -> None: warm-up loop; returns on request_shutdown().",
    {
        // streamvision (inference >= 1.8) passes a keyword-only host_descriptor, which
        // its spawn function requires; older generations pass nothing.
        #[pyo3(signature = (expected_warmed_up_pipelines, *, host_descriptor = None))]
        fn __call__(
            &self,
            py: Python<'_>,
            expected_warmed_up_pipelines: &Bound<'_, PyAny>,
            host_descriptor: Option<&Bound<'_, PyAny>>,
        ) -> PyResult<()> {
            let expected_warmed_up_pipelines = warm_up_count(expected_warmed_up_pipelines)?;
            panics::guard("ensure_idle_pipelines_warmed_up", || {
                WarmUp {
                    path: Arc::clone(&self.path),
                    host_descriptor: host_descriptor.filter(|h| !h.is_none()).map(|h| h.clone().unbind()),
                }
                .run(py, expected_warmed_up_pipelines as usize)
            })
        }
    }
);

/// `expected_warmed_up_pipelines` as a count: an int from 0 up, with errors that say so
/// (a bare extraction would answer `OverflowError: Python int too large to convert`).
fn warm_up_count(value: &Bound<'_, PyAny>) -> PyResult<i64> {
    let invalid = || {
        PyValueError::new_err(format!(
            "expected_warmed_up_pipelines must be an int >= 0, got {}",
            value.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    };
    match value.extract::<i64>() {
        Ok(count) if count >= 0 => Ok(count),
        Ok(_) => Err(invalid()),
        // Too large (or too small) for an i64: a value error, not an overflow.
        Err(_) if value.is_instance_of::<pyo3::types::PyInt>() => Err(invalid()),
        Err(_) => Err(PyTypeError::new_err(format!(
            "expected_warmed_up_pipelines must be an int, not {}",
            value.get_type().name()?
        ))),
    }
}

/// Bind every native patch to `target` (the stream manager's `app` module).
/// Returns `{patch name: callable}`. Fails with `TypeError` before anything is
/// installed if `target` lacks what the patches call back into.
#[pyfunction]
pub fn bind_patches<'py>(
    py: Python<'py>,
    target: &Bound<'py, PyAny>,
    config: &Bound<'py, PyConfig>,
) -> PyResult<Bound<'py, PyDict>> {
    let config = config.get().inner.clone();
    let path = Arc::new(CommandPath {
        target: Target::bind(target)?,
        queue_timeout: Duration::from_secs_f64(config.queue_timeout),
        config,
    });
    ADAPTIVE.configure(
        path.config.adaptive_timeouts,
        path.queue_timeout,
        Duration::from_secs_f64(path.config.health_check_timeout),
    );
    // Native threads may start from here on: close their door to Python at exit.
    gate::install(py, &wrap_pyfunction!(close_gate, py)?.into_any())?;
    let out = PyDict::new(py);
    let p = || Arc::clone(&path);
    out.set_item("handle_command", Py::new(py, HandleCommand { path: p() })?)?;
    out.set_item(
        "get_response_ignoring_thrash",
        Py::new(py, GetResponseIgnoringThrash { path: p() })?,
    )?;
    out.set_item(
        "check_process_health",
        Py::new(py, CheckProcessHealth { path: p() })?,
    )?;
    out.set_item(
        "execute_termination",
        Py::new(py, ExecuteTermination { path: p() })?,
    )?;
    out.set_item(
        "join_inference_pipeline",
        Py::new(py, JoinInferencePipeline { path: p() })?,
    )?;
    out.set_item(
        "ensure_idle_pipelines_warmed_up",
        Py::new(py, EnsureIdlePipelinesWarmedUp { path: p() })?,
    )?;
    Ok(out)
}

/// Counters, latency percentiles (seconds) and effective timeouts as a dict.
#[pyfunction]
pub fn performance_summary(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let s = panics::guard("performance_summary", || Ok(METRICS.summary()))?;
    let d = PyDict::new(py);
    d.set_item("total_commands", s.total_commands)?;
    d.set_item("successful_commands", s.successful_commands)?;
    d.set_item("success_rate", s.success_rate)?;
    d.set_item("avg_command_time", s.avg_command_time)?;
    d.set_item("p50_command_time", s.p50_command_time)?;
    d.set_item("p95_command_time", s.p95_command_time)?;
    d.set_item("p99_command_time", s.p99_command_time)?;
    d.set_item("max_command_time", s.max_command_time)?;
    d.set_item("total_timeouts", s.total_timeouts)?;
    let failures = PyDict::new(py);
    for (name, n) in &s.failures_by_type {
        failures.set_item(*name, *n)?;
    }
    d.set_item("failures_by_type", failures)?;
    d.set_item("avg_health_check_time", s.avg_health_check_time)?;
    d.set_item("p95_health_check_time", s.p95_health_check_time)?;
    d.set_item("health_checks", s.health_checks)?;
    d.set_item("health_check_failures", s.health_check_failures)?;
    d.set_item("dead_pipelines_detected", s.dead_pipelines_detected)?;
    d.set_item("pipelines_reaped", s.pipelines_reaped)?;
    d.set_item("stale_responses_dropped", s.stale_responses_dropped)?;
    d.set_item("active_pipelines", s.active_pipelines)?;
    d.set_item(
        "adaptive_timeouts",
        ADAPTIVE.enabled.load(std::sync::atomic::Ordering::Relaxed),
    )?;
    let effective = PyDict::new(py);
    for (operation, seconds) in ADAPTIVE.report() {
        effective.set_item(operation, seconds)?;
    }
    d.set_item("effective_timeouts", effective)?;
    Ok(d)
}

/// Zero every counter and histogram, and forget the adaptive-timeout windows.
#[pyfunction]
pub fn reset_metrics() {
    METRICS.reset();
    ADAPTIVE.command.reset();
    ADAPTIVE.health_check.reset();
}

/// The metrics in Prometheus text exposition format 0.0.4.
#[pyfunction]
pub fn render_prometheus() -> PyResult<String> {
    panics::guard("render_prometheus", || {
        Ok(METRICS.render_prometheus(&ADAPTIVE.report()))
    })
}

/// Measure, natively, what observability adds to one command: the metrics recorded for
/// it, and a disabled log call (one level check). Returns nanoseconds per command.
/// Used by the benchmark scripts; it records into a scratch `Metrics`, not the real one.
#[pyfunction]
#[pyo3(signature = (iterations = 200_000))]
pub fn measure_observability_overhead(
    py: Python<'_>,
    iterations: u32,
) -> PyResult<Bound<'_, PyDict>> {
    let scratch = crate::metrics::Metrics::default();
    let n = iterations.max(1);
    let started = std::time::Instant::now();
    for i in 0..n {
        let d = Duration::from_micros(200 + (i % 300) as u64);
        scratch.record_command(Some("status"), "success", d);
        scratch.queue_put_duration.observe(d / 10);
        scratch.queue_get_duration.observe(d);
        ADAPTIVE.command.record(d);
    }
    let metrics_ns = started.elapsed().as_nanos() as f64 / n as f64;
    ADAPTIVE.command.reset();
    let started = std::time::Instant::now();
    for _ in 0..n {
        std::hint::black_box(crate::logging::enabled(
            py,
            crate::logging::Channel::Command,
            crate::logging::Level::Debug,
        ));
    }
    let log_check_ns = started.elapsed().as_nanos() as f64 / n as f64;
    let d = PyDict::new(py);
    d.set_item("metrics_ns_per_command", metrics_ns)?;
    d.set_item("disabled_log_call_ns", log_check_ns)?;
    d.set_item("iterations", n)?;
    Ok(d)
}

/// Testing aid: panic inside the same guard as the patched functions, to prove that a
/// panic reaches Python as `RuntimeError`. Not part of the API.
#[pyfunction]
pub fn _testing_panic(message: &str) -> PyResult<()> {
    panics::guard("_testing_panic", || panic!("{message}"))
}

/// Testing aid for fork safety: a native thread that keeps the pipeline table's lock
/// held `hold_fraction` of the time for `seconds`, as busy probe workers would. Returns
/// at once. Not part of the API.
#[pyfunction]
pub fn _testing_hold_state_lock(seconds: f64, hold_fraction: f64) -> PyResult<()> {
    if !(seconds.is_finite() && (0.0..=60.0).contains(&seconds)) {
        return Err(PyValueError::new_err("seconds must be in [0, 60]"));
    }
    if !(hold_fraction.is_finite() && (0.0..1.0).contains(&hold_fraction)) {
        return Err(PyValueError::new_err("hold_fraction must be in [0, 1)"));
    }
    let until = std::time::Instant::now() + Duration::from_secs_f64(seconds);
    let hold = Duration::from_micros((1000.0 * hold_fraction) as u64);
    let gap = Duration::from_micros(1000) - hold;
    std::thread::Builder::new()
        .name("smp-test-lock-holder".into())
        .spawn(move || {
            while std::time::Instant::now() < until {
                PIPELINES.hold_lock_for(hold);
                std::thread::sleep(gap);
            }
        })
        .map_err(|e| pyo3::exceptions::PyOSError::new_err(e.to_string()))?;
    Ok(())
}

/// `atexit` hook: request shutdown and keep native threads out of Python from now on.
#[pyfunction]
pub fn close_gate(py: Python<'_>) {
    gate::close(py);
}

/// Ask every native wait and daemon to stop. Waits in flight end with an
/// OPERATION_ERROR "shutting down"; later commands are refused the same way.
#[pyfunction]
pub fn request_shutdown() {
    SHUTDOWN.request();
}

#[pyfunction]
pub fn is_shutdown_requested() -> bool {
    SHUTDOWN.is_requested()
}

/// Clear a shutdown request (for tests, or a manager restarted in one interpreter).
#[pyfunction]
pub fn reset_shutdown() {
    SHUTDOWN.reset();
    gate::reopen();
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyConfig>()?;
    m.add_class::<PyPipelineStates>()?;
    m.add_class::<HandleCommand>()?;
    m.add_class::<GetResponseIgnoringThrash>()?;
    m.add_class::<CheckProcessHealth>()?;
    m.add_class::<ExecuteTermination>()?;
    m.add_class::<JoinInferencePipeline>()?;
    m.add_class::<EnsureIdlePipelinesWarmedUp>()?;
    m.add_function(wrap_pyfunction!(bind_patches, m)?)?;
    m.add_function(wrap_pyfunction!(close_gate, m)?)?;
    m.add_function(wrap_pyfunction!(performance_summary, m)?)?;
    m.add_function(wrap_pyfunction!(reset_metrics, m)?)?;
    m.add_function(wrap_pyfunction!(render_prometheus, m)?)?;
    m.add_function(wrap_pyfunction!(measure_observability_overhead, m)?)?;
    m.add_function(wrap_pyfunction!(request_shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(is_shutdown_requested, m)?)?;
    m.add_function(wrap_pyfunction!(reset_shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(_testing_panic, m)?)?;
    m.add_function(wrap_pyfunction!(_testing_hold_state_lock, m)?)?;
    m.add("pipeline_states", PyPipelineStates)?;
    m.add("PATCH_NAMES", PyTuple::new(m.py(), PATCH_NAMES)?)?;
    m.add(
        "DEFAULT_PATCH_NAMES",
        PyTuple::new(m.py(), DEFAULT_PATCH_NAMES)?,
    )?;
    Ok(())
}
