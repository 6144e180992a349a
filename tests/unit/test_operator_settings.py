"""OperatorSettings: FEEDWATCH_OPERATOR_* variables, flags as overrides, validation."""

from __future__ import annotations

import pytest

from feedwatch.errors import ConfigurationError
from feedwatch.settings import OperatorSettings

pytestmark = pytest.mark.unit


def test_defaults_serve_all_namespaces_with_the_versioned_image() -> None:
    settings = OperatorSettings.from_environment({})
    assert settings.namespaces == ()
    assert settings.watcher_image.startswith("feedwatch:")
    assert (settings.health_port, settings.secret_check_interval, settings.database_retry_cap) == (
        8080,
        10.0,
        60.0,
    )


def test_variables_are_read_and_flags_win() -> None:
    env = {
        "FEEDWATCH_OPERATOR_NAMESPACES": "hiring, team-*",
        "FEEDWATCH_OPERATOR_HEALTH_PORT": "9090",
        "FEEDWATCH_OPERATOR_METRICS": "false",
        "FEEDWATCH_OPERATOR_SECRET_CHECK_INTERVAL": "2.5",
    }
    settings = OperatorSettings.from_environment(env, health_port=None, watcher_image="reg/fw:1")
    assert settings.namespaces == ("hiring", "team-*")
    assert settings.health_port == 9090
    assert settings.metrics is False
    assert settings.secret_check_interval == 2.5
    assert settings.watcher_image == "reg/fw:1"
    assert OperatorSettings.from_environment(env, namespaces=("a",)).namespaces == ("a",)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"FEEDWATCH_OPERATOR_HEALTH_PORT": "70000"}, "health_port"),
        ({"FEEDWATCH_OPERATOR_HEALTH_PORT": "eighty"}, "health_port"),
        ({"FEEDWATCH_OPERATOR_LOG_FORMAT": "xml"}, "log_format"),
        ({"FEEDWATCH_OPERATOR_SECRET_CHECK_INTERVAL": "0"}, "secret_check_interval"),
    ],
)
def test_bad_values_are_refused_with_the_setting_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        OperatorSettings.from_environment(env)
