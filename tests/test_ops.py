"""Fleet operations against a real patched manager: the liveness/readiness probe, the
/metrics exporter, and the snippets of docs/deployment.md (run, not just read)."""

from __future__ import annotations

import configparser
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, Iterator, List

import pytest
import yaml

from stream_manager_patches import _e2e, _ops

pytestmark = pytest.mark.slow

DOC = os.path.join(os.path.dirname(__file__), "..", "docs", "deployment.md")
SCRIPT = os.path.join(os.path.dirname(sys.executable), "stream-manager-patches")


def doc_blocks(language: str) -> List[str]:
    text = open(DOC).read()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


class Ports:
    def __init__(self) -> None:
        self.manager = _e2e.free_port()
        self.metrics = _e2e.free_port()

    def apply(self, text: str) -> str:
        return text.replace("7070", str(self.manager)).replace("9108", str(self.metrics))


@pytest.fixture(scope="module")
def ports() -> Ports:
    return Ports()


@pytest.fixture(scope="module")
def manager(ports) -> Iterator[subprocess.Popen]:
    """Started exactly as the supervisord snippet says (ports changed)."""
    program = configparser.ConfigParser()
    program.read_string(ports.apply(doc_blocks("ini")[0]))
    section = program["program:stream-manager"]
    command = shlex.split(section["command"])
    env = dict(os.environ)
    for item in re.findall(r'(\w+)="([^"]*)"', section["environment"]):
        env[item[0]] = item[1]
    command[0] = SCRIPT
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    while True:  # skip Inference's import-time warnings
        line = proc.stdout.readline()
        lines.append(line)
        if not line or "serving" in line:
            break
    assert "serving" in line and "/metrics" in line, "".join(lines)[-3000:]
    # Keep reading, so a chatty manager never blocks on a full pipe.
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    deadline = time.monotonic() + 30
    while not _ops.probe_manager("127.0.0.1", ports.manager, 1.0).ok:
        assert time.monotonic() < deadline, "manager did not come up"
        time.sleep(0.2)
    yield proc
    proc.send_signal(signal.SIGCONT)
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def k8s_probe(ports: Ports, kind: str) -> List[str]:
    pod = yaml.safe_load(ports.apply(doc_blocks("yaml")[0]))
    command = pod["spec"]["containers"][0][kind]["exec"]["command"]
    return [SCRIPT] + command[1:]


def run(command: List[str], timeout: float = 15) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def test_liveness_probe_from_the_pod_spec_passes(manager, ports):
    result = run(k8s_probe(ports, "livenessProbe"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("OK")


def test_readiness_probe_from_the_pod_spec_passes_once_the_daemon_sweeps(manager, ports):
    deadline = time.monotonic() + 10
    while True:
        result = run(k8s_probe(ports, "readinessProbe"))
        if result.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ready: health daemon swept" in result.stdout


def test_probe_against_a_closed_port_says_refused():
    result = run([SCRIPT, "probe", "--port", str(_e2e.free_port()), "--timeout", "1"])
    assert result.returncode != 0
    assert "refused" in result.stdout


def test_probe_of_a_frozen_manager_fails_within_its_timeout(manager, ports):
    os.kill(manager.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        result = run([SCRIPT, "probe", "--port", str(ports.manager), "--timeout", "1"])
        elapsed = time.monotonic() - started
    finally:
        os.kill(manager.pid, signal.SIGCONT)
    assert result.returncode != 0
    assert "timed out" in result.stdout
    assert elapsed < 1 + 1.5, elapsed  # the timeout plus one Python start-up
    deadline = time.monotonic() + 10
    while not _ops.probe_manager("127.0.0.1", ports.manager, 1.0).ok:
        assert time.monotonic() < deadline, "manager did not recover after SIGCONT"
        time.sleep(0.1)


def scrape_url(ports: Ports) -> str:
    config = yaml.safe_load(ports.apply(doc_blocks("yaml")[1]))
    job = config["scrape_configs"][0]
    return f"http://{job['static_configs'][0]['targets'][0]}{job['metrics_path']}"


def test_metrics_from_the_scrape_config_parse_while_commands_run(manager, ports):
    from prometheus_client.parser import text_string_to_metric_families

    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            _ops.probe_manager("127.0.0.1", ports.manager, 2.0)

    workers = [threading.Thread(target=traffic) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        for _ in range(5):
            with urllib.request.urlopen(scrape_url(ports), timeout=5) as answer:
                assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
                families = {f.name: f for f in text_string_to_metric_families(answer.read().decode())}
            assert "stream_manager_command_duration_seconds" in families
            assert "stream_manager_last_health_sweep_timestamp_seconds" in families
            time.sleep(0.2)
    finally:
        stop.set()
        for w in workers:
            w.join()
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(scrape_url(ports).replace("/metrics", "/other"), timeout=5)


def test_exporter_survives_200_concurrent_scrapes_and_the_manager_keeps_answering(manager, ports):
    url = scrape_url(ports)

    def scrape(_: int) -> bool:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status == 200 and b"stream_manager_commands_total" in answer.read()

    with ThreadPoolExecutor(max_workers=50) as pool:
        futures = [pool.submit(scrape, i) for i in range(200)]
        probe = _ops.probe_manager("127.0.0.1", ports.manager, 2.0)
        results = [f.result() for f in futures]
    assert all(results), f"{results.count(False)} failed scrapes"
    assert probe.ok, probe.reason
