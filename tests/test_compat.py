"""Version awareness: generation detection, verified ranges, warnings and strict mode."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest

import stream_manager_patches as smp
from stream_manager_patches import _compat


def test_the_pinned_target_is_detected_and_verified(app):
    info = _compat.detect(app)
    assert info.generation is not None
    assert app.__name__ == info.generation.module
    assert info.version is not None
    assert info.verified, info


def test_versions_are_compared_numerically():
    assert _compat.in_range("0.54.1", "0.54.0", "1.8.0")
    assert _compat.in_range("1.7.4", "0.54.0", "1.8.0")
    assert not _compat.in_range("1.8.0", "0.54.0", "1.8.0")
    assert not _compat.in_range("0.9.0", "0.54.0", "1.8.0")
    assert _compat.parse_version("1.10.0rc2") == (1, 10, 0)
    assert _compat.parse_version("garbage") is None


def test_patching_the_verified_target_does_not_warn(app):
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        smp.apply_patches(app)


def test_an_unverified_version_warns_and_strict_mode_refuses(app, monkeypatch):
    monkeypatch.setattr(_compat, "package_version", lambda name: "9.9.9")
    before = app.handle_command
    low, high = _compat.detect(app).generation.verified
    expected_range = f">={low},<{high}"
    with pytest.warns(RuntimeWarning, match=r"version 9\.9\.9 is outside ") as caught:
        smp.apply_patches(app)
    assert expected_range in str(caught[0].message)
    smp.restore_patches()
    monkeypatch.setenv("STREAM_MANAGER_PATCHES_STRICT", "1")
    with pytest.raises(RuntimeError) as raised:
        smp.apply_patches(app)
    message = str(raised.value)
    assert "9.9.9" in message and expected_range in message and "STREAM_MANAGER_PATCHES_STRICT=1" in message
    assert app.handle_command is before
    assert not smp.is_patched()


def test_doctor_reports_the_generation_and_each_patch():
    result = subprocess.run(
        [sys.executable, "-m", "stream_manager_patches", "doctor"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    compat = report["compatibility"]
    assert compat["generation"] in ("inference", "streamvision")
    assert compat["version"]
    assert set(compat["patches"].values()) == {"verified"}
