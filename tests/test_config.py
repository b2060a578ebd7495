"""Configuration from the environment and from keyword arguments."""

from __future__ import annotations

import pytest

import stream_manager_patches as smp


def test_defaults_match_the_design():
    config = smp.Config.from_env({})
    assert config == smp.Config()
    assert config.to_dict() == {
        "queue_timeout": 10.0,
        "health_check_timeout": 5.0,
        "health_check_interval": 1.0,
        "max_health_failures": 3,
        "process_join_timeout": 30.0,
        "termination_grace_period": 5.0,
        "patches": list(smp.DEFAULT_PATCH_NAMES),
        "adaptive_timeouts": False,
        "server_threads": 8,
    }


def test_environment_values_are_read():
    config = smp.Config.from_env(
        {
            "STREAM_MANAGER_QUEUE_TIMEOUT": "1.5",
            "STREAM_MANAGER_HEALTH_CHECK_TIMEOUT": "2",
            "STREAM_MANAGER_MAX_HEALTH_FAILURES": "5",
            "STREAM_MANAGER_PROCESS_JOIN_TIMEOUT": "3",
            "STREAM_MANAGER_TERMINATION_GRACE_PERIOD": "0",
            "STREAM_MANAGER_PATCHES": "handle_command, get_response_ignoring_thrash",
        }
    )
    assert config.queue_timeout == 1.5
    assert config.health_check_timeout == 2.0
    assert config.max_health_failures == 5
    assert config.process_join_timeout == 3.0
    assert config.termination_grace_period == 0.0
    assert config.patches == ["handle_command", "get_response_ignoring_thrash"]


def test_from_env_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("STREAM_MANAGER_QUEUE_TIMEOUT", "4.25")
    assert smp.Config.from_env().queue_timeout == 4.25


@pytest.mark.parametrize(
    "variable, value, rule",
    [
        ("STREAM_MANAGER_QUEUE_TIMEOUT", "abc", "> 0"),
        ("STREAM_MANAGER_QUEUE_TIMEOUT", "0", "> 0"),
        ("STREAM_MANAGER_QUEUE_TIMEOUT", "-2", "> 0"),
        ("STREAM_MANAGER_QUEUE_TIMEOUT", "inf", "> 0"),
        ("STREAM_MANAGER_HEALTH_CHECK_TIMEOUT", "nan", "> 0"),
        # Finite, but a deadline this far out would overflow: refused, not a panic later.
        ("STREAM_MANAGER_QUEUE_TIMEOUT", "1e12", "<= 1e9"),
        ("STREAM_MANAGER_TERMINATION_GRACE_PERIOD", "1e300", "<= 1e9"),
        ("STREAM_MANAGER_MAX_HEALTH_FAILURES", "0", "integer >= 1"),
        ("STREAM_MANAGER_MAX_HEALTH_FAILURES", "2.5", "integer >= 1"),
        ("STREAM_MANAGER_PROCESS_JOIN_TIMEOUT", "soon", "> 0"),
        ("STREAM_MANAGER_TERMINATION_GRACE_PERIOD", "-1", ">= 0"),
        ("STREAM_MANAGER_ADAPTIVE_TIMEOUTS", "sometimes", "1/true/on/yes or 0/false/off/no"),
        ("STREAM_MANAGER_PATCHES", "handle_command,teleport", "handle_command, get_response_ignoring_thrash"),
    ],
)
def test_bad_values_name_variable_value_and_rule(variable, value, rule):
    with pytest.raises(ValueError) as raised:
        smp.Config.from_env({variable: value})
    message = str(raised.value)
    assert variable in message
    assert value in message
    assert rule in message


def test_keyword_arguments_are_validated_with_the_same_rules():
    with pytest.raises(ValueError, match="queue_timeout.*> 0"):
        smp.Config(queue_timeout=0)
    with pytest.raises(ValueError, match="max_health_failures.*integer >= 1"):
        smp.Config(max_health_failures=0)
    with pytest.raises(ValueError, match="teleport"):
        smp.Config(patches=["teleport"])
    with pytest.raises(TypeError):
        smp.Config(queue_timeout="fast")  # type: ignore[arg-type]
    assert smp.Config(patches="none").patches == []
    assert smp.Config(patches=["get_response_ignoring_thrash", "handle_command"]).patches == [
        "handle_command",
        "get_response_ignoring_thrash",
    ]


def test_config_is_immutable_and_readable():
    config = smp.Config(queue_timeout=2)
    with pytest.raises(AttributeError):
        config.queue_timeout = 3  # type: ignore[misc]
    assert "queue_timeout=2.0" in repr(config)
