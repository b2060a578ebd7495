"""Health daemon, termination, join and warm-up on real child processes, with the real
upstream app module (its table and lock swapped for a fresh dict and a timing lock)."""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any, Callable, Dict, List
from unittest import mock

import pytest

import stream_manager_patches as smp

from conftest import TimedLock

FAST = dict(queue_timeout=1.0, health_check_timeout=1.0, max_health_failures=3, health_check_interval=1.0)


def wait_until(predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> float:
    """Poll ``predicate``; return the seconds it took, or fail after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout} s")


def is_gone(pid: int) -> bool:
    """True when ``pid`` no longer exists, or exists only as somebody else's zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1].split()[0] == "Z" and os.getppid() != pid
    except FileNotFoundError:
        return True


@pytest.fixture
def manager(app, monkeypatch):
    """A fresh PROCESSES_TABLE and timing lock on the real module, patched with FAST."""
    table: Dict[str, Any] = {}
    lock = TimedLock()
    monkeypatch.setattr(app, "PROCESSES_TABLE", table)
    monkeypatch.setattr(app, "PROCESSES_TABLE_LOCK", lock)
    smp.apply_patches(app, config=smp.Config(**FAST))
    threads: List[threading.Thread] = []

    class Manager:
        def __init__(self) -> None:
            self.app, self.table, self.lock = app, table, lock

        def start_health_daemon(self) -> float:
            thread = threading.Thread(target=app.check_process_health, daemon=True)
            thread.start()
            threads.append(thread)
            return time.monotonic()

    yield Manager()
    smp.request_shutdown()
    for thread in threads:
        thread.join(timeout=3)
        assert not thread.is_alive(), "daemon did not stop on shutdown"


@pytest.mark.parametrize("hung", [1, 4])
def test_hung_pipelines_are_reaped_in_bounded_time_and_healthy_ones_kept(manager, spawn, hung):
    healthy = [spawn("echo", table=manager.table) for _ in range(8)]
    stuck = [spawn("hang", table=manager.table) for _ in range(hung)]
    started = manager.start_health_daemon()
    elapsed = wait_until(lambda: all(m.pipeline_id not in manager.table for m in stuck), timeout=12)
    assert elapsed <= 9.0, elapsed
    for m in stuck:
        assert m.pipeline_manager.exitcode is not None, "reaped process must be joined"
        assert is_gone(m.pipeline_manager.pid)
    assert all(m.pipeline_id in manager.table for m in healthy)
    assert all(m.pipeline_manager.is_alive() for m in healthy)
    assert manager.lock.longest < 0.05, manager.lock.longest
    assert time.monotonic() - started < 12


def test_sigkilled_pipeline_is_reaped_at_once(manager, spawn):
    keep = spawn("echo", table=manager.table)
    victim = spawn("echo", table=manager.table)
    manager.start_health_daemon()
    time.sleep(1.5)  # let the daemon settle into its healthy back-off
    os.kill(victim.pipeline_manager.pid, signal.SIGKILL)
    elapsed = wait_until(lambda: victim.pipeline_id not in manager.table, timeout=5)
    assert elapsed <= 2.5, elapsed
    assert victim.pipeline_manager.exitcode == -signal.SIGKILL
    assert keep.pipeline_id in manager.table
    assert manager.lock.longest < 0.05


@pytest.mark.parametrize("behaviour", ["depleted", "depleted_finished"])
def test_depleted_pipeline_is_terminated(manager, spawn, behaviour):
    keep = spawn("echo", table=manager.table)
    depleted = spawn(behaviour, table=manager.table)
    manager.start_health_daemon()
    elapsed = wait_until(lambda: depleted.pipeline_id not in manager.table, timeout=8)
    assert elapsed <= 5.0, elapsed
    assert not depleted.pipeline_manager.is_alive()
    if behaviour == "depleted":
        assert depleted.pipeline_manager.exitcode == 0, "it was asked to TERMINATE and did"
    assert keep.pipeline_id in manager.table


def test_idle_and_terminating_pipelines_are_not_probed(manager, spawn):
    # "deaf" never reads its queue: probed, it would fail and be reaped within ~4 s.
    idle = spawn("deaf", table=manager.table, idle=True)
    terminating = spawn("deaf", table=manager.table)
    terminating.is_terminating = True
    manager.start_health_daemon()
    time.sleep(5)
    assert idle.pipeline_id in manager.table
    assert terminating.pipeline_id in manager.table
    # ... but their RAM is still sampled every sweep, as upstream does.
    assert len(idle.ram_usage_queue) >= 3
    assert all(sample > 0 for sample in idle.ram_usage_queue)


def test_daemon_stops_promptly_on_shutdown(manager, spawn):
    spawn("echo", table=manager.table)
    thread = threading.Thread(target=manager.app.check_process_health, daemon=True)
    thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    smp.request_shutdown()
    thread.join(timeout=2)
    assert not thread.is_alive()
    assert time.monotonic() - started < 0.5


def test_health_state_is_visible_in_the_snapshot(manager, spawn):
    healthy = spawn("echo", table=manager.table)
    manager.start_health_daemon()
    wait_until(lambda: smp.pipeline_states.snapshot().get(healthy.pipeline_id, {}).get("last_check"), timeout=3)
    record = smp.pipeline_states.snapshot()[healthy.pipeline_id]
    assert record["failures"] == 0
    assert record["marked_for_removal"] is False


# --- execute_termination -------------------------------------------------------------


def test_termination_of_cooperative_pipelines_returns_as_soon_as_they_exit(manager, spawn):
    pipelines = [spawn("echo", table=manager.table) for _ in range(8)]
    with mock.patch.object(manager.app.sys, "exit") as exit_mock:
        started = time.monotonic()
        manager.app.execute_termination(signal.SIGTERM, None, processes_table=manager.table)
        elapsed = time.monotonic() - started
    exit_mock.assert_called_once_with(0)
    assert elapsed <= 0.6, elapsed
    assert manager.table == {}
    for m in pipelines:
        assert m.pipeline_manager.exitcode == -signal.SIGTERM
        assert is_gone(m.pipeline_manager.pid)


def test_termination_kills_pipelines_that_ignore_sigterm(app, monkeypatch, spawn):
    table: Dict[str, Any] = {}
    monkeypatch.setattr(app, "PROCESSES_TABLE", table)
    monkeypatch.setattr(app, "PROCESSES_TABLE_LOCK", TimedLock())
    smp.apply_patches(app, config=smp.Config(**{**FAST, "termination_grace_period": 1.0}))
    stubborn = [spawn("ignore_sigterm", table=table) for _ in range(4)]
    polite = [spawn("echo", table=table) for _ in range(4)]
    time.sleep(0.3)  # let the stubborn ones install their SIG_IGN
    with mock.patch.object(app.sys, "exit") as exit_mock:
        started = time.monotonic()
        app.execute_termination(signal.SIGTERM, None, processes_table=table)
        elapsed = time.monotonic() - started
    exit_mock.assert_called_once_with(0)
    assert 1.0 <= elapsed <= 2.0, elapsed
    assert table == {}
    for m in stubborn:
        assert m.pipeline_manager.exitcode == -signal.SIGKILL
    for m in polite:
        assert m.pipeline_manager.exitcode == -signal.SIGTERM
    assert all(is_gone(m.pipeline_manager.pid) for m in stubborn + polite)


def test_termination_stops_the_daemon_and_refuses_commands(manager, spawn):
    m = spawn("echo", table=manager.table)
    daemon = threading.Thread(target=manager.app.check_process_health, daemon=True)
    daemon.start()
    with mock.patch.object(manager.app.sys, "exit"):
        manager.app.execute_termination(signal.SIGINT, None, processes_table=manager.table)
    daemon.join(timeout=2)
    assert not daemon.is_alive()
    answer = manager.app.handle_command({m.pipeline_id: m}, "r", m.pipeline_id, {"type": "status"})
    assert answer["error_type"] is manager.app.ErrorType.OPERATION_ERROR


def test_termination_does_not_deadlock_when_the_table_lock_is_held(manager, spawn):
    spawn("echo", table=manager.table)
    manager.lock.acquire()  # e.g. the interrupted main thread was inside a locked section
    try:
        with mock.patch.object(manager.app.sys, "exit") as exit_mock:
            started = time.monotonic()
            manager.app.execute_termination(signal.SIGTERM, None, processes_table=manager.table)
        assert time.monotonic() - started < 3.5
        exit_mock.assert_called_once_with(0)
        assert manager.table == {}
    finally:
        manager.lock.release()


# --- join_inference_pipeline ---------------------------------------------------------


def test_join_returns_when_the_process_exits(manager, spawn):
    m = spawn("depleted", table=manager.table)
    answer = manager.app.handle_command(
        manager.table, "r", m.pipeline_id, {"type": manager.app.CommandType.TERMINATE}
    )
    assert answer["status"] == "success"
    started = time.monotonic()
    manager.app.join_inference_pipeline(processes_table=manager.table, pipeline_id=m.pipeline_id)
    assert time.monotonic() - started < 1.0
    assert m.pipeline_id not in manager.table
    assert m.pipeline_manager.exitcode == 0


def test_join_is_bounded_then_terminates_then_kills(app, monkeypatch, spawn):
    smp.apply_patches(app, config=smp.Config(process_join_timeout=0.5, termination_grace_period=0.5))
    table: Dict[str, Any] = {}
    polite = spawn("hang", table=table)
    stubborn = spawn("ignore_sigterm", table=table)
    time.sleep(0.3)
    started = time.monotonic()
    app.join_inference_pipeline(processes_table=table, pipeline_id=polite.pipeline_id)
    assert time.monotonic() - started < 1.5
    assert polite.pipeline_manager.exitcode == -signal.SIGTERM
    started = time.monotonic()
    app.join_inference_pipeline(processes_table=table, pipeline_id=stubborn.pipeline_id)
    assert time.monotonic() - started < 2.5
    assert stubborn.pipeline_manager.exitcode == -signal.SIGKILL
    assert table == {}


def test_join_of_an_already_removed_pipeline_is_not_an_error(manager):
    manager.app.join_inference_pipeline(processes_table=manager.table, pipeline_id="gone")


# --- ensure_idle_pipelines_warmed_up -------------------------------------------------


def warm_kwargs(app, expected: int) -> Dict[str, Any]:
    """Arguments as the generation's own start() passes them (streamvision adds its host descriptor)."""
    kwargs: Dict[str, Any] = {"expected_warmed_up_pipelines": expected}
    if hasattr(app, "resolve_host_descriptor"):
        try:
            kwargs["host_descriptor"] = app.resolve_host_descriptor(None)
        except Exception as error:  # streamvision alone ships no pipeline host
            pytest.skip(f"no pipeline host installed for this generation: {error}")
    return kwargs


@pytest.fixture
def warm_table(manager):
    yield manager.table
    smp.request_shutdown()
    for managed in list(manager.table.values()):
        managed.pipeline_manager.kill()
        managed.pipeline_manager.join(timeout=5)


@pytest.mark.slow
def test_warm_up_spawns_real_idle_pipelines_and_stops_on_shutdown(manager, warm_table):
    thread = threading.Thread(
        target=manager.app.ensure_idle_pipelines_warmed_up, kwargs=warm_kwargs(manager.app, 2), daemon=True
    )
    thread.start()
    wait_until(lambda: len(warm_table) == 2, timeout=10)
    assert all(m.is_idle for m in warm_table.values())
    assert all(m.pipeline_manager.is_alive() for m in warm_table.values())
    # A pipeline marked for removal is not part of the warm pool: a replacement comes.
    smp.pipeline_states.mark_for_removal(next(iter(warm_table)))
    time.sleep(5.5)
    assert len(warm_table) == 3
    started = time.monotonic()
    smp.request_shutdown()
    thread.join(timeout=2)
    assert not thread.is_alive()
    assert time.monotonic() - started < 0.5
    assert manager.lock.longest < 1.0


@pytest.mark.slow
def test_warm_up_respects_the_active_pipeline_limit(manager, warm_table, monkeypatch):
    monkeypatch.setattr(manager.app, "STREAM_MANAGER_MAX_ACTIVE_PIPELINES", 1, raising=False)
    thread = threading.Thread(
        target=manager.app.ensure_idle_pipelines_warmed_up, kwargs=warm_kwargs(manager.app, 3), daemon=True
    )
    thread.start()
    wait_until(lambda: len(warm_table) == 1, timeout=10)
    time.sleep(1.0)
    assert len(warm_table) == 1
    smp.request_shutdown()
    thread.join(timeout=2)
    assert not thread.is_alive()
