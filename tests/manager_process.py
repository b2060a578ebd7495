"""A stream manager process for process-level tests: the real app module, patched,
with its real signal wiring (as ``app.start()`` does), both daemons running, and the
main thread busy sending commands, so a signal lands while requests are in flight.

    python tests/manager_process.py echo,echo,hang,ignore_sigterm

Prints one JSON line with the pipeline pids, then runs until signalled.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sys
import threading
import uuid
from functools import partial

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pipelines  # noqa: E402

import stream_manager_patches as smp  # noqa: E402


def main() -> None:
    app = smp.find_target()
    smp.apply_patches(
        app,
        config=smp.Config(queue_timeout=1.0, health_check_timeout=1.0, termination_grace_period=1.0),
    )
    for behaviour in sys.argv[1].split(","):
        command_queue, responses_queue = multiprocessing.Queue(), multiprocessing.Queue()
        process = multiprocessing.Process(
            target=pipelines.run, args=(behaviour, command_queue, responses_queue, {})
        )
        process.start()
        pipeline_id = f"{behaviour}-{uuid.uuid4().hex[:6]}"
        app.PROCESSES_TABLE[pipeline_id] = app.ManagedInferencePipeline(
            pipeline_id=pipeline_id,
            pipeline_manager=process,
            command_queue=command_queue,
            responses_queue=responses_queue,
            operation_lock=threading.Lock(),
            is_idle=False,
        )
    # Exactly upstream start()'s wiring, minus the TCP server.
    signal.signal(signal.SIGINT, partial(app.execute_termination, processes_table=app.PROCESSES_TABLE))
    signal.signal(signal.SIGTERM, partial(app.execute_termination, processes_table=app.PROCESSES_TABLE))
    threading.Thread(target=app.check_process_health, daemon=True).start()
    threading.Thread(
        target=partial(app.ensure_idle_pipelines_warmed_up, expected_warmed_up_pipelines=0),
        daemon=True,
    ).start()
    pids = [m.pipeline_manager.pid for m in app.PROCESSES_TABLE.values()]
    print(json.dumps({"manager": os.getpid(), "pipelines": pids}), flush=True)
    ids = list(app.PROCESSES_TABLE)
    n = 0
    while True:
        pipeline_id = ids[n % len(ids)]
        n += 1
        app.handle_command(
            app.PROCESSES_TABLE, uuid.uuid4().hex, pipeline_id, {"type": "status", "pipeline_id": pipeline_id}
        )


if __name__ == "__main__":
    main()
