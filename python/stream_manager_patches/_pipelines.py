"""Real pipeline processes for tests and benchmarks.

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
    "junk",  # write hostile stray items (see _write_junk), then the answer
    "ignore_sigterm",  # echo, and ignore SIGTERM
    "depleted",  # STATUS: all sources ENDED; TERMINATE: success, then exit
    "depleted_finished",  # STATUS: all sources ENDED and the inference thread finished
    "torn_then_hang",  # write part of a response frame, then stall for ever mid-write
    "torn_then_die",  # write part of a response frame, then exit abruptly mid-write
)


def _depleted_report(finished: bool) -> Dict[str, Any]:
    import sys

    # Take the constants from the manager's app module, already imported in the parent
    # we were forked from: importing Inference afresh in a forked child can take seconds
    # (or deadlock on locks held by the parent's threads).
    app = sys.modules.get("streamvision.stream_manager.manager_app.app") or sys.modules.get(
        "inference.core.interfaces.stream_manager.manager_app.app"
    )
    if app is None:
        raise RuntimeError("depleted pipelines need the stream manager app module imported first")
    StreamState = app.StreamState
    INFERENCE_THREAD_FINISHED_EVENT = app.INFERENCE_THREAD_FINISHED_EVENT
    last_event = INFERENCE_THREAD_FINISHED_EVENT if finished else "INFERENCE_THREAD_STARTED"
    return {
        "status": "success",
        "report": {
            "sources_metadata": [{"source_id": 0, "state": StreamState.ENDED}],
            "video_source_status_updates": [
                {"context": "video_consumption", "event_type": "VIDEO_ENDED"},
                {"context": "inference_pipeline", "event_type": last_event},
            ],
        },
    }


def _explode(message: str) -> None:
    raise RuntimeError(message)


class ExplodesWhenUnpickled:
    """Pickles fine; unpickling it raises (a leftover from a broken pipeline)."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (_explode, ("unpickling this stray item fails",))


class EqualityRaises:
    """A request id whose comparison raises."""

    def __eq__(self, other: object) -> bool:
        raise ValueError("cannot compare")

    __hash__ = object.__hash__


class AmbiguousTruth:
    """What numpy arrays do: ``==`` answers an object whose truth value raises."""

    class _Verdict:
        def __bool__(self) -> bool:
            raise ValueError("truth value is ambiguous")

    def __eq__(self, other: object) -> Any:
        return AmbiguousTruth._Verdict()

    __hash__ = object.__hash__


#: Bytes that are not a pickle at all, and a pickle of a class nobody can import.
NOT_A_PICKLE = b"\x00\xffthis is not a pickle"
UNIMPORTABLE_PICKLE = b"cno_such_module_smp\nThing\n(tR."
#: Number of junk items `_write_junk` writes, with `huge_mb` > 0.
JUNK_ITEMS = 13


def _write_junk(request_id: Any, responses_queue: Queue, huge_mb: int) -> None:
    # Raw frames first, under the queue's write lock, before the feeder thread exists.
    writer = responses_queue._writer  # type: ignore[attr-defined]
    with responses_queue._wlock:  # type: ignore[attr-defined]
        writer.send_bytes(NOT_A_PICKLE)
        writer.send_bytes(UNIMPORTABLE_PICKLE)
    for junk in (
        ExplodesWhenUnpickled(),
        None,
        42,
        b"raw bytes",
        (request_id,),  # right id, wrong arity
        (request_id, {"status": "success"}, "extra"),
        {"request_id": request_id},
        ({"status": "success"}, request_id),  # the wrong way round
        (EqualityRaises(), {"status": "success"}),
        (AmbiguousTruth(), {"status": "success"}),
        ("stale-huge", b"x" * (huge_mb << 20)),
    ):
        responses_queue.put(junk)


def _write_torn_frame(responses_queue: Queue) -> None:
    """What a pipeline leaves behind when it stalls or is killed while its feeder thread
    is writing a large answer: a frame header promising 1 MiB and only 10 bytes of it.
    The manager holds the pipe's write end too, so no EOF ever follows."""
    fd = responses_queue._writer.fileno()  # type: ignore[attr-defined]
    os.write(fd, (1 << 20).to_bytes(4, "big", signed=True) + b"0123456789")


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
        elif behaviour in ("depleted", "depleted_finished"):
            kind = str(getattr(command.get("type"), "value", command.get("type")))
            if kind == "terminate":
                responses_queue.put((request_id, {"status": "success"}))
                responses_queue.close()
                responses_queue.join_thread()
                return
            responses_queue.put((request_id, _depleted_report(behaviour == "depleted_finished")))
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
        elif behaviour == "torn_then_hang":
            _write_torn_frame(responses_queue)
            while True:
                time.sleep(3600)
        elif behaviour == "torn_then_die":
            _write_torn_frame(responses_queue)
            os._exit(5)
        elif behaviour == "junk":
            _write_junk(request_id, responses_queue, options.get("huge_mb", 16))
            if not options.get("then_hang", False):
                responses_queue.put((request_id, _answer(command)))
