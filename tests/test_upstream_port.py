"""Upstream's own behavioural tests for the command path, ported to run against the
patched functions on the real ``app`` module (the old
``inference.enterprise.stream_management`` suite, adapted to 0.54's table of
``ManagedInferencePipeline`` records). The handler tests drive upstream's real
``InferencePipelinesManagerHandler`` and real ``InferencePipelineManager`` processes;
only the socket is a stand-in, as upstream's were."""

from __future__ import annotations

import json
import multiprocessing
import threading
from typing import Any, Dict

import pytest

import stream_manager_patches as smp


@pytest.fixture
def patched_app(app):
    smp.apply_patches(app, config=smp.Config(queue_timeout=10.0))
    return app


def test_get_response_ignoring_thrash_when_nothing_is_to_ignore(patched_app):
    responses = multiprocessing.Queue()
    responses.put(("my_request", {"some": "data"}))
    result = patched_app.get_response_ignoring_thrash(
        responses_queue=responses, matching_request_id="my_request"
    )
    assert result == {"some": "data"}


def test_get_response_ignoring_thrash_when_thrash_message_is_to_be_ignored(patched_app):
    responses = multiprocessing.Queue()
    responses.put(("thrash", {"other": "data"}))
    responses.put(("my_request", {"some": "data"}))
    result = patched_app.get_response_ignoring_thrash(
        responses_queue=responses, matching_request_id="my_request"
    )
    assert result == {"some": "data"}


def test_handle_command_when_pipeline_id_is_not_registered_in_the_table(patched_app):
    result = patched_app.handle_command(
        processes_table={},
        request_id="my_request",
        pipeline_id="unknown",
        command={"type": patched_app.CommandType.RESUME},
    )
    assert result == {
        "status": patched_app.OperationStatus.FAILURE,
        "error_type": patched_app.ErrorType.NOT_FOUND,
        "public_error_message": "Could not find InferencePipeline with id=unknown.",
    }


def test_handle_command_when_pipeline_id_is_registered_in_the_table(patched_app, spawn):
    table: Dict[str, Any] = {}
    managed = spawn("mirror", table=table, pipeline_id="my_pipeline")
    result = patched_app.handle_command(
        processes_table=table,
        request_id="my_request",
        pipeline_id="my_pipeline",
        command={"type": patched_app.CommandType.RESUME},
    )
    assert result == {"type": patched_app.CommandType.RESUME}
    assert managed.pipeline_manager.is_alive()


class DummySocket:
    def __init__(self, payload: bytes) -> None:
        self._buffer = len(payload).to_bytes(length=4, byteorder="big") + payload
        self.sent = b""

    def recv(self, size: int) -> bytes:
        chunk, self._buffer = self._buffer[:size], self._buffer[size:]
        return chunk

    def sendall(self, data: bytes) -> None:
        self.sent += data

    def response(self) -> dict:
        return json.loads(self.sent[4:].decode("utf-8"))


def run_handler(app, table: Dict[str, Any], payload: Any) -> dict:
    from unittest.mock import MagicMock

    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
    sock = DummySocket(raw)
    app.InferencePipelinesManagerHandler(
        request=sock, client_address=MagicMock(), server=MagicMock(), processes_table=table
    )
    return sock.response()


@pytest.mark.parametrize("payload", [b"FOR SURE NOT A JSON", {"invalid": "data"}, {"type": "unknown"}])
def test_handler_answers_invalid_payload(patched_app, payload):
    response = run_handler(patched_app, {}, payload)
    assert response["pipeline_id"] is None
    assert response["response"]["status"] == "failure"
    assert response["response"]["error_type"] == "invalid_payload"


def test_handler_status_for_unknown_pipeline_is_not_found(patched_app):
    response = run_handler(patched_app, {}, {"type": "status", "pipeline_id": "unknown"})
    assert response["pipeline_id"] == "unknown"
    assert response["response"]["error_type"] == "not_found"


@pytest.mark.slow
def test_handler_init_with_malformed_payload_then_list_then_terminate(patched_app):
    """Real InferencePipelineManager process: failed INIT, LIST, TERMINATE, joined and removed."""
    table: Dict[str, Any] = {}
    try:
        init = run_handler(patched_app, table, {"type": "init"})
        assert len(table) == 1
        assert isinstance(init["pipeline_id"], str)
        assert init["response"]["status"] == "failure"
        assert init["response"]["error_type"] == "invalid_payload"

        listing = run_handler(patched_app, table, {"type": "list_pipelines"})
        assert listing["response"]["status"] == "success"
        assert listing["response"]["pipelines"] == [init["pipeline_id"]]

        terminate = run_handler(
            patched_app, table, {"type": "terminate", "pipeline_id": init["pipeline_id"]}
        )
        assert terminate["pipeline_id"] == init["pipeline_id"]
        assert terminate["response"]["status"] == "success"
        assert table == {}
    finally:
        for managed in list(table.values()):
            managed.pipeline_manager.kill()
            managed.pipeline_manager.join(timeout=5)
