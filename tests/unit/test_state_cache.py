"""LEADSCORE_STATE_CACHE: the decoded lead states a worker keeps per partition between batches
(streams/app.py ``Service.state_cache``), the bulk of its memory."""

import pytest

from scoring.state import LeadState
from streams.app import Service, create_app
from streams.settings import SettingsError, settings_from_env


def filled(bound: str | None, partition: int, count: int) -> Service:
    env = {} if bound is None else {"LEADSCORE_STATE_CACHE": bound}
    service = create_app(settings_from_env(env))
    for n in range(count):
        service.state_cache(partition)[f"lead-{n}".encode()] = LeadState(lead_id=f"lead-{n}")
    return service


def test_the_default_keeps_fifty_thousand_states_per_partition() -> None:
    assert settings_from_env({}).state_cache_per_partition == 50_000


def test_once_a_partition_s_cache_holds_the_bound_its_oldest_quarter_is_dropped_and_the_others_kept() -> None:
    service = filled("8", 0, 8)
    service.state_cache(1)[b"lead-x"] = LeadState(lead_id="lead-x")
    assert len(service.caches[0]) == 8
    assert list(service.state_cache(0)) == [f"lead-{n}".encode() for n in range(2, 8)]
    assert list(service.state_cache(1)) == [b"lead-x"]


def test_a_cache_past_its_bound_by_a_whole_batch_keeps_three_quarters_of_the_bound() -> None:
    service = filled("8", 0, 8)
    cache = service.caches[0]
    for n in range(8, 20):  # one batch's states, written after the bound was checked
        cache[f"lead-{n}".encode()] = LeadState(lead_id=f"lead-{n}")
    assert list(service.state_cache(0)) == [f"lead-{n}".encode() for n in range(14, 20)]


@pytest.mark.parametrize("bound", ["1", "3"])
def test_a_tiny_bound_still_keeps_at_most_the_bound(bound: str) -> None:
    service = filled(bound, 0, 5)
    assert len(service.state_cache(0)) <= int(bound)


def test_below_the_bound_the_states_stay() -> None:
    service = filled("3", 0, 2)
    assert sorted(service.state_cache(0)) == [b"lead-0", b"lead-1"]


def test_zero_keeps_no_state_from_one_batch_to_the_next() -> None:
    service = filled("0", 0, 1)
    assert service.state_cache(0) == {}


@pytest.mark.parametrize("raw", ["many", "-1"])
def test_a_bad_bound_is_refused(raw: str) -> None:
    with pytest.raises(SettingsError, match="LEADSCORE_STATE_CACHE"):
        settings_from_env({"LEADSCORE_STATE_CACHE": raw})
