"""Hardening: hostile queue traffic, odd arguments, panics, fork() under load,
interpreter shutdown, apply/restore storms. Real pipelines, the real app module."""

from __future__ import annotations

import gc
import logging
import math
import multiprocessing
import os
import queue as queue_module
import random
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Callable, Dict, List, Tuple

import pytest

import stream_manager_patches as smp
from stream_manager_patches import _native

import pipelines
from conftest import request_id
from test_daemons import manager, wait_until  # noqa: F401  (fixture)

FAST = smp.Config(queue_timeout=1.0)
HERE = os.path.dirname(os.path.abspath(__file__))


def status(app, pipeline_id: str) -> Dict[str, Any]:
    return {"type": app.CommandType.STATUS, "pipeline_id": pipeline_id}


@pytest.fixture
def patched_app(app):
    smp.apply_patches(app, config=FAST)
    return app


# --- malformed queue traffic -------------------------------------------------------

#: What `junk` writes before its answer, by how the wait classifies it.
JUNK_MALFORMED = 9  # 2 raw frames, 1 that fails to unpickle, 6 that are not 2-tuples
JUNK_STALE = 4  # 2-tuples with another id, a raising __eq__, an ambiguous ==, a 16 MB payload


def test_hostile_stray_items_never_hide_the_answer(patched_app, spawn, caplog):
    table: Dict[str, Any] = {}
    managed = spawn("junk", table=table)
    command = status(patched_app, managed.pipeline_id)
    with caplog.at_level(logging.WARNING, logger="stream_manager_patches"):
        result = patched_app.handle_command(table, request_id(), managed.pipeline_id, command)
    assert result["status"] == "success", result
    assert result["echo"] == command
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events.count("malformed_response_dropped") == JUNK_MALFORMED, events
    assert events.count("stale_response_dropped") == JUNK_STALE, events
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "unpickling this stray item fails" in messages
    assert "no_such_module_smp" in messages
    # Log lines stay short even for the 16 MB payload.
    assert max(len(r.getMessage()) for r in caplog.records) < 1000
    # The pipeline is still usable: the next command finds its answer too.
    again = patched_app.handle_command(table, request_id(), managed.pipeline_id, command)
    assert again["echo"] == command


def test_junk_then_silence_is_a_clean_timeout_not_an_exception(patched_app, spawn):
    table: Dict[str, Any] = {}
    managed = spawn("junk", table=table, then_hang=True, huge_mb=1)
    started = time.monotonic()
    result = patched_app.handle_command(
        table, request_id(), managed.pipeline_id, status(patched_app, managed.pipeline_id)
    )
    assert result["error_type"] is patched_app.ErrorType.OPERATION_ERROR
    assert "did not answer" in result["public_error_message"]
    assert time.monotonic() - started < 2.0


def test_a_pipeline_stalled_mid_write_is_a_bounded_timeout(patched_app, spawn, caplog):
    # The pipeline wrote a frame header and 10 of the 1 MiB it promised, then stalled.
    # Upstream's `recv_bytes` would block for ever inside the queue's read lock.
    table: Dict[str, Any] = {}
    managed = spawn("torn_then_hang", table=table)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="stream_manager_patches"):
        result = patched_app.handle_command(
            table, request_id(), managed.pipeline_id, status(patched_app, managed.pipeline_id)
        )
    elapsed = time.monotonic() - started
    assert result["error_type"] is patched_app.ErrorType.OPERATION_ERROR, result
    assert "did not answer" in result["public_error_message"]
    assert elapsed < 2.0, elapsed
    assert "torn_response_dropped" in [getattr(r, "event", None) for r in caplog.records]
    # The queue's read lock was given back: a plain Python reader can take it at once.
    assert managed.responses_queue._rlock.acquire(timeout=1.0)
    managed.responses_queue._rlock.release()


def test_a_pipeline_dying_mid_write_is_not_found_at_once(app, spawn):
    smp.apply_patches(app, config=smp.Config())  # queue timeout 10 s
    table: Dict[str, Any] = {}
    managed = spawn("torn_then_die", table=table)
    started = time.monotonic()
    result = app.handle_command(table, request_id(), managed.pipeline_id, status(app, managed.pipeline_id))
    elapsed = time.monotonic() - started
    assert result["error_type"] is app.ErrorType.NOT_FOUND, result
    assert "is not running" in result["public_error_message"]
    assert elapsed < 0.5, elapsed


def test_get_response_skips_hostile_items_on_a_thread_queue(patched_app):
    responses: queue_module.Queue = queue_module.Queue()
    for junk in (
        None,
        42,
        ("mine",),
        ("mine", {"x": 0}, "extra"),
        (pipelines.EqualityRaises(), {"x": 0}),
        (pipelines.AmbiguousTruth(), {"x": 0}),
        ({"x": 0}, "mine"),
    ):
        responses.put(junk)
    responses.put(("mine", {"x": 1}))
    assert patched_app.get_response_ignoring_thrash(responses, "mine") == {"x": 1}


# --- odd arguments -----------------------------------------------------------------


class RaisingMapping(dict):
    def get(self, *args: Any) -> Any:
        raise LookupError("this mapping refuses lookups")


ODD_CALLS: List[Tuple[str, tuple, dict, type, str]] = [
    ("handle_command", (None, "r", "p", {}), {}, TypeError, "processes_table must be a mapping"),
    ("handle_command", ([], "r", "p", {}), {}, TypeError, "not list"),
    ("handle_command", ({"p": 42}, "r", "p", {}), {}, TypeError, "must be a ManagedInferencePipeline, not int"),
    ("handle_command", ({"p": object()}, "r", "p", {}), {}, TypeError, "missing pipeline_manager"),
    ("handle_command", (RaisingMapping(), "r", "p", {}), {}, LookupError, "refuses lookups"),
    # A queue has get(), but get("p") means get(block=True): it must be refused, not waited on.
    ("handle_command", (multiprocessing.Queue(), "r", "p", {}), {}, TypeError, "not Queue"),
    ("join_inference_pipeline", (multiprocessing.Queue(), "p"), {}, TypeError, "processes_table must be a mapping"),
    ("execute_termination", (15, None, multiprocessing.Queue()), {}, TypeError, "processes_table must be a mapping"),
    # A dict has get(), but answers get(True, timeout) at once: refused, not spun on.
    ("get_response_ignoring_thrash", ({}, "r"), {}, TypeError, "not dict"),
    ("get_response_ignoring_thrash", (None, "r"), {}, TypeError, "responses_queue must be a multiprocessing.Queue"),
    ("get_response_ignoring_thrash", (42, "r"), {}, TypeError, "not int"),
    ("get_response_ignoring_thrash", (queue_module.Queue(), "r"), {"pipeline_process": 42}, TypeError, "pipeline_process must be a multiprocessing.Process or None"),
    ("get_response_ignoring_thrash", (queue_module.Queue(),), {}, TypeError, "matching_request_id"),
    ("join_inference_pipeline", (None, "p"), {}, TypeError, "processes_table must be a mapping"),
    ("join_inference_pipeline", ({"p": 42}, "p"), {}, TypeError, "must be a ManagedInferencePipeline"),
    ("execute_termination", (15, None, None), {}, TypeError, "processes_table must be a mapping"),
    ("execute_termination", (15, None, [1, 2]), {}, TypeError, "not list"),
    ("ensure_idle_pipelines_warmed_up", ("2",), {}, TypeError, "must be an int, not str"),
    ("ensure_idle_pipelines_warmed_up", (None,), {}, TypeError, "must be an int, not NoneType"),
    ("ensure_idle_pipelines_warmed_up", (1.5,), {}, TypeError, "must be an int, not float"),
    ("ensure_idle_pipelines_warmed_up", (-1,), {}, ValueError, "must be an int >= 0, got -1"),
    ("ensure_idle_pipelines_warmed_up", (2**70,), {}, ValueError, "must be an int >= 0"),
    ("check_process_health", (1,), {}, TypeError, "positional argument"),
]


@pytest.mark.parametrize(
    "name, args, kwargs, error, message", ODD_CALLS, ids=[f"{c[0]}-{i}" for i, c in enumerate(ODD_CALLS)]
)
def test_odd_arguments_raise_a_clear_python_exception(patched_app, name, args, kwargs, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        getattr(patched_app, name)(*args, **kwargs)
    assert not smp.is_shutdown_requested(), "a rejected call must not have side effects"


@pytest.mark.parametrize("pipeline_id", [None, 7, 1.5, b"bytes", ("a", 1), "ü" * 5000, ""])
def test_odd_pipeline_ids_get_upstreams_not_found(patched_app, pipeline_id):
    result = patched_app.handle_command({}, request_id(), pipeline_id, {"type": "status"})
    assert result["error_type"] is patched_app.ErrorType.NOT_FOUND
    assert result["status"] is patched_app.OperationStatus.FAILURE


def test_non_dict_commands_still_reach_the_pipeline(patched_app, spawn):
    table: Dict[str, Any] = {}
    managed = spawn("echo", table=table)
    for command in (None, "status", 42, ["status"], {"type": None}, {"type": 3.5}):
        result = patched_app.handle_command(table, request_id(), managed.pipeline_id, command)
        assert result["echo"] == command


def test_a_panic_reaches_python_as_runtime_error_and_nothing_is_wedged(patched_app, spawn):
    with pytest.raises(RuntimeError, match="internal error in native _testing_panic: kaboom"):
        _native._testing_panic("kaboom")
    assert issubclass(RuntimeError, Exception)  # caught by the server's `except Exception`
    table: Dict[str, Any] = {}
    managed = spawn("echo", table=table)
    result = patched_app.handle_command(
        table, request_id(), managed.pipeline_id, status(patched_app, managed.pipeline_id)
    )
    assert result["status"] == "success"


def _odd_values(rng: random.Random, live: Dict[str, Any]) -> List[Any]:
    """A pool of hostile arguments, some of them real pipeline parts."""
    some_managed = next(iter(live.values()))
    return [
        None, 0, -1, 2**80, math.nan, math.inf, 1.5, True, "", "x" * rng.randint(1, 5000),
        "ü\x00", b"\xff", (), [], {}, set(), object(), object, len, RaisingMapping(),
        {"p": 42}, {"p": None}, dict(live), {"type": "status"}, {"type": object()},
        queue_module.Queue(), some_managed.responses_queue, some_managed.pipeline_manager,
        some_managed, next(iter(live)), pipelines.EqualityRaises(), pipelines.AmbiguousTruth(),
    ]


def test_randomized_call_surface_never_panics_or_hangs(app, spawn):
    """Seeded random calls of every patched function with hostile arguments, for a
    bounded time: each returns an upstream-shaped dict, returns None, or raises an
    ``Exception`` (``SystemExit`` only from ``execute_termination``)."""
    smp.apply_patches(app, config=smp.Config(queue_timeout=0.2, process_join_timeout=0.2,
                                             termination_grace_period=0.0))
    live: Dict[str, Any] = {}
    spawn("echo", table=live)
    spawn("hang", table=live)
    seed = int(os.environ.get("SMP_STRESS_SEED", "20261203"))
    rng = random.Random(seed)
    budget = float(os.environ.get("SMP_STRESS_SECONDS", "12"))
    names = ["handle_command", "get_response_ignoring_thrash", "join_inference_pipeline",
             "execute_termination", "ensure_idle_pipelines_warmed_up", "check_process_health"]
    outcomes: Dict[str, int] = {}
    deadline = time.monotonic() + budget
    calls = 0
    while time.monotonic() < deadline:
        values = _odd_values(rng, live)
        name = rng.choice(names)
        args = tuple(rng.choice(values) for _ in range(rng.randint(0, 5)))
        kwargs = {}
        if name == "get_response_ignoring_thrash" and rng.random() < 0.5:
            kwargs = {"pipeline_process": rng.choice(values), "pipeline_id": rng.choice(values)}
        if name in ("ensure_idle_pipelines_warmed_up", "check_process_health",
                    "join_inference_pipeline"):
            # Daemon loops return at once once shutdown is requested; a join of a live
            # pipeline would kill it, so those get only a shutdown-safe table.
            smp.request_shutdown()
            args = tuple({} if isinstance(a, dict) and a.keys() & live.keys() else a for a in args)
        if name == "execute_termination":
            args = tuple({} if isinstance(a, dict) and a.keys() & live.keys() else a for a in args)
        started = time.monotonic()
        try:
            result = getattr(app, name)(*args, **kwargs)
            kind = "dict" if isinstance(result, dict) else type(result).__name__
            if isinstance(result, dict) and "error_type" in result:
                assert result["status"] is app.OperationStatus.FAILURE
        except SystemExit:
            assert name == "execute_termination"
            kind = "SystemExit"
        except Exception as error:  # noqa: BLE001 - the point: a plain Exception
            kind = type(error).__name__
        except BaseException as error:  # a PanicException would land here
            raise AssertionError(f"{name}{args!r:.200} raised {type(error).__mro__}") from error
        elapsed = time.monotonic() - started
        assert elapsed < 3.0, f"{name}{args!r:.200} took {elapsed:.2f} s"
        key = f"{name}:{kind}"
        outcomes[key] = outcomes.get(key, 0) + 1
        calls += 1
        smp.reset_shutdown()
        smp.apply_patches(app, config=smp.Config(queue_timeout=0.2, process_join_timeout=0.2,
                                                 termination_grace_period=0.0))
    print(f"seed {seed}: {calls} calls in {budget} s: {sorted(outcomes.items())}")
    assert calls > 50
    # Nothing leaked into the state: the live pipelines still answer.
    echo_id = next(k for k in live if k.startswith("echo"))
    answer = app.handle_command(live, request_id(), echo_id, {"type": "status"})
    assert answer["status"] == "success", answer


# --- fork() while native threads hold locks --------------------------------------


def _child_uses_the_native_module(app_name: str, pipeline_id: str, out) -> None:  # type: ignore[no-untyped-def]
    import importlib

    app = importlib.import_module(app_name)
    smp.pipeline_states.snapshot()
    smp.pipeline_states.record_check(pipeline_id, True)
    answer = app.handle_command({}, "r", pipeline_id, {"type": "status"})
    out.put(str(answer["error_type"]))
    # put() hands the item to a feeder thread; os._exit would kill it before it writes.
    out.close()
    out.join_thread()
    os._exit(0)


def test_forked_children_do_not_deadlock_on_locks_held_by_native_threads(manager, spawn):
    """Load: the health daemon probing real pipelines, threads sending commands, and a
    native thread holding the pipeline table's lock 90% of the time. Every fork (the
    manager forks pipeline processes this way) must give a child that can use the
    native module at once."""
    for behaviour in ("echo", "echo", "slow", "hang"):
        spawn(behaviour, table=manager.table)
    manager.start_health_daemon()
    stop = threading.Event()

    def commands() -> None:
        ids = list(manager.table)
        while not stop.is_set():
            pid = random.choice(ids)
            manager.app.handle_command(manager.table, request_id(), pid, {"type": "status"})

    senders = [threading.Thread(target=commands, daemon=True) for _ in range(2)]
    for sender in senders:
        sender.start()
    _native._testing_hold_state_lock(30.0, 0.9)
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    stuck = []
    try:
        for n in range(40):
            child = context.Process(
                target=_child_uses_the_native_module,
                args=(manager.app.__name__, f"child-{n}", out),
            )
            child.start()
            child.join(timeout=10)
            if child.exitcode != 0:
                stuck.append((n, child.exitcode))
                child.kill()
                child.join()
    finally:
        stop.set()
        for sender in senders:
            sender.join(timeout=5)
    assert not stuck, f"forked children stuck or failed: {stuck}"
    answers = [out.get(timeout=5) for _ in range(40)]
    assert set(answers) == {str(manager.app.ErrorType.NOT_FOUND)}


def test_a_forked_child_gets_its_own_shutdown_signal(patched_app):
    """A child that shuts its native waits down must not wake the parent's."""
    context = multiprocessing.get_context("fork")
    child = context.Process(target=lambda: (smp.request_shutdown(), os._exit(0)))
    child.start()
    child.join(timeout=10)
    assert child.exitcode == 0
    assert not smp.is_shutdown_requested()
    # The parent's waits are not woken by the child's request: a silent queue times out.
    started = time.monotonic()
    result = patched_app.get_response_ignoring_thrash(multiprocessing.Queue(), "never")
    assert result["error_type"] is patched_app.ErrorType.OPERATION_ERROR
    assert "shutting down" not in result["public_error_message"]
    assert time.monotonic() - started >= 0.9


# --- interpreter shutdown ----------------------------------------------------------

SHUTDOWN_SCRIPT = textwrap.dedent(
    """
    import multiprocessing, os, sys, threading, time, uuid
    sys.path.insert(0, {here!r})
    import pipelines
    import stream_manager_patches as smp

    app = smp.find_target()
    smp.apply_patches(app, config=smp.Config(queue_timeout=30.0, health_check_timeout=30.0,
                                             health_check_interval=0.05))
    for behaviour in ("echo", "hang", "hang", "slow"):
        cq, rq = multiprocessing.Queue(), multiprocessing.Queue()
        p = multiprocessing.Process(target=pipelines.run, args=(behaviour, cq, rq, {{"delay": 5}}),
                                    daemon=True)
        p.start()
        pid = behaviour + "-" + uuid.uuid4().hex[:6]
        app.PROCESSES_TABLE[pid] = app.ManagedInferencePipeline(
            pipeline_id=pid, pipeline_manager=p, command_queue=cq, responses_queue=rq,
            operation_lock=threading.Lock(), is_idle=False)
    threading.Thread(target=app.check_process_health, daemon=True).start()
    for pid in list(app.PROCESSES_TABLE):
        threading.Thread(target=app.handle_command, daemon=True,
                         args=(app.PROCESSES_TABLE, uuid.uuid4().hex, pid, {{"type": "status"}})).start()
    threading.Thread(target=app.get_response_ignoring_thrash, daemon=True,
                     args=(multiprocessing.Queue(), "never")).start()
    time.sleep({delay})
    {ending}
    """
)


def _group_members(pgid: int) -> List[int]:
    """Live (non-zombie) processes of process group `pgid`."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat_file:
                fields = stat_file.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


@pytest.mark.parametrize(
    "ending, expected",
    [
        ("sys.exit(7)", 7),
        # CPython ends an unhandled KeyboardInterrupt by re-raising SIGINT on itself.
        ("raise KeyboardInterrupt", -signal.SIGINT),
        ("pass", 0),
        ("os._exit(5)", 5),
    ],
)
def test_interpreter_exit_with_daemons_and_waits_in_flight(ending, expected, tmp_path):
    script = SHUTDOWN_SCRIPT.format(here=HERE, delay=1.5, ending=ending)
    stderr_path = tmp_path / "stderr.txt"
    started = time.monotonic()
    # Own session, stderr to a file: os._exit skips multiprocessing's clean-up, so its
    # pipeline children outlive it (as they would upstream) and would hold a pipe open.
    with open(stderr_path, "w") as stderr_file:
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL,
                                stderr=stderr_file, start_new_session=True)
    try:
        returncode = proc.wait(timeout=60)
        elapsed = time.monotonic() - started
        time.sleep(0.5)  # let the last children finish exiting
        survivors = _group_members(proc.pid)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    stderr = stderr_path.read_text()
    assert returncode == expected, stderr[-3000:]
    for bad in ("Fatal Python error", "Segmentation fault", "panicked", "PanicException"):
        assert bad not in stderr, stderr[-3000:]
    # Imports take a few seconds; the exit itself must not wait for the 30 s timeouts.
    assert elapsed < 25, elapsed
    if ending != "os._exit(5)":
        # A normal exit runs multiprocessing's atexit clean-up: no pipeline outlives it.
        assert not survivors, f"processes left behind: {survivors}"


# --- apply/restore storms ----------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/status") as status_file:
        for line in status_file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_apply_restore_storm_from_threads_while_commands_run(app, spawn):
    attributes = dict(smp.PATCH_ATTRIBUTES)
    before = {name: getattr(app, attr) for name, attr in attributes.items()}
    table: Dict[str, Any] = {}
    managed = spawn("echo", table=table)
    stop = threading.Event()
    wrong: List[str] = []
    commands = [0]

    def commander() -> None:
        while not stop.is_set():
            command = {"type": "status", "pipeline_id": managed.pipeline_id, "n": commands[0]}
            answer = app.handle_command(table, request_id(), managed.pipeline_id, command)
            if answer.get("echo") != command:
                wrong.append(repr(answer)[:300])
            commands[0] += 1

    subsets = [None, ["handle_command"], ["all"], ["check_process_health", "execute_termination"],
               ["all", "manager_handler"], ["get_response_ignoring_thrash"]]

    def storm(cycles: int, seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(cycles):
            smp.apply_patches(app, only=rng.choice(subsets),
                              config=smp.Config(queue_timeout=rng.choice([1.0, 5.0, 10.0])))
            smp.restore_patches()

    storm(100, 0)  # warm up caches and allocator pools before measuring
    gc.collect()
    rss_before = _rss_mb()
    threading.Thread(target=commander, daemon=True).start()
    workers = [threading.Thread(target=storm, args=(500, seed)) for seed in range(1, 5)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=600)
    stop.set()
    elapsed = time.monotonic() - started
    smp.restore_patches()
    gc.collect()
    growth = _rss_mb() - rss_before
    print(f"2000 apply/restore cycles from 4 threads in {elapsed:.1f} s, "
          f"{commands[0]} commands alongside, RSS growth {growth:.2f} MB")
    assert not any(worker.is_alive() for worker in workers)
    assert not wrong, wrong[:3]
    assert commands[0] > 0
    assert growth < 8.0, f"RSS grew {growth:.2f} MB over 2000 cycles"
    after = {name: getattr(app, attr) for name, attr in attributes.items()}
    assert all(after[name] is before[name] for name in attributes), [
        name for name in attributes if after[name] is not before[name]
    ]
    assert not smp.is_patched()


# --- SIGTERM with daemons running, repeatedly --------------------------------------


def test_sigterm_stress_exits_zero_every_time():
    """The short form of scripts/sigterm_stress.py (100 runs there)."""
    runs = os.environ.get("SMP_SIGTERM_RUNS", "8")
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "..", "scripts", "sigterm_stress.py"), "--runs", runs],
        capture_output=True, text=True, timeout=600,
    )
    print(proc.stdout[-2000:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"{runs}/{runs} exited 0" in proc.stdout
