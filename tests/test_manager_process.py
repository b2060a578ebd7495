"""Process level: a patched manager receiving SIGTERM/SIGINT exits 0 and leaves no child."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from test_daemons import is_gone

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "manager_process.py")


def start_manager(behaviours: str) -> "tuple[subprocess.Popen, dict]":
    proc = subprocess.Popen(
        [sys.executable, SCRIPT, behaviours],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise AssertionError(f"manager did not start: {proc.stderr.read()[-3000:]}")
    return proc, json.loads(line)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_manager_exits_zero_and_leaves_no_child(sig):
    proc, info = start_manager("echo,echo,slow,hang,ignore_sigterm,deaf")
    try:
        time.sleep(2.0)  # daemons sweeping, commands in flight, probes pending
        started = time.monotonic()
        proc.send_signal(sig)
        rc = proc.wait(timeout=15)
        elapsed = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read()
    assert rc == 0, stderr[-3000:]
    # grace 1 s for the SIGTERM-ignoring one, + slack for a busy 2-core machine
    assert elapsed < 4.0, elapsed
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not all(is_gone(pid) for pid in info["pipelines"]):
        time.sleep(0.05)
    assert all(is_gone(pid) for pid in info["pipelines"]), info
