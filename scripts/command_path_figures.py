"""Print the foundation issue's acceptance figures, measured on real child processes
against the real upstream app module:

    .venv/bin/python scripts/command_path_figures.py
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

import pipelines  # noqa: E402

import stream_manager_patches as smp  # noqa: E402


def spawn(app, behaviour):
    cq, rq = multiprocessing.Queue(), multiprocessing.Queue()
    proc = multiprocessing.Process(target=pipelines.run, args=(behaviour, cq, rq, {}), daemon=True)
    proc.start()
    pid = f"{behaviour}-{uuid.uuid4().hex[:6]}"
    return pid, app.ManagedInferencePipeline(
        pipeline_id=pid, pipeline_manager=proc, command_queue=cq, responses_queue=rq,
        operation_lock=threading.Lock(), is_idle=False,
    )


def timed(app, table, pid):
    started = time.perf_counter()
    answer = app.handle_command(table, uuid.uuid4().hex, pid, {"type": "status", "pipeline_id": pid})
    return time.perf_counter() - started, answer


def main() -> None:
    app = smp.find_target()
    before = {name: getattr(app, smp.PATCH_ATTRIBUTES[name]) for name in smp.PATCH_NAMES}

    smp.apply_patches(app, config=smp.Config(queue_timeout=1.0))
    pid, managed = spawn(app, "hang")
    hung = [timed(app, {pid: managed}, pid) for _ in range(5)]
    managed.pipeline_manager.kill()
    print(f"hung pipeline, QUEUE_TIMEOUT=1: {[round(t, 3) for t, _ in hung]} s "
          f"-> {hung[0][1]['error_type'].value}")

    smp.apply_patches(app, config=smp.Config())
    died = []
    for _ in range(10):
        pid, managed = spawn(app, "die")
        elapsed, answer = timed(app, {pid: managed}, pid)
        died.append(elapsed)
    print(f"pipeline dying mid-request, default timeout (10 s): median {statistics.median(died)*1e3:.1f} ms, "
          f"max {max(died)*1e3:.1f} ms -> {answer['error_type'].value}")

    pid, managed = spawn(app, "echo")
    trips = sorted(timed(app, {pid: managed}, pid)[0] for _ in range(500))
    managed.pipeline_manager.kill()
    print(f"echo round trip (500): p50 {trips[250]*1e6:.0f} us, p99 {trips[495]*1e6:.0f} us")

    smp.restore_patches()
    same = all(getattr(app, smp.PATCH_ATTRIBUTES[name]) is before[name] for name in smp.PATCH_NAMES)
    print(f"after restore_patches(), every patched attribute is the original (is): {same}")


if __name__ == "__main__":
    main()
