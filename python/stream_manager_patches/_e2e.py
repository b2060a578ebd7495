"""Driving a real stream manager: a manager process started with ``serve``, small
generated videos, an empty workflow, and upstream's own ``StreamManagerClient``.

Used by the ``demo`` command and by the end-to-end tests.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Set, Tuple

#: A workflow with no steps: runs with no model and no network.
EMPTY_WORKFLOW: Dict[str, Any] = {
    "version": "1.0",
    "inputs": [{"type": "WorkflowImage", "name": "image"}],
    "steps": [],
    "outputs": [{"type": "JsonField", "name": "image", "selector": "$inputs.image"}],
}


def make_video(path: str, seconds: float, fps: int = 30, size: Tuple[int, int] = (64, 48)) -> str:
    """Write a small MPEG-4 video of moving grey levels (needs OpenCV, which Inference has)."""
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    for i in range(int(seconds * fps)):
        writer.write(np.full((size[1], size[0], 3), (i * 7) % 255, np.uint8))
    writer.release()
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_payload(video: str, max_fps: float = 30.0) -> Any:
    """INIT payload for ``video`` played at ``max_fps`` (WAIT/LAZY buffering, so a file
    lasts its real length instead of being decoded as fast as the CPU allows)."""
    from inference.core.interfaces.stream_manager.manager_app.entities import (
        InitialisePipelinePayload,
    )

    return InitialisePipelinePayload(
        video_configuration={
            "type": "VideoConfiguration",
            "video_reference": video,
            "max_fps": max_fps,
            "source_buffer_filling_strategy": "WAIT",
            "source_buffer_consumption_strategy": "LAZY",
        },
        processing_configuration={"type": "WorkflowConfiguration", "workflow_specification": EMPTY_WORKFLOW},
        sink_configuration={"type": "MemorySinkConfiguration", "results_buffer_size": 8},
    )


@dataclass
class Timed:
    name: str
    seconds: float
    outcome: str
    value: Any = None


@dataclass
class ManagerProcess:
    """``python -m stream_manager_patches serve`` in a child process."""

    port: int
    env: Dict[str, str]
    process: Optional[subprocess.Popen] = None
    seen_children: Set[int] = field(default_factory=set)
    #: The manager's last output lines, drained continuously so that a chatty
    #: manager never blocks on a full pipe.
    output: "collections.deque[str]" = field(default_factory=lambda: collections.deque(maxlen=400))

    @classmethod
    def start(cls, patches: str = "all", extra_env: Optional[Dict[str, str]] = None, ready_timeout: float = 60.0) -> "ManagerProcess":
        port = free_port()
        env = dict(os.environ)
        env.update({"STREAM_MANAGER_PATCHES": patches, "PYTHONUNBUFFERED": "1"})
        env.update(extra_env or {})
        manager = cls(port=port, env=env)
        manager.process = subprocess.Popen(
            [sys.executable, "-m", "stream_manager_patches", "serve", "--port", str(port), "--log-level", "warning"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=manager._drain, daemon=True).start()
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            if manager.process.poll() is not None:
                raise RuntimeError(f"manager exited with {manager.process.returncode}: {manager.read_output()}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return manager
            except OSError:
                time.sleep(0.1)
        manager.kill()
        raise RuntimeError(f"manager did not listen on {port} within {ready_timeout} s")

    def client(self, operations_timeout: float = 15.0) -> Any:
        from inference.core.interfaces.stream_manager.api.stream_manager_client import (
            StreamManagerClient,
        )

        return StreamManagerClient.init(host="127.0.0.1", port=self.port, operations_timeout=operations_timeout)

    def children(self) -> Set[int]:
        """Pids of the manager's pipeline processes (multiprocessing helpers excluded)."""
        import psutil

        try:
            kids = psutil.Process(self.process.pid).children()
        except psutil.NoSuchProcess:
            return set()
        pids = set()
        for kid in kids:
            try:
                if "resource_tracker" in " ".join(kid.cmdline()):
                    continue
            except psutil.Error:
                continue
            pids.add(kid.pid)
        self.seen_children |= pids
        return pids

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> Optional[int]:
        assert self.process is not None
        self.children()
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            for pid in self.children():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.process.kill()
            self.process.wait()

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)

    def read_output(self) -> str:
        return "".join(self.output)[-5000:]


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(") ", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def timed(name: str, coroutine: Any) -> Timed:
    started = time.monotonic()
    try:
        value = asyncio.run(coroutine)
        outcome = "ok"
    except Exception as error:  # the outcome is what we report
        value = None
        outcome = type(error).__name__
    return Timed(name=name, seconds=time.monotonic() - started, outcome=outcome, value=value)
