"""The native command path against the real upstream app module and real child processes."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import queue as queue_module
import signal
import threading
import time
from typing import Any, Dict, List

import pytest

import stream_manager_patches as smp

from conftest import request_id

FAST = smp.Config(queue_timeout=1.0)


def error(app, kind: str, message: str) -> dict:
    return app.describe_error(
        exception=None, error_type=getattr(app.ErrorType, kind), public_error_message=message
    )


def status_command(app, pipeline_id: str) -> dict:
    return {"type": app.CommandType.STATUS, "pipeline_id": pipeline_id}


@pytest.fixture
def patched_app(app):
    smp.apply_patches(app, config=FAST)
    return app


def test_unknown_pipeline_is_not_found_exactly_like_upstream(app):
    original = app.handle_command
    expected = original(
        processes_table={}, request_id="r", pipeline_id="nope", command={"type": "status"}
    )
    smp.apply_patches(app, config=FAST)
    result = app.handle_command(
        processes_table={}, request_id="r", pipeline_id="nope", command={"type": "status"}
    )
    assert result == expected
    assert result == error(app, "NOT_FOUND", "Could not find InferencePipeline with id=nope.")
    assert result["error_type"] is app.ErrorType.NOT_FOUND
    assert result["status"] is app.OperationStatus.FAILURE


def test_echo_round_trip(patched_app, spawn):
    table: Dict[str, Any] = {}
    managed = spawn("echo", table=table)
    command = status_command(patched_app, managed.pipeline_id)
    result = patched_app.handle_command(table, request_id(), managed.pipeline_id, command)
    assert result["status"] == "success"
    assert result["echo"] == command
    assert result["pid"] == managed.pipeline_manager.pid


def test_hung_pipeline_returns_operation_error_within_bound(patched_app, spawn):
    table: Dict[str, Any] = {}
    managed = spawn("hang", table=table)
    started = time.monotonic()
    result = patched_app.handle_command(
        table, request_id(), managed.pipeline_id, status_command(patched_app, managed.pipeline_id)
    )
    elapsed = time.monotonic() - started
    assert result["error_type"] is patched_app.ErrorType.OPERATION_ERROR
    assert "did not answer within 1.000 s" in result["public_error_message"]
    assert 0.95 <= elapsed <= 1.5, elapsed
    # The lock was released: the next command is not "busy", it times out again.
    again = patched_app.handle_command(
        table, request_id(), managed.pipeline_id, status_command(patched_app, managed.pipeline_id)
    )
    assert "did not answer" in again["public_error_message"]


def test_pipeline_dying_mid_request_is_not_found_fast_with_default_timeout(app, spawn):
    smp.apply_patches(app, config=smp.Config())  # queue timeout 10 s
    table: Dict[str, Any] = {}
    managed = spawn("die", table=table)
    started = time.monotonic()
    result = app.handle_command(
        table, request_id(), managed.pipeline_id, status_command(app, managed.pipeline_id)
    )
    elapsed = time.monotonic() - started
    assert result == error(
        app, "NOT_FOUND", f"InferencePipeline with id={managed.pipeline_id} is not running."
    )
    assert elapsed <= 0.5, elapsed


def test_answer_written_just_before_death_is_delivered(patched_app, spawn):
    table: Dict[str, Any] = {}
    managed = spawn("answer_then_die", table=table)
    command = status_command(patched_app, managed.pipeline_id)
    result = patched_app.handle_command(table, request_id(), managed.pipeline_id, command)
    assert result["status"] == "success"
    assert result["echo"] == command
    managed.pipeline_manager.join(timeout=5)
    assert managed.pipeline_manager.exitcode == 4


def test_already_dead_process_is_reported_without_touching_queues(patched_app, spawn):
    table: Dict[str, Any] = {}
    managed = spawn("echo", table=table)
    os.kill(managed.pipeline_manager.pid, signal.SIGKILL)
    managed.pipeline_manager.join(timeout=5)
    started = time.monotonic()
    result = patched_app.handle_command(
        table, request_id(), managed.pipeline_id, status_command(patched_app, managed.pipeline_id)
    )
    assert time.monotonic() - started < 0.2
    assert result["error_type"] is patched_app.ErrorType.NOT_FOUND
    assert "is not running" in result["public_error_message"]
    with pytest.raises(queue_module.Empty):
        managed.command_queue.get(timeout=0.2)


def test_pipeline_marked_for_removal_is_refused_without_touching_queues(patched_app, spawn):
    table: Dict[str, Any] = {}
    managed = spawn("deaf", table=table)
    smp.pipeline_states.mark_for_removal(managed.pipeline_id)
    result = patched_app.handle_command(
        table, request_id(), managed.pipeline_id, status_command(patched_app, managed.pipeline_id)
    )
    assert result == error(
        patched_app,
        "OPERATION_ERROR",
        f"InferencePipeline with id={managed.pipeline_id} is being removed.",
    )
    with pytest.raises(queue_module.Empty):
        managed.command_queue.get(timeout=0.3)


def test_terminating_pipeline_accepts_only_terminate(patched_app, spawn):
    table: Dict[str, Any] = {}
    managed = spawn("echo", table=table)
    managed.is_terminating = True
    refused = patched_app.handle_command(
        table, request_id(), managed.pipeline_id, status_command(patched_app, managed.pipeline_id)
    )
    assert refused["error_type"] is patched_app.ErrorType.OPERATION_ERROR
    assert "being terminated" in refused["public_error_message"]
    terminate = {"type": patched_app.CommandType.TERMINATE, "pipeline_id": managed.pipeline_id}
    accepted = patched_app.handle_command(table, request_id(), managed.pipeline_id, terminate)
    assert accepted["status"] == "success"


def test_operation_lock_is_taken_with_a_bound(app, spawn):
    smp.apply_patches(app, config=smp.Config(queue_timeout=0.5))
    table: Dict[str, Any] = {}
    managed = spawn("deaf", table=table)
    with managed.operation_lock:
        started = time.monotonic()
        result = app.handle_command(
            table, request_id(), managed.pipeline_id, status_command(app, managed.pipeline_id)
        )
        elapsed = time.monotonic() - started
    assert result["error_type"] is app.ErrorType.OPERATION_ERROR
    assert "is busy" in result["public_error_message"]
    assert 0.45 <= elapsed <= 1.0, elapsed
    with pytest.raises(queue_module.Empty):
        managed.command_queue.get(timeout=0.2)


def test_stale_and_malformed_answers_are_dropped_and_logged(patched_app, spawn, caplog):
    table: Dict[str, Any] = {}
    managed = spawn("flood", table=table, stale=200)
    command = status_command(patched_app, managed.pipeline_id)
    with caplog.at_level(logging.WARNING, logger="stream_manager_patches"):
        result = patched_app.handle_command(table, request_id(), managed.pipeline_id, command)
    assert result["echo"] == command
    events = [getattr(r, "event", None) for r in caplog.records]
    assert events.count("stale_response_dropped") == 200
    assert events.count("malformed_response_dropped") == 5
    stale = next(r for r in caplog.records if r.event == "stale_response_dropped")
    assert stale.pipeline_id == managed.pipeline_id
    assert "Dropping response for request_id='stale-0'" in stale.getMessage()


def test_eight_threads_hammering_one_pipeline_each_get_their_own_answer(patched_app, spawn):
    smp.apply_patches(patched_app, config=smp.Config(queue_timeout=10.0))
    table: Dict[str, Any] = {}
    managed = spawn("echo", table=table)
    failures: List[str] = []

    def worker(worker_id: int) -> None:
        for n in range(50):
            command = {"type": "status", "pipeline_id": managed.pipeline_id, "token": f"{worker_id}-{n}"}
            answer = patched_app.handle_command(table, request_id(), managed.pipeline_id, command)
            if answer.get("echo", {}).get("token") != command["token"]:
                failures.append(f"{command['token']} got {answer}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert failures == []


def test_other_python_threads_run_while_a_command_waits(patched_app, spawn):
    table: Dict[str, Any] = {}
    managed = spawn("hang", table=table)
    ticks = 0
    stop = threading.Event()

    def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            time.sleep(0.001)

    thread = threading.Thread(target=ticker)
    thread.start()
    try:
        patched_app.handle_command(
            table, request_id(), managed.pipeline_id, status_command(patched_app, managed.pipeline_id)
        )
    finally:
        stop.set()
        thread.join()
    # ~1000 ticks are possible in the 1 s wait; a held GIL would allow almost none.
    assert ticks > 200, ticks


def test_error_answers_dispatch_unchanged_in_the_real_client(patched_app, spawn):
    import importlib

    from conftest import TARGET

    api = TARGET[: -len(".manager_app.app")] + ".api"  # the client that ships with the target
    errors = importlib.import_module(api + ".errors")
    dispatch_error = importlib.import_module(api + ".stream_manager_client").dispatch_error

    table: Dict[str, Any] = {}
    hung = spawn("hang", table=table)
    cases = [
        (patched_app.handle_command({}, "r", "missing", {"type": "status"}), errors.ProcessesManagerNotFoundError),
        (
            patched_app.handle_command(table, "r", hung.pipeline_id, status_command(patched_app, hung.pipeline_id)),
            errors.ProcessesManagerOperationError,
        ),
    ]
    for response, expected in cases:
        wire = json.loads(patched_app.prepare_response(request_id="r", response=response, pipeline_id="p"))
        with pytest.raises(expected) as raised:
            dispatch_error(error_response=wire)
        assert response["public_error_message"] in raised.value.public_message


def test_shutdown_ends_waits_in_flight_and_refuses_new_commands(app, spawn):
    smp.apply_patches(app, config=smp.Config(queue_timeout=30.0))
    table: Dict[str, Any] = {}
    managed = spawn("hang", table=table)
    results: List[dict] = []
    waiter = threading.Thread(
        target=lambda: results.append(
            app.handle_command(table, request_id(), managed.pipeline_id, status_command(app, managed.pipeline_id))
        )
    )
    waiter.start()
    time.sleep(0.3)
    started = time.monotonic()
    smp.request_shutdown()
    waiter.join(timeout=5)
    assert not waiter.is_alive()
    assert time.monotonic() - started < 0.5
    assert "shutting down" in results[0]["public_error_message"]
    later = app.handle_command(table, request_id(), managed.pipeline_id, status_command(app, managed.pipeline_id))
    assert later["error_type"] is app.ErrorType.OPERATION_ERROR
    assert "shutting down" in later["public_error_message"]


def test_closed_queue_is_an_operation_error(patched_app, spawn):
    table: Dict[str, Any] = {}
    managed = spawn("hang", table=table)
    managed.command_queue.close()
    result = patched_app.handle_command(
        table, request_id(), managed.pipeline_id, status_command(patched_app, managed.pipeline_id)
    )
    assert result["error_type"] is patched_app.ErrorType.OPERATION_ERROR
    assert "closed" in result["public_error_message"]


def test_bad_table_is_a_clear_type_error(patched_app):
    with pytest.raises(TypeError, match="processes_table must be a mapping"):
        patched_app.handle_command(None, "r", "p", {"type": "status"})


# --- get_response_ignoring_thrash ---------------------------------------------------


def test_get_response_accepts_the_streamvision_keywords(patched_app, spawn):
    managed = spawn("die")
    rid = request_id()
    managed.command_queue.put((rid, {"type": "status"}))
    started = time.monotonic()
    result = patched_app.get_response_ignoring_thrash(
        managed.responses_queue,
        rid,
        pipeline_process=managed.pipeline_manager,
        pipeline_id=managed.pipeline_id,
    )
    assert time.monotonic() - started < 0.5
    assert result == error(
        patched_app, "NOT_FOUND", f"InferencePipeline with id={managed.pipeline_id} is not running."
    )


def test_get_response_without_process_finds_the_owner_in_the_processes_table(patched_app, spawn):
    managed = spawn("die", table=patched_app.PROCESSES_TABLE)
    try:
        rid = request_id()
        managed.command_queue.put((rid, {"type": "init"}))
        started = time.monotonic()
        result = patched_app.get_response_ignoring_thrash(
            responses_queue=managed.responses_queue, matching_request_id=rid
        )
        assert time.monotonic() - started < 0.5
        assert "is not running" in result["public_error_message"]
        assert managed.pipeline_id in result["public_error_message"]
    finally:
        patched_app.PROCESSES_TABLE.pop(managed.pipeline_id, None)


def test_get_response_on_an_unowned_silent_queue_times_out(patched_app):
    responses = multiprocessing.Queue()
    started = time.monotonic()
    result = patched_app.get_response_ignoring_thrash(responses, "never")
    assert 0.95 <= time.monotonic() - started <= 1.5
    assert result["error_type"] is patched_app.ErrorType.OPERATION_ERROR


def test_get_response_works_with_a_plain_thread_queue(patched_app):
    responses: queue_module.Queue = queue_module.Queue()
    responses.put(("other", {"x": 1}))
    responses.put(("mine", {"x": 2}))
    assert patched_app.get_response_ignoring_thrash(responses, "mine") == {"x": 2}
    started = time.monotonic()
    result = patched_app.get_response_ignoring_thrash(responses, "mine")
    assert 0.95 <= time.monotonic() - started <= 1.5
    assert result["error_type"] is patched_app.ErrorType.OPERATION_ERROR
