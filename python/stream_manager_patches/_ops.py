"""Operations: a liveness/readiness probe speaking the manager's TCP protocol, and an
HTTP exporter serving the Prometheus text at ``/metrics``.

Neither imports Inference: the probe must stay cheap enough to run every few seconds.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Optional

from . import _native

HEADER_SIZE = 4  # the manager's framing: 4-byte big-endian length, then UTF-8 JSON
ENV_METRICS_PORT = "STREAM_MANAGER_METRICS_PORT"
ENV_METRICS_HOST = "STREAM_MANAGER_METRICS_HOST"


@dataclass
class ProbeResult:
    ok: bool
    reason: str
    seconds: float

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def probe_manager(host: str, port: int, timeout: float) -> ProbeResult:
    """Send LIST_PIPELINES; healthy when a well-formed success answer arrives in time.
    ``timeout`` bounds the whole exchange, connect included."""
    started = time.monotonic()
    deadline = started + timeout

    def left() -> float:
        return max(deadline - time.monotonic(), 0.001)

    try:
        with socket.create_connection((host, port), timeout=left()) as sock:
            payload = json.dumps({"type": "list_pipelines"}).encode("utf-8")
            sock.settimeout(left())
            sock.sendall(len(payload).to_bytes(HEADER_SIZE, "big") + payload)
            sock.settimeout(left())
            size = int.from_bytes(_recv_exactly(sock, HEADER_SIZE), "big")
            if not 0 < size < 16 * 1024 * 1024:
                return ProbeResult(False, f"malformed answer: frame size {size}", time.monotonic() - started)
            sock.settimeout(left())
            body = json.loads(_recv_exactly(sock, size).decode("utf-8"))
    except ConnectionRefusedError:
        return ProbeResult(False, f"refused: nothing listens on {host}:{port}", time.monotonic() - started)
    except (socket.timeout, TimeoutError):
        return ProbeResult(False, f"timed out: no answer from {host}:{port} within {timeout:g} s", time.monotonic() - started)
    except (ValueError, UnicodeDecodeError) as error:
        return ProbeResult(False, f"malformed answer: {error}", time.monotonic() - started)
    except OSError as error:
        return ProbeResult(False, f"connection failed: {error}", time.monotonic() - started)
    response = body.get("response") if isinstance(body, dict) else None
    if not isinstance(response, dict) or response.get("status") != "success" or "pipelines" not in response:
        return ProbeResult(False, f"malformed answer: {str(body)[:200]}", time.monotonic() - started)
    return ProbeResult(True, f"ok: {len(response['pipelines'])} pipeline(s)", time.monotonic() - started)


def probe_readiness(metrics_url: str, timeout: float, max_sweep_age: float) -> ProbeResult:
    """Ready when the health daemon's heartbeat (last sweep time, from ``/metrics``) is fresh."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(metrics_url, timeout=timeout) as answer:
            text = answer.read().decode("utf-8")
    except OSError as error:
        return ProbeResult(False, f"not ready: metrics unreachable at {metrics_url}: {error}", time.monotonic() - started)
    for line in text.splitlines():
        if line.startswith("stream_manager_last_health_sweep_timestamp_seconds "):
            last = float(line.split()[1])
            age = time.time() - last
            if last > 0 and age <= max_sweep_age:
                return ProbeResult(True, f"ready: health daemon swept {age:.1f} s ago", time.monotonic() - started)
            return ProbeResult(
                False,
                "not ready: health daemon has not swept yet" if last == 0 else f"not ready: last health sweep {age:.1f} s ago",
                time.monotonic() - started,
            )
    return ProbeResult(False, "not ready: no health heartbeat in metrics", time.monotonic() - started)


class _MetricsHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404, "only /metrics is served")
            return
        body = _native.render_prometheus().encode("utf-8")
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # scrapes are not news
        return


class _BoundedHTTPServer(HTTPServer):
    """One thread serves every scrape in turn: rendering takes microseconds, so a scrape
    storm queues in the listen backlog instead of spawning threads in the manager."""

    request_queue_size = 256
    timeout = 2.0

    def get_request(self):  # type: ignore[no-untyped-def]
        connection, address = super().get_request()
        connection.settimeout(2.0)  # a stalled scraper cannot hold the exporter
        return connection, address


class MetricsExporter:
    def __init__(self, host: str, port: int) -> None:
        self.server = _BoundedHTTPServer((host, port), _MetricsHandler)
        self.host, self.port = self.server.server_address[:2]
        self.thread = threading.Thread(target=self.server.serve_forever, name="smp-metrics", daemon=True)

    def start(self) -> "MetricsExporter":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_metrics_exporter(port: Optional[int] = None, host: Optional[str] = None) -> Optional[MetricsExporter]:
    """Serve ``/metrics`` on ``port`` (default: ``STREAM_MANAGER_METRICS_PORT``; not set:
    no exporter, returns None), bound to ``host`` (default: ``STREAM_MANAGER_METRICS_HOST``
    or 127.0.0.1). A bad port raises ``ValueError`` naming the variable."""
    if port is None:
        raw = os.environ.get(ENV_METRICS_PORT, "").strip()
        if not raw:
            return None
        try:
            port = int(raw)
        except ValueError:
            port = -1
        if not 0 <= port <= 65535:
            raise ValueError(f"{ENV_METRICS_PORT}={raw!r} is invalid: must be an integer port 0-65535")
    host = host or os.environ.get(ENV_METRICS_HOST, "").strip() or "127.0.0.1"
    return MetricsExporter(host, port).start()
