"""Installing, restoring and toggling the patches."""

from __future__ import annotations

import sys
import threading
import types
from typing import Any, Dict

import pytest

import stream_manager_patches as smp
from stream_manager_patches import _native

pytest_plugins = ["pytester"]


def attributes(module) -> Dict[str, Any]:
    return {name: getattr(module, smp.PATCH_ATTRIBUTES[name]) for name in smp.PATCH_NAMES}


def test_apply_installs_all_six_and_restore_puts_back_the_exact_originals(app):
    before = attributes(app)
    target = smp.apply_patches(app)
    assert target is app
    assert smp.is_patched()
    assert smp.active_patches() == smp.DEFAULT_PATCH_NAMES
    assert "server" not in smp.active_patches(), "the threaded server is opt-in"
    for name in smp.DEFAULT_PATCH_NAMES:
        assert getattr(app, smp.PATCH_ATTRIBUTES[name]) is not before[name], name
    assert app.RoboflowTCPServer is before["server"]
    assert isinstance(app.handle_command, _native.HandleCommand)
    assert isinstance(app.get_response_ignoring_thrash, _native.GetResponseIgnoringThrash)
    smp.restore_patches()
    assert not smp.is_patched()
    for name in smp.PATCH_NAMES:
        assert getattr(app, smp.PATCH_ATTRIBUTES[name]) is before[name], name


def test_apply_without_app_finds_the_real_target(app):
    assert smp.find_target() is app
    assert smp.apply_patches() is app
    assert smp.patched_target() is app


def test_apply_is_idempotent_and_reapply_keeps_the_first_originals(app):
    before = attributes(app)
    smp.apply_patches(app)
    smp.apply_patches(app)
    smp.apply_patches(app, config=smp.Config(queue_timeout=2))
    assert app.handle_command.queue_timeout == 2.0
    assert smp.originals() == {name: before[name] for name in smp.DEFAULT_PATCH_NAMES}
    smp.restore_patches()
    smp.restore_patches()
    assert attributes(app) == before
    for name in smp.PATCH_NAMES:
        assert getattr(app, smp.PATCH_ATTRIBUTES[name]) is before[name]


def test_apply_restore_apply_again(app):
    before = attributes(app)
    smp.apply_patches(app)
    smp.restore_patches()
    smp.apply_patches(app)
    assert smp.is_patched("handle_command")
    smp.restore_patches()
    for name in smp.PATCH_NAMES:
        assert getattr(app, smp.PATCH_ATTRIBUTES[name]) is before[name]


def test_only_a_subset_and_narrowing_restores_the_rest(app):
    before = attributes(app)
    smp.apply_patches(app, only=["handle_command", "get_response_ignoring_thrash"])
    assert smp.active_patches() == ("handle_command", "get_response_ignoring_thrash")
    assert app.check_process_health is before["check_process_health"]
    smp.apply_patches(app, only=["get_response_ignoring_thrash"])
    assert app.handle_command is before["handle_command"]
    assert app.get_response_ignoring_thrash is not before["get_response_ignoring_thrash"]
    smp.restore_patches()
    assert attributes(app) == before


def test_unknown_patch_names_change_nothing(app):
    before = attributes(app)
    with pytest.raises(ValueError, match="valid names: handle_command"):
        smp.apply_patches(app, only=["handle_command", "warp_drive"])
    assert not smp.is_patched()
    assert attributes(app) == before


def test_bad_config_changes_nothing(app):
    before = attributes(app)
    with pytest.raises(ValueError, match="queue_timeout"):
        smp.apply_patches(app, config={"queue_timeout": -1})
    with pytest.raises(TypeError, match="config must be"):
        smp.apply_patches(app, config=42)  # type: ignore[arg-type]
    assert attributes(app) == before


def test_every_patch_is_native_and_bound_to_the_target(app):
    smp.apply_patches(app, config=smp.Config(queue_timeout=2.5))
    expected = {
        "handle_command": _native.HandleCommand,
        "get_response_ignoring_thrash": _native.GetResponseIgnoringThrash,
        "check_process_health": _native.CheckProcessHealth,
        "execute_termination": _native.ExecuteTermination,
        "join_inference_pipeline": _native.JoinInferencePipeline,
        "ensure_idle_pipelines_warmed_up": _native.EnsureIdlePipelinesWarmedUp,
    }
    for name, kind in expected.items():
        replacement = getattr(app, name)
        assert isinstance(replacement, kind), name
        assert replacement.__name__ == name
        assert replacement.target == app.__name__
        assert replacement.config.queue_timeout == 2.5


def fake_app(name: str = "fake_app", missing: str = "") -> types.ModuleType:
    """A stand-in module, for tests about the shim itself (not the command path)."""
    module = types.ModuleType(name)
    from conftest import TARGET

    real = sys.modules[TARGET]
    module.describe_error = real.describe_error
    module.ErrorType = real.ErrorType
    for patch in smp.PATCH_NAMES:
        attribute = smp.PATCH_ATTRIBUTES[patch]
        if patch != missing and attribute != "InferencePipelinesManagerHandler" and attribute != "RoboflowTCPServer":
            setattr(module, attribute, lambda *a, _p=patch, **k: _p)
    module.InferencePipelinesManagerHandler = type("InferencePipelinesManagerHandler", (), {})
    module.RoboflowTCPServer = type("RoboflowTCPServer", (), {})
    return module


def test_a_target_missing_a_function_is_refused_before_anything_is_set(app):
    module = fake_app(missing="execute_termination")
    before = dict(vars(module))
    with pytest.raises(TypeError, match="execute_termination"):
        smp.apply_patches(module)
    assert dict(vars(module)) == before
    assert not smp.is_patched()


def test_a_target_without_describe_error_is_refused(app):
    module = fake_app()
    del module.describe_error
    with pytest.raises(TypeError, match="describe_error"):
        smp.apply_patches(module)
    assert not smp.is_patched()


class ExplodingModule(types.ModuleType):
    """setattr fails for one name, to prove a failure part-way rolls back."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "join_inference_pipeline" and getattr(self, "armed", False):
            raise RuntimeError("cannot set join_inference_pipeline")
        super().__setattr__(name, value)


def test_failure_part_way_rolls_back_everything(app):
    module = ExplodingModule("exploding")
    template = fake_app()
    for key, value in vars(template).items():
        if not key.startswith("__"):
            setattr(module, key, value)
    before = attributes(module)
    module.armed = True
    with pytest.raises(RuntimeError, match="cannot set"):
        smp.apply_patches(module)
    assert attributes(module) == before
    assert not smp.is_patched()


def test_patching_a_second_module_requires_a_restore(app):
    smp.apply_patches(app)
    with pytest.raises(RuntimeError, match="restore_patches"):
        smp.apply_patches(fake_app())
    smp.restore_patches()
    other = fake_app()
    smp.apply_patches(other)
    assert smp.patched_target() is other


def test_patched_context_manager_returns_to_the_previous_state(app):
    before = attributes(app)
    with smp.patched(app, only=["handle_command"]) as target:
        assert target is app
        assert smp.active_patches() == ("handle_command",)
        with smp.patched(app, config=smp.Config(queue_timeout=3)):
            assert smp.active_patches() == smp.DEFAULT_PATCH_NAMES
            assert app.handle_command.queue_timeout == 3.0
        assert smp.active_patches() == ("handle_command",)
    assert attributes(app) == before


def test_apply_reads_the_environment_on_each_call(app, monkeypatch):
    monkeypatch.setenv("STREAM_MANAGER_QUEUE_TIMEOUT", "2")
    smp.apply_patches(app)
    assert app.handle_command.queue_timeout == 2.0
    monkeypatch.setenv("STREAM_MANAGER_QUEUE_TIMEOUT", "3")
    smp.apply_patches(app)
    assert app.handle_command.queue_timeout == 3.0


def test_env_toggle(app, monkeypatch):
    before = attributes(app)
    monkeypatch.delenv("STREAM_MANAGER_PATCHES", raising=False)
    assert smp.install_from_env(app) == smp.DEFAULT_PATCH_NAMES
    monkeypatch.setenv("STREAM_MANAGER_PATCHES", "all,server")
    assert smp.install_from_env(app) == smp.PATCH_NAMES
    monkeypatch.setenv("STREAM_MANAGER_PATCHES", "handle_command")
    assert smp.install_from_env(app) == ("handle_command",)
    assert app.get_response_ignoring_thrash is before["get_response_ignoring_thrash"]
    for off in ("none", "0", "off"):
        smp.install_from_env(app)
        monkeypatch.setenv("STREAM_MANAGER_PATCHES", off)
        assert smp.install_from_env(app) == ()
        assert not smp.is_patched()
        assert attributes(app) == before
        monkeypatch.setenv("STREAM_MANAGER_PATCHES", "all")


def test_bad_env_values_raise_and_leave_the_state_untouched(app, monkeypatch):
    smp.apply_patches(app, only=["handle_command"])
    installed = app.handle_command
    monkeypatch.setenv("STREAM_MANAGER_PATCHES", "handle_command,flux_capacitor")
    with pytest.raises(ValueError) as raised:
        smp.install_from_env(app)
    assert "flux_capacitor" in str(raised.value)
    assert "ensure_idle_pipelines_warmed_up" in str(raised.value)
    monkeypatch.setenv("STREAM_MANAGER_PATCHES", "all")
    monkeypatch.setenv("STREAM_MANAGER_MAX_HEALTH_FAILURES", "zero")
    with pytest.raises(ValueError, match='STREAM_MANAGER_MAX_HEALTH_FAILURES="zero"'):
        smp.install_from_env(app)
    assert app.handle_command is installed
    assert smp.active_patches() == ("handle_command",)


def test_concurrent_apply_and_restore_end_consistent(app):
    before = attributes(app)
    errors = []

    def churn(n: int) -> None:
        try:
            for i in range(100):
                if (i + n) % 2:
                    smp.apply_patches(app, config=smp.Config())
                else:
                    smp.restore_patches()
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    smp.restore_patches()
    for name in smp.PATCH_NAMES:
        assert getattr(app, smp.PATCH_ATTRIBUTES[name]) is before[name]


def test_pytest_fixture_patches_for_one_test_only(pytester, app):
    pytester.makepyfile(
        """
        import stream_manager_patches as smp

        def test_inside(stream_manager_patches):
            assert smp.is_patched()
            assert stream_manager_patches.__name__.endswith("manager_app.app")
            assert type(stream_manager_patches.handle_command).__name__ == "HandleCommand"

        def test_custom(stream_manager_patcher):
            app = stream_manager_patcher(only=["handle_command"], config={"queue_timeout": 1.5})
            assert smp.active_patches() == ("handle_command",)
            assert app.handle_command.queue_timeout == 1.5

        def test_after():
            assert not smp.is_patched()
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:randomly")
    result.assert_outcomes(passed=3)
    assert not smp.is_patched()
