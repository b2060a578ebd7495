"""The whole real stack: a patched manager process (``serve``), real
``InferencePipelineManager`` pipelines on a generated video with an empty workflow,
and upstream's ``StreamManagerClient`` over TCP."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from typing import Iterator

import pytest

from stream_manager_patches import _e2e

pytestmark = pytest.mark.slow

QUEUE_TIMEOUT = 10.0


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("videos")
    return {
        "short": _e2e.make_video(str(folder / "short.mp4"), seconds=2.0),
        "long": _e2e.make_video(str(folder / "long.mp4"), seconds=60.0),
    }


@pytest.fixture(scope="module")
def manager() -> Iterator[_e2e.ManagerProcess]:
    manager = _e2e.ManagerProcess.start(
        patches="all,server", extra_env={"STREAM_MANAGER_QUEUE_TIMEOUT": str(QUEUE_TIMEOUT)}
    )
    yield manager
    manager.kill()


def within_bound(step: _e2e.Timed) -> None:
    assert step.outcome != "ConnectivityError", step
    assert step.seconds <= QUEUE_TIMEOUT + 2, step


def test_video_end_keeps_the_manager_answering(manager, videos):
    client = manager.client()
    init = _e2e.timed("init", client.initialise_pipeline(initialisation_request=_e2e.init_payload(videos["short"])))
    assert init.outcome == "ok", init
    pipeline_id = init.value.context.pipeline_id
    status = _e2e.timed("status", client.get_status(pipeline_id))
    assert status.outcome == "ok"
    consume = _e2e.timed("consume", client.consume_pipeline_result(pipeline_id, excluded_fields=["image"]))
    assert consume.outcome == "ok"
    # Poll through the end of the 2 s video and beyond: every answer comes, fast.
    until = time.monotonic() + 7
    outcomes = set()
    while time.monotonic() < until:
        step = _e2e.timed("status", client.get_status(pipeline_id))
        within_bound(step)
        outcomes.add(step.outcome)
        listing = _e2e.timed("list", client.list_pipelines())
        within_bound(listing)
        assert listing.outcome == "ok"
        time.sleep(0.05)
    # The depleted pipeline was terminated by the health daemon and is gone.
    assert step.outcome == "ProcessesManagerNotFoundError", outcomes
    assert pipeline_id not in _e2e.timed("list", client.list_pipelines()).value.pipelines


def test_terminate_through_the_client(manager, videos):
    client = manager.client()
    init = _e2e.timed("init", client.initialise_pipeline(initialisation_request=_e2e.init_payload(videos["long"])))
    assert init.outcome == "ok", init
    pipeline_id = init.value.context.pipeline_id
    terminate = _e2e.timed("terminate", client.terminate_pipeline(pipeline_id))
    within_bound(terminate)
    assert terminate.outcome == "ok", terminate
    assert pipeline_id not in _e2e.timed("list", client.list_pipelines()).value.pipelines
    again = _e2e.timed("terminate again", client.terminate_pipeline(pipeline_id))
    assert again.outcome == "ProcessesManagerNotFoundError"


def test_pipeline_sigkilled_mid_stream_is_reported_and_reaped(manager, videos):
    client = manager.client()
    before = manager.children()
    init = _e2e.timed("init", client.initialise_pipeline(initialisation_request=_e2e.init_payload(videos["long"])))
    assert init.outcome == "ok", init
    pipeline_id = init.value.context.pipeline_id
    (victim,) = manager.children() - before
    assert _e2e.timed("status", client.get_status(pipeline_id)).outcome == "ok"
    os.kill(victim, signal.SIGKILL)
    killed = time.monotonic()
    status = _e2e.timed("status", client.get_status(pipeline_id))
    within_bound(status)
    assert status.outcome == "ProcessesManagerNotFoundError"
    while pipeline_id in _e2e.timed("list", client.list_pipelines()).value.pipelines:
        assert time.monotonic() - killed < 3, "killed pipeline still listed"
        time.sleep(0.02)
    assert not _e2e.pid_alive(victim)


def raw_request(port: int, payload: bytes, timeout: float = 5.0) -> dict:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(len(payload).to_bytes(4, "big") + payload)
        header = s.recv(4)
        size = int.from_bytes(header, "big")
        data = b""
        while len(data) < size:
            chunk = s.recv(size - len(data))
            if not chunk:
                break
            data += chunk
    return json.loads(data)


@pytest.mark.parametrize("payload", [b"not json at all", b'{"no_type": 1}', b'{"type": "teleport"}'])
def test_malformed_payloads_get_invalid_payload_and_the_manager_stays_up(manager, payload):
    answer = raw_request(manager.port, payload)
    assert answer["response"]["status"] == "failure"
    assert answer["response"]["error_type"] == "invalid_payload"
    assert _e2e.timed("list", manager.client().list_pipelines()).outcome == "ok"


def test_list_answers_fast_while_another_client_waits_on_a_slow_pipeline(manager, videos):
    # INIT of a real pipeline takes seconds (workflow compilation in the child).
    slow = {}
    waiter = threading.Thread(
        target=lambda: slow.setdefault(
            "init",
            _e2e.timed("init", manager.client().initialise_pipeline(initialisation_request=_e2e.init_payload(videos["long"]))),
        )
    )
    waiter.start()
    time.sleep(0.5)
    assert waiter.is_alive(), "INIT finished too fast to prove anything"
    fast = [_e2e.timed("list", manager.client().list_pipelines()) for _ in range(5)]
    waiter.join(timeout=30)
    assert all(step.outcome == "ok" for step in fast)
    assert max(step.seconds for step in fast) < 0.1, [round(s.seconds, 4) for s in fast]
    assert slow["init"].outcome == "ok"
    _e2e.timed("terminate", manager.client().terminate_pipeline(slow["init"].value.context.pipeline_id))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_manager_exits_zero_on_signal_and_leaves_no_child(videos, sig):
    manager = _e2e.ManagerProcess.start(patches="all")
    try:
        client = manager.client()
        for _ in range(2):
            init = _e2e.timed("init", client.initialise_pipeline(initialisation_request=_e2e.init_payload(videos["long"])))
            assert init.outcome == "ok", init
        children = manager.children()
        assert len(children) >= 2
        started = time.monotonic()
        rc = manager.stop(sig)
        assert rc == 0, manager.read_output()
        assert time.monotonic() - started < 10
        deadline = time.monotonic() + 3
        while any(_e2e.pid_alive(pid) for pid in children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_e2e.pid_alive(pid) for pid in manager.seen_children)
    finally:
        manager.kill()
