"""Metrics, Prometheus exposition, structured logs and adaptive timeouts, verified
against real commands on real child processes."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Dict

import pytest

import stream_manager_patches as smp

from conftest import request_id


def send(app, table, managed) -> dict:
    return app.handle_command(
        table, request_id(), managed.pipeline_id, {"type": app.CommandType.STATUS, "pipeline_id": managed.pipeline_id}
    )


def parse(text: str) -> Dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    return {family.name: family for family in text_string_to_metric_families(text)}


def test_summary_counts_real_commands_and_timeouts(app, spawn):
    smp.apply_patches(app, config=smp.Config(queue_timeout=0.5))
    table: Dict[str, Any] = {}
    echo = spawn("echo", table=table)
    hang = spawn("hang", table=table)
    for _ in range(20):
        assert send(app, table, echo)["status"] == "success"
    for _ in range(2):
        assert send(app, table, hang)["error_type"] is app.ErrorType.OPERATION_ERROR
    app.handle_command(table, "r", "missing", {"type": "status"})

    summary = smp.performance_summary()
    assert summary["total_commands"] == 23
    assert summary["successful_commands"] == 20
    assert summary["total_timeouts"] == 2
    assert summary["failures_by_type"]["timeout"] == 2
    assert summary["failures_by_type"]["unknown_pipeline"] == 1
    assert summary["success_rate"] == pytest.approx(20 / 23)
    # Timeouts are in the latency distribution: the slowest 2 of 23 took ~0.5 s.
    assert 0.45 <= summary["p99_command_time"] <= 0.6
    assert summary["p50_command_time"] < 0.05
    assert 0 < summary["avg_command_time"] < summary["p99_command_time"]
    for key in ("avg_command_time", "p95_command_time", "p99_command_time", "success_rate", "total_timeouts", "active_pipelines"):
        assert key in summary
    assert summary["effective_timeouts"]["command"] == 0.5

    smp.reset_metrics()
    assert smp.performance_summary()["total_commands"] == 0


def test_prometheus_text_parses_and_matches_the_summary(app, spawn):
    smp.apply_patches(app, config=smp.Config(queue_timeout=0.3))
    table: Dict[str, Any] = {}
    echo = spawn("echo", table=table)
    hang = spawn("hang", table=table)
    for _ in range(5):
        send(app, table, echo)
    send(app, table, hang)
    families = parse(smp.render_prometheus())

    commands = families["stream_manager_commands"]  # the parser drops the _total suffix
    assert commands.type == "counter"
    by_outcome = {s.labels["outcome"]: s.value for s in commands.samples if s.name.endswith("_total")}
    assert by_outcome == {"success": 5, "timeout": 1}

    duration = families["stream_manager_command_duration_seconds"]
    assert duration.type == "histogram"
    count = next(s.value for s in duration.samples if s.name.endswith("_count") and s.labels["command_type"] == "status")
    inf = next(s.value for s in duration.samples if s.name.endswith("_bucket") and s.labels["le"] == "+Inf")
    assert count == inf == 6
    assert families["stream_manager_command_timeouts"].samples[0].value == 1
    assert "stream_manager_queue_get_duration_seconds" in families
    assert "stream_manager_health_check_duration_seconds" in families
    assert families["stream_manager_active_pipelines"].type == "gauge"


def test_register_prometheus_exposes_the_same_numbers(app, spawn):
    from prometheus_client import CollectorRegistry, generate_latest

    smp.apply_patches(app, config=smp.Config(queue_timeout=1.0))
    table: Dict[str, Any] = {}
    echo = spawn("echo", table=table)
    send(app, table, echo)
    registry = CollectorRegistry()
    smp.register_prometheus(registry)
    text = generate_latest(registry).decode()
    assert 'stream_manager_commands_total{command_type="status",outcome="success"} 1.0' in text
    assert "stream_manager_command_duration_seconds_bucket" in text


def test_timeout_log_record_carries_structured_fields(app, spawn, caplog):
    smp.apply_patches(app, config=smp.Config(queue_timeout=0.3))
    table: Dict[str, Any] = {}
    hang = spawn("hang", table=table)
    echo = spawn("echo", table=table)
    with caplog.at_level(logging.DEBUG, logger="stream_manager_patches"):
        send(app, table, hang)
        send(app, table, echo)
    timeout = next(r for r in caplog.records if getattr(r, "event", None) == "command_timeout")
    assert timeout.name == "stream_manager_patches.command"
    assert timeout.levelno == logging.WARNING
    assert timeout.pipeline_id == hang.pipeline_id
    assert timeout.command_type == "status"
    assert timeout.success is False
    assert timeout.error == "timeout"
    assert 250 <= timeout.duration_ms <= 600
    ok = next(r for r in caplog.records if getattr(r, "event", None) == "command" and r.pipeline_id == echo.pipeline_id)
    assert ok.levelno == logging.DEBUG
    assert ok.success is True and ok.error is None


def test_health_daemon_records_checks_reaps_and_heartbeat(app, spawn, monkeypatch, caplog):
    from conftest import TimedLock

    table: Dict[str, Any] = {}
    monkeypatch.setattr(app, "PROCESSES_TABLE", table)
    monkeypatch.setattr(app, "PROCESSES_TABLE_LOCK", TimedLock())
    smp.apply_patches(app, config=smp.Config(queue_timeout=0.5, health_check_timeout=0.5, max_health_failures=2))
    spawn("echo", table=table)
    hang = spawn("hang", table=table)
    daemon = threading.Thread(target=app.check_process_health, daemon=True)
    with caplog.at_level(logging.DEBUG, logger="stream_manager_patches"):
        daemon.start()
        deadline = time.monotonic() + 8
        while hang.pipeline_id in table and time.monotonic() < deadline:
            time.sleep(0.05)
        smp.request_shutdown()
        daemon.join(timeout=3)
    summary = smp.performance_summary()
    assert summary["pipelines_reaped"] == 1
    assert summary["health_check_failures"] >= 2
    assert summary["health_checks"] >= 3
    assert summary["active_pipelines"] == 1
    reaped = next(r for r in caplog.records if getattr(r, "event", None) == "pipeline_reaped")
    assert reaped.levelno == logging.ERROR and reaped.pipeline_id == hang.pipeline_id
    families = parse(smp.render_prometheus())
    heartbeat = families["stream_manager_last_health_sweep_timestamp_seconds"].samples[0].value
    assert abs(time.time() - heartbeat) < 10


def test_metrics_stay_consistent_under_eight_threads(app, spawn):
    smp.apply_patches(app, config=smp.Config(queue_timeout=10.0))
    table: Dict[str, Any] = {}
    pipelines = [spawn("echo", table=table) for _ in range(4)]

    def worker(n: int) -> None:
        for _ in range(40):
            send(app, table, pipelines[n % 4])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    summary = smp.performance_summary()
    assert summary["total_commands"] == 320
    assert summary["successful_commands"] == 320
    families = parse(smp.render_prometheus())
    counts = [s.value for s in families["stream_manager_command_duration_seconds"].samples if s.name.endswith("_count")]
    assert sum(counts) == 320
    get_count = next(
        s.value for s in families["stream_manager_queue_get_duration_seconds"].samples if s.name.endswith("_count")
    )
    assert get_count == 320


def test_adaptive_timeouts_follow_recent_behaviour_within_clamps(app, spawn, monkeypatch):
    monkeypatch.setenv("STREAM_MANAGER_ADAPTIVE_TIMEOUTS", "1")
    monkeypatch.setenv("STREAM_MANAGER_QUEUE_TIMEOUT", "2")
    smp.apply_patches(app)
    table: Dict[str, Any] = {}
    echo = spawn("echo", table=table)
    hang = spawn("hang", table=table)
    assert smp.performance_summary()["effective_timeouts"]["command"] == 2.0
    for _ in range(64):
        send(app, table, echo)
    summary = smp.performance_summary()
    assert summary["adaptive_timeouts"] is True
    # Fast answers: 3 x p99 is far below the base, so the 0.5x clamp applies.
    assert summary["effective_timeouts"]["command"] == 1.0
    started = time.monotonic()
    answer = send(app, table, hang)
    assert 0.95 <= time.monotonic() - started <= 1.5
    assert "within 1.000 s" in answer["public_error_message"]
    families = parse(smp.render_prometheus())
    gauge = {s.labels["operation"]: s.value for s in families["stream_manager_effective_timeout_seconds"].samples}
    assert gauge["command"] == 1.0


def test_adaptive_timeouts_are_off_by_default(app, spawn):
    smp.apply_patches(app, config=smp.Config(queue_timeout=2.0))
    table: Dict[str, Any] = {}
    echo = spawn("echo", table=table)
    for _ in range(64):
        send(app, table, echo)
    assert smp.performance_summary()["effective_timeouts"]["command"] == 2.0
