"""LEADSCORE_SESSION_TIMEOUT: the worker's consumer-group session timeout and heartbeat."""

import pytest

from streams.settings import GroupSettings, SettingsError, settings_from_env


def test_default_is_faust_s_sixty_seconds_with_three_second_heartbeats() -> None:
    group = settings_from_env({}).group
    assert group == GroupSettings()
    assert (group.session_timeout_s, group.heartbeat_interval_s) == (60.0, 3.0)


def test_a_short_session_heartbeats_three_times_per_session() -> None:
    group = settings_from_env({"LEADSCORE_SESSION_TIMEOUT": "6"}).group
    assert (group.session_timeout_s, group.heartbeat_interval_s) == (6.0, 2.0)


@pytest.mark.parametrize("raw", ["soon", "0.5"])
def test_a_bad_session_timeout_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match="LEADSCORE_SESSION_TIMEOUT"):
        settings_from_env({"LEADSCORE_SESSION_TIMEOUT": raw})
