"""Acceptance figures of the daemons issue, patched vs upstream originals, side by side,
on real child processes against the real upstream app module:

    .venv/bin/python scripts/daemon_figures.py

Each scenario runs in its own subprocess with a watchdog, because the originals hang
or crash; a hang is reported as "hang (> N s)".
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Dict, List
from unittest import mock

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))

FAST = dict(queue_timeout=1.0, health_check_timeout=1.0, max_health_failures=3, health_check_interval=1.0)
WATCHDOG = 15.0


def spawn(app, table, behaviour):
    import pipelines

    cq, rq = multiprocessing.Queue(), multiprocessing.Queue()
    proc = multiprocessing.Process(target=pipelines.run, args=(behaviour, cq, rq, {}), daemon=True)
    proc.start()
    pid = f"{behaviour}-{uuid.uuid4().hex[:6]}"
    table[pid] = app.ManagedInferencePipeline(
        pipeline_id=pid, pipeline_manager=proc, command_queue=cq, responses_queue=rq,
        operation_lock=threading.Lock(), is_idle=False,
    )
    return table[pid]


def setup(variant: str):
    import stream_manager_patches as smp
    from conftest import TimedLock

    app = smp.find_target()
    app.PROCESSES_TABLE_LOCK = TimedLock()
    if variant == "patched":
        smp.apply_patches(app, config=smp.Config(**FAST))
    return app


def wait_for(predicate, timeout):
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return round(time.monotonic() - started, 3)
        time.sleep(0.02)
    return None


def scenario_hung(variant: str, hung: int) -> Dict[str, Any]:
    app = setup(variant)
    table = app.PROCESSES_TABLE
    for _ in range(8):
        spawn(app, table, "echo")
    stuck = [spawn(app, table, "hang") for _ in range(hung)]
    threading.Thread(target=app.check_process_health, daemon=True).start()
    took = wait_for(lambda: all(m.pipeline_id not in table for m in stuck), WATCHDOG)
    lock = app.PROCESSES_TABLE_LOCK
    held_now = time.perf_counter() - lock._acquired_at if lock.locked() else 0.0
    return {
        "all hung reaped after s": took if took is not None else f"never (> {WATCHDOG} s)",
        "longest table-lock hold s": round(max(lock.longest, held_now), 3),
    }


def scenario_sigkill(variant: str) -> Dict[str, Any]:
    app = setup(variant)
    table = app.PROCESSES_TABLE
    spawn(app, table, "echo")
    victim = spawn(app, table, "echo")
    threading.Thread(target=app.check_process_health, daemon=True).start()
    time.sleep(1.5)
    os.kill(victim.pipeline_manager.pid, signal.SIGKILL)
    took = wait_for(lambda: victim.pipeline_id not in table, WATCHDOG)
    return {"SIGKILLed pipeline reaped after s": took if took is not None else f"never (> {WATCHDOG} s)"}


def scenario_depleted(variant: str) -> Dict[str, Any]:
    app = setup(variant)
    table = app.PROCESSES_TABLE
    spawn(app, table, "echo")
    depleted = spawn(app, table, "depleted")
    threading.Thread(target=app.check_process_health, daemon=True).start()
    took = wait_for(lambda: depleted.pipeline_id not in table, WATCHDOG)
    return {"depleted pipeline terminated after s": took if took is not None else f"never (> {WATCHDOG} s)"}


def scenario_termination(variant: str, stubborn: int) -> Dict[str, Any]:
    app = setup(variant)
    table = app.PROCESSES_TABLE
    made = [spawn(app, table, "ignore_sigterm") for _ in range(stubborn)]
    made += [spawn(app, table, "echo") for _ in range(8 - stubborn)]
    time.sleep(0.3)
    started = time.monotonic()
    outcome = "exit(0)"
    with mock.patch.object(app.sys, "exit") as exit_mock:
        try:
            app.execute_termination(signal.SIGTERM, None, table)
        except Exception as error:  # the original's crash, recorded
            outcome = f"{type(error).__name__}: {error}"
        if outcome == "exit(0)" and exit_mock.call_args != mock.call(0):
            outcome = f"exit not called with 0: {exit_mock.call_args}"
    elapsed = round(time.monotonic() - started, 3)
    alive = sum(1 for m in made if m.pipeline_manager.is_alive())
    for m in made:
        if m.pipeline_manager.is_alive():
            m.pipeline_manager.kill()
    return {"termination s": elapsed, "outcome": outcome, "left alive": alive}


SCENARIOS = {
    "4 hung + 8 healthy": lambda v: scenario_hung(v, 4),
    "1 hung + 8 healthy": lambda v: scenario_hung(v, 1),
    "SIGKILLed pipeline": scenario_sigkill,
    "depleted pipeline": scenario_depleted,
    "terminate 8 cooperative": lambda v: scenario_termination(v, 0),
    "terminate 4 ignoring SIGTERM + 4 (grace 5 s)": lambda v: scenario_termination(v, 4),
}


def main() -> None:
    if len(sys.argv) == 3:
        result = SCENARIOS[sys.argv[1]](sys.argv[2])
        print("RESULT " + json.dumps(result), flush=True)
        # The originals may leave pipelines running (that is what is measured): kill
        # them, or they would hold our stdout open and outlive us.
        for child in multiprocessing.active_children():
            child.kill()
        os._exit(0)
    for name in SCENARIOS:
        for variant in ("patched", "original"):
            try:
                out = subprocess.run(
                    [sys.executable, __file__, name, variant],
                    capture_output=True, text=True, timeout=WATCHDOG + 20,
                ).stdout
                line = next((l for l in out.splitlines() if l.startswith("RESULT ")), None)
                result = json.loads(line[7:]) if line else {"error": "no result"}
            except subprocess.TimeoutExpired:
                result = {"hang": f"> {WATCHDOG + 20} s"}
            print(f"{name:46s} {variant:9s} {json.dumps(result)}", flush=True)


if __name__ == "__main__":
    main()
