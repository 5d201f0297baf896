"""LEADSCORE_SESSION_TIMEOUT and _GROUP_INSTANCE_ID: the worker's consumer-group membership;
LEADSCORE_FETCH_BYTES and _FETCH_WAIT_MS: its fetches."""

import asyncio

import pytest

from streams.app import create_app
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


def test_membership_is_dynamic_unless_an_instance_id_is_given() -> None:
    assert settings_from_env({}).group.instance_id is None
    assert settings_from_env({"LEADSCORE_GROUP_INSTANCE_ID": "  "}).group.instance_id is None
    assert settings_from_env({"LEADSCORE_GROUP_INSTANCE_ID": "leadscore-worker-2"}).group.instance_id == (
        "leadscore-worker-2"
    )


@pytest.mark.parametrize("raw", ["worker 1", "w/1", "x" * 201])
def test_a_bad_instance_id_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match="LEADSCORE_GROUP_INSTANCE_ID"):
        settings_from_env({"LEADSCORE_GROUP_INSTANCE_ID": raw})


def test_the_instance_id_reaches_the_consumer_configuration() -> None:
    settings = settings_from_env({"LEADSCORE_GROUP_INSTANCE_ID": "worker-a"})
    assert create_app(settings).app.conf.consumer_group_instance_id == "worker-a"


def test_the_fetch_size_per_partition_is_faust_s_unless_set() -> None:
    assert create_app(settings_from_env({})).app.conf.consumer_max_fetch_size == 1024**2
    settings = settings_from_env({"LEADSCORE_FETCH_BYTES": "4194304"})
    assert create_app(settings).app.conf.consumer_max_fetch_size == 4 * 1024**2


@pytest.mark.parametrize("raw", ["lots", "1000"])
def test_a_bad_fetch_size_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match="LEADSCORE_FETCH_BYTES"):
        settings_from_env({"LEADSCORE_FETCH_BYTES": raw})


def _fetching(env: dict[str, str]) -> tuple[int, int]:
    """The fetch wait and minimum bytes of the aiokafka consumer a worker with ``env`` builds
    (not started)."""
    consumer = create_app(settings_from_env(env)).app._new_consumer()

    async def build() -> tuple[int, int]:  # aiokafka builds its clients in a running event loop
        client = consumer._thread._create_worker_consumer(consumer.transport)
        return int(client._fetch_max_wait_ms), int(client._fetch_min_bytes)

    return asyncio.run(build())


def _fetch_wait_ms(env: dict[str, str]) -> int:
    return _fetching(env)[0]


@pytest.mark.parametrize("consumption", ["batch", "agent"])
def test_fetches_are_answered_as_soon_as_data_arrives_unless_set(consumption: str) -> None:
    assert _fetching({"LEADSCORE_CONSUMPTION": consumption}) == (100, 1)
    env = {"LEADSCORE_CONSUMPTION": consumption, "LEADSCORE_FETCH_MIN_BYTES": "65536", "LEADSCORE_FETCH_WAIT_MS": "10"}
    assert _fetching(env) == (10, 65536)


@pytest.mark.parametrize("raw", ["some", "0"])
def test_a_bad_fetch_min_bytes_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match="LEADSCORE_FETCH_MIN_BYTES"):
        settings_from_env({"LEADSCORE_FETCH_MIN_BYTES": raw})


@pytest.mark.parametrize("consumption", ["batch", "agent"])
def test_fetches_wait_at_most_100_ms_at_the_broker_unless_set(consumption: str) -> None:
    # Faust builds its consumer with 1,500 ms, which stalled catch-ups (streams/faust_internals.py).
    assert _fetch_wait_ms({"LEADSCORE_CONSUMPTION": consumption}) == 100
    assert _fetch_wait_ms({"LEADSCORE_CONSUMPTION": consumption, "LEADSCORE_FETCH_WAIT_MS": "500"}) == 500


@pytest.mark.parametrize("raw", ["never", "5"])
def test_a_bad_fetch_wait_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match="LEADSCORE_FETCH_WAIT_MS"):
        settings_from_env({"LEADSCORE_FETCH_WAIT_MS": raw})
