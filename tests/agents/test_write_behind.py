"""Write-behind on the batch path (agents/batch.py, agents/output.py): while a partition catches up,
its changed states are held back from the table and written once, its batches counted as consumed
only then; a failure forgets the held states and has their batches read again.

The consumer's side (holding the batches unacked, flushing, reading again) is
tests/agents/test_batch_consumer.py; the real-broker scenarios are tests/integration/.
"""

import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock

import orjson
import pytest

from agents import decay, output
from agents.batch import score_batches, write_held_states
from agents.decay import expire_due
from scoring.state import Stage, decode_state
from streams import faust_internals
from streams.app import Service, create_app
from streams.faust_internals import MembershipLost, ReadAgain
from streams.settings import Settings, SettingsError, settings_from_env
from streams.web import lead_state

pytestmark = pytest.mark.agents


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    settings = Settings(store="memory://", data_dir=tmp_path, app_id=f"behind-{uuid.uuid4().hex[:8]}")
    service = create_app(settings)
    monkeypatch.setattr(output, "send_keyed", AsyncMock())
    monkeypatch.setattr(output, "confirm_membership", AsyncMock())
    monkeypatch.setattr(faust_internals, "send_changelog", AsyncMock(return_value=0))
    return service


def visits(service: Service, leads: list[str], first_offset: int, partition: int = 0) -> list[tuple[Any, list[Any]]]:
    """One fetched batch of web visits, one per lead in ``leads``, as the batch consumer hands it over."""
    topic = service.settings.topics.web_visits
    at = int(time.time() * 1000)
    records = [
        SimpleNamespace(
            topic=topic,
            partition=partition,
            offset=first_offset + i,
            key=lead.encode(),
            value=orjson.dumps(
                {"event_id": f"e{first_offset + i}", "lead_id": lead, "occurred_at": at, "url": "/pricing"}
            ),
            timestamp=at,
        )
        for i, lead in enumerate(leads)
    ]
    return [(SimpleNamespace(topic=topic, partition=partition), records)]


def changelog_keys(service: Service) -> list[list[bytes]]:
    """The keys of each changelog send so far."""
    sent = faust_internals.send_changelog.call_args_list  # type: ignore[attr-defined]
    return [[key for key, _ in call.args[2]] for call in sent]


def consumed(service: Service) -> float:
    return float(service.metrics.events_consumed.labels(service.settings.topics.web_visits, "web_visit")._value.get())


def stored(service: Service, lead: str) -> Any:
    raw = service.leads.data.data.get(lead.encode())
    return None if raw is None else decode_state(raw)


async def test_held_batches_write_each_lead_once_and_count_as_consumed_only_then(service: Service) -> None:
    assert await score_batches(service, visits(service, ["L1", "L2"], 0), hold=True) is False
    assert await score_batches(service, visits(service, ["L1", "L3"], 2), hold=True) is False
    assert changelog_keys(service) == []
    assert consumed(service) == 0
    assert stored(service, "L1") is None

    await write_held_states(service, visits(service, ["L1"], 0))

    assert changelog_keys(service) == [[b"L1", b"L2", b"L3"]]
    assert consumed(service) == 4
    assert service.metrics.state_writes_held._value.get() == 4  # L1 held twice, L2 and L3 once
    assert sorted(stored(service, "L1").seen) == ["e0", "e2"]
    assert service.unwritten == {}


async def test_a_batch_that_is_not_held_writes_the_states_held_before_it(service: Service) -> None:
    await score_batches(service, visits(service, ["L1", "L2"], 0), hold=True)
    assert await score_batches(service, visits(service, ["L3"], 2), hold=False) is True
    assert [sorted(keys) for keys in changelog_keys(service)] == [[b"L1", b"L2", b"L3"]]
    assert consumed(service) == 3


async def test_held_states_are_read_from_memory_after_the_cache_was_emptied(service: Service) -> None:
    await score_batches(service, visits(service, ["L1"], 0), hold=True)
    service.caches.clear()  # what the cache's bound does to a lead not written for long
    await score_batches(service, visits(service, ["L1"], 1), hold=True)
    await write_held_states(service, visits(service, ["L1"], 0))
    assert sorted(stored(service, "L1").seen) == ["e0", "e1"]


async def test_a_lead_s_view_shows_its_held_state(service: Service) -> None:
    await score_batches(service, visits(service, ["L1"], 0), hold=True)
    assert stored(service, "L1") is None
    held = lead_state(service, "L1")  # what /leads/{id} shows
    assert held is not None
    assert list(held.seen) == ["e0"]
    await write_held_states(service, visits(service, ["L1"], 0))
    written = lead_state(service, "L1")
    assert written is not None
    assert list(written.seen) == ["e0"]
    assert lead_state(service, "L2") is None


async def test_no_more_is_held_than_the_cache_s_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(store="memory://", data_dir=tmp_path, app_id="b", state_cache_per_partition=2)
    service = create_app(settings)
    monkeypatch.setattr(output, "send_keyed", AsyncMock())
    monkeypatch.setattr(output, "confirm_membership", AsyncMock())
    monkeypatch.setattr(faust_internals, "send_changelog", AsyncMock(return_value=0))
    assert await score_batches(service, visits(service, ["L1", "L2"], 0), hold=True) is False
    assert await score_batches(service, visits(service, ["L3"], 2), hold=True) is True
    assert [sorted(keys) for keys in changelog_keys(service)] == [[b"L1", b"L2", b"L3"]]


async def test_a_failure_while_states_are_held_forgets_them_and_reads_the_batches_again(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    await score_batches(service, visits(service, ["L1"], 0), hold=True)
    send_outputs = output.send_outputs
    monkeypatch.setattr(output, "send_outputs", AsyncMock(side_effect=RuntimeError("broker gone")))
    with pytest.raises(ReadAgain):  # not dead-lettered: the held batch's effects are gone too
        await score_batches(service, visits(service, ["L1"], 1), hold=True)
    assert service.unwritten == {}
    assert service.caches == {}
    assert changelog_keys(service) == []
    # Read again, written after every batch for a while: a failure that repeats is dead-lettered.
    monkeypatch.setattr(output, "send_outputs", send_outputs)
    assert await score_batches(service, visits(service, ["L1"], 0), hold=True) is True
    assert changelog_keys(service) == [[b"L1"]]


async def test_a_failure_without_held_states_dead_letters_the_batch_as_before(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "send_outputs", AsyncMock(side_effect=RuntimeError("broker gone")))
    letters = AsyncMock()
    monkeypatch.setattr(output, "send_dead_letters", letters)
    assert await score_batches(service, visits(service, ["L1"], 0), hold=True) is True
    assert [letter.reason for letter in letters.call_args.args[1]] == ["scoring_error"]
    assert consumed(service) == 1


async def test_a_lost_membership_forgets_the_held_states(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    await score_batches(service, visits(service, ["L1"], 0), hold=True)
    monkeypatch.setattr(output, "confirm_membership", AsyncMock(side_effect=MembershipLost("gone")))
    with pytest.raises(MembershipLost):
        await write_held_states(service, visits(service, ["L1"], 0))
    assert service.unwritten == {}
    assert service.forgotten == set()
    assert changelog_keys(service) == []


async def test_held_states_forgotten_by_the_decay_path_have_the_batches_read_again(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    await score_batches(service, visits(service, ["L1"], 0), hold=True)
    service.forget_states(0)  # what the decay agent does after a failed tick
    with pytest.raises(ReadAgain):
        await write_held_states(service, visits(service, ["L1"], 0))
    # Told once; the batches read again are written after every batch for a while.
    assert await score_batches(service, visits(service, ["L1"], 0), hold=True) is True
    assert service.unwritten == {}
    service.hold_paused.clear()
    await score_batches(service, visits(service, ["L1"], 1), hold=True)
    service.forget_states(0)
    with pytest.raises(ReadAgain):  # and by the scoring path just the same
        await score_batches(service, visits(service, ["L1"], 1), hold=False)


async def test_a_decay_tick_writes_the_leads_it_settles_and_leaves_the_held_states_to_their_batches(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decay, "decay_clock", lambda service, partition, now_ms: now_ms)
    await score_batches(service, visits(service, ["L1", "L2"], 0), hold=True)
    settled = service.unwritten[0].states[b"L1"]
    settled.stage, settled.due_at = Stage.MQL, settled.ref_ms + 1  # an MQL whose score fell meanwhile
    service.due.schedule(0, "L1", settled.due_at)  # due: the tick reads and writes it
    await expire_due(service, 0, settled.ref_ms + 60_000)
    assert changelog_keys(service) == [[b"L1"]]
    assert stored(service, "L1").stage is Stage.NURTURE
    assert stored(service, "L2") is None  # still held, its batch not counted as consumed
    assert set(service.unwritten[0].states) == {b"L1", b"L2"}
    assert consumed(service) == 0
    await write_held_states(service, visits(service, ["L1", "L2"], 0))  # the consumer's flush
    assert sorted(changelog_keys(service)[1]) == [b"L1", b"L2"]  # L1 again: the held object, settled
    assert stored(service, "L1") == service.state_cache(0)[b"L1"]
    assert service.unwritten == {}
    assert consumed(service) == 2


async def test_states_held_in_an_older_group_generation_are_never_written(service: Service) -> None:
    await score_batches(service, visits(service, ["L1"], 0), hold=True)
    service.app.consumer_generation_id += 1  # a rebalance completed
    with pytest.raises(ReadAgain):
        await write_held_states(service, visits(service, ["L1"], 0))
    assert changelog_keys(service) == []


@pytest.mark.parametrize(
    ("env", "hold_s", "min_lag"),
    [
        ({}, 30.0, 5000),
        ({"LEADSCORE_WRITE_BEHIND": "0", "LEADSCORE_WRITE_BEHIND_MIN_LAG": "200"}, 0.0, 200),
        ({"LEADSCORE_WRITE_BEHIND_MIN_LAG": "0"}, 30.0, 0),
    ],
)
def test_the_worker_s_consumer_holds_as_configured(env: dict[str, str], hold_s: float, min_lag: int) -> None:
    consumer = create_app(settings_from_env(env)).app._new_consumer()
    assert (consumer.hold_s, consumer.hold_min_lag) == (hold_s, min_lag)
    assert consumer.group_flush is not None


@pytest.mark.parametrize("env", [{"LEADSCORE_WRITE_BEHIND": "-1"}, {"LEADSCORE_WRITE_BEHIND_MIN_LAG": "-1"}])
def test_bad_write_behind_settings_are_refused(env: dict[str, str]) -> None:
    with pytest.raises(SettingsError):
        settings_from_env(env)
