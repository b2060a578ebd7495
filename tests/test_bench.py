"""The bench command end to end, on its fast scenarios (figures are not asserted:
performance is measured by the bench, not by timed tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_bench_writes_json_table_and_plot_for_both_variants(tmp_path):
    out = tmp_path / "bench"
    result = subprocess.run(
        [sys.executable, "-m", "stream_manager_patches", "bench", "--quick", "--only", "2.", "6a", "--output-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    data = json.loads((out / "bench.json").read_text())
    rows = {(r["scenario"][:2], r["variant"]) for r in data["rows"]}
    assert rows == {("2.", "patched"), ("2.", "original"), ("6a", "patched"), ("6a", "original")}
    termination = {r["variant"]: r for r in data["rows"] if r["scenario"].startswith("6a")}
    assert termination["patched"]["outcome"] == "exit(0)"
    assert termination["patched"]["left_alive"] == 0
    assert "TypeError" in termination["original"]["outcome"], "upstream 0.54 crashes here"
    table = (out / "bench.md").read_text()
    assert "| scenario | figure | patched | original |" in table
    assert (out / "bench.png").stat().st_size > 10_000
