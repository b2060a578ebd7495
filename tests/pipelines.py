"""Real pipeline processes for tests.

Each behaviour runs in a real ``multiprocessing.Process`` and speaks the stream
manager's protocol: it reads ``(request_id, command)`` from ``command_queue`` and
writes ``(request_id, response)`` to ``responses_queue``.
"""

from __future__ import annotations

import os
import signal
import time
from multiprocessing import Queue
from typing import Any, Dict

BEHAVIOURS = (
    "echo",  # answer {"status": "success", "echo": command, "pid": pid}
    "mirror",  # answer the command itself (upstream's DummyPipelineManager)
    "slow",  # answer after options["delay"] seconds
    "hang",  # read commands, never answer
    "deaf",  # never read the command queue
    "die",  # exit abruptly on the first command, without answering
    "answer_then_die",  # answer, flush, then exit abruptly
    "flood",  # write options["stale"] stale answers and malformed items, then the answer
    "ignore_sigterm",  # echo, and ignore SIGTERM
)


def _answer(command: Any) -> Dict[str, Any]:
    return {"status": "success", "echo": command, "pid": os.getpid()}


def run(behaviour: str, command_queue: Queue, responses_queue: Queue, options: Dict[str, Any]) -> None:
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {behaviour}")
    if behaviour == "ignore_sigterm":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if behaviour == "deaf":
        while True:
            time.sleep(3600)
    while True:
        request_id, command = command_queue.get()
        if behaviour in ("echo", "ignore_sigterm"):
            responses_queue.put((request_id, _answer(command)))
        elif behaviour == "mirror":
            responses_queue.put((request_id, command))
        elif behaviour == "slow":
            time.sleep(options.get("delay", 0.5))
            responses_queue.put((request_id, _answer(command)))
        elif behaviour == "hang":
            continue
        elif behaviour == "die":
            os._exit(3)
        elif behaviour == "answer_then_die":
            responses_queue.put((request_id, _answer(command)))
            # Make sure the bytes are in the pipe before dying, like a pipeline that
            # answered and crashed right after.
            responses_queue.close()
            responses_queue.join_thread()
            os._exit(4)
        elif behaviour == "flood":
            for index in range(options.get("stale", 100)):
                responses_queue.put((f"stale-{index}", {"status": "success", "stale": index}))
            for junk in (None, "garbage", (1, 2, 3), ["only-one"], {"request_id": request_id}):
                responses_queue.put(junk)
            responses_queue.put((request_id, _answer(command)))
