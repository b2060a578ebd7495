from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional

import pytest

import stream_manager_patches as smp
from stream_manager_patches import _native

import pipelines

#: The upstream app module under test. The default is the pinned inference 0.54.1;
#: SMP_TARGET_MODULE=streamvision.stream_manager.manager_app.app runs the suites that do
#: not need inference-specific pipelines against inference >= 1.8 (see README).
TARGET = os.environ.get("SMP_TARGET_MODULE", "inference.core.interfaces.stream_manager.manager_app.app")


@pytest.fixture(scope="session")
def app():
    """The real upstream stream manager ``app`` module."""
    import importlib

    return importlib.import_module(TARGET)


@pytest.fixture(autouse=True)
def _clean_global_state() -> Iterator[None]:
    yield
    smp.restore_patches()
    smp.reset_shutdown()
    smp.pipeline_states.clear()
    smp.reset_metrics()


@pytest.fixture
def spawn(app) -> Iterator[Callable[..., Any]]:
    """Start real pipeline processes; returns upstream ``ManagedInferencePipeline``s.

    Every process started here is killed and reaped after the test.
    """
    made: List[Any] = []

    def _spawn(
        behaviour: str = "echo",
        *,
        table: Optional[Dict[str, Any]] = None,
        pipeline_id: Optional[str] = None,
        idle: bool = False,
        **options: Any,
    ):
        command_queue: multiprocessing.Queue = multiprocessing.Queue()
        responses_queue: multiprocessing.Queue = multiprocessing.Queue()
        process = multiprocessing.Process(
            target=pipelines.run,
            args=(behaviour, command_queue, responses_queue, options),
            daemon=True,
        )
        process.start()
        pid = pipeline_id or f"{behaviour}-{uuid.uuid4().hex[:8]}"
        managed = app.ManagedInferencePipeline(
            pipeline_id=pid,
            pipeline_manager=process,
            command_queue=command_queue,
            responses_queue=responses_queue,
            operation_lock=threading.Lock(),
            is_idle=idle,
        )
        if table is not None:
            table[pid] = managed
        made.append(managed)
        return managed

    yield _spawn
    for managed in made:
        process = managed.pipeline_manager
        if process.is_alive():
            os.kill(process.pid, signal.SIGKILL)
        process.join(timeout=5)
        for queue in (managed.command_queue, managed.responses_queue):
            queue.close()
            queue.cancel_join_thread()


class TimedLock:
    """A stand-in for ``PROCESSES_TABLE_LOCK`` that records how long it is held."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._acquired_at = 0.0
        self.holds: List[float] = []

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        if got:
            self._acquired_at = time.perf_counter()
        return got

    def release(self) -> None:
        self.holds.append(time.perf_counter() - self._acquired_at)
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()

    __enter__ = acquire

    def __exit__(self, *exc: Any) -> None:
        self.release()

    @property
    def longest(self) -> float:
        return max(self.holds, default=0.0)


def request_id() -> str:
    return uuid.uuid4().hex
