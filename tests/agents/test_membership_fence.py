"""The fence against a worker frozen past its session timeout (streams/faust_internals.py
``confirm_membership``, agents/output.py ``fenced``), with a scripted group coordinator.

The real-broker scenario is tests/reliability/test_sigstop.py; these pin down each answer.
"""

import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock

import orjson
import pytest

from agents import dead_letters, output
from agents.batch import score_batches
from scoring.engine import BatchResult
from scoring.outputs import MqlEvent, Score
from scoring.state import LeadState
from streams import faust_internals
from streams.app import Service, create_app
from streams.faust_internals import MembershipLost, confirm_membership
from streams.metrics import CPU_STEPS
from streams.settings import Settings
from tests.agents.test_identity_sweep import visit
from tests.agents.test_scoring_agent import HandedOver

GENERATION = 7
UNREACHABLE, ACCEPTED, UNKNOWN_MEMBER = "unreachable", "accepted", "unknown member"


class Coordinator:
    """Answers heartbeats as scripted, as aiokafka's coordinator does: an unknown member resets
    the generation to -1 and answers False; an unreachable coordinator answers False."""

    def __init__(self, *answers: str) -> None:
        self.generation = GENERATION
        self.answers = list(answers)
        self.sent = 0

    async def _do_heartbeat(self) -> bool:
        self.sent += 1
        answer = self.answers.pop(0)
        if answer == UNKNOWN_MEMBER:
            self.generation = -1
        return answer == ACCEPTED


class Thread:
    async def call_thread(self, fun: Callable[[], Awaitable[Any]]) -> Any:
        return await fun()


def fake_app(coordinator: Coordinator, session_timeout_s: float = 8.0) -> Any:
    thread = Thread()
    thread._consumer = SimpleNamespace(_coordinator=coordinator)  # type: ignore[attr-defined]
    consumer = SimpleNamespace(_thread=thread)
    return SimpleNamespace(
        _consumer=consumer,
        consumer=consumer,
        conf=SimpleNamespace(broker_session_timeout=session_timeout_s),
        consumer_generation_id=GENERATION,
        should_stop=False,
    )


async def test_a_heartbeat_accepted_within_half_the_session_is_proof_enough() -> None:
    coordinator = Coordinator(ACCEPTED)
    app = fake_app(coordinator)
    await confirm_membership(app)  # no heartbeat timed yet: asks once
    assert coordinator.sent == 1
    await confirm_membership(app)  # that heartbeat is fresh: no second round trip
    assert coordinator.sent == 1


async def test_the_heartbeat_routine_keeps_the_lease_fresh() -> None:
    coordinator = Coordinator(ACCEPTED, ACCEPTED)
    app = fake_app(coordinator)
    await confirm_membership(app)
    coordinator.leadscore_heartbeat_ok = (GENERATION, time.monotonic() - 60)  # type: ignore[attr-defined]
    assert await coordinator._do_heartbeat()  # what aiokafka's heartbeat task calls: now timed
    await confirm_membership(app)
    assert coordinator.sent == 2


async def test_a_worker_thawed_after_its_session_expired_is_refused() -> None:
    coordinator = Coordinator(ACCEPTED, UNKNOWN_MEMBER)
    app = fake_app(coordinator)
    await confirm_membership(app)
    # Frozen for longer than the session: its last accepted heartbeat is 20 s old.
    coordinator.leadscore_heartbeat_ok = (GENERATION, time.monotonic() - 20)  # type: ignore[attr-defined]
    with pytest.raises(MembershipLost):
        await confirm_membership(app)
    assert coordinator.sent == 2


async def test_a_reset_or_newer_generation_is_refused_without_asking() -> None:
    coordinator = Coordinator()
    coordinator.generation = -1
    with pytest.raises(MembershipLost):
        await confirm_membership(fake_app(coordinator))
    coordinator.generation = GENERATION + 1  # rejoined; the app has not seen the new assignment yet
    with pytest.raises(MembershipLost):
        await confirm_membership(fake_app(coordinator))
    assert coordinator.sent == 0


async def test_an_unreachable_coordinator_is_asked_again_until_it_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(faust_internals, "MEMBERSHIP_RETRY_S", 0)
    coordinator = Coordinator(UNREACHABLE, UNREACHABLE, ACCEPTED)
    await confirm_membership(fake_app(coordinator))
    assert coordinator.sent == 3


async def test_a_stopping_worker_without_proof_gives_up() -> None:
    coordinator = Coordinator()
    app = fake_app(coordinator)
    app.should_stop = True
    with pytest.raises(MembershipLost):
        await confirm_membership(app)


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    settings = Settings(store="memory://", data_dir=tmp_path, app_id=f"fence-{uuid.uuid4().hex[:8]}")
    service = create_app(settings)
    monkeypatch.setattr(output, "send_keyed", AsyncMock())
    monkeypatch.setattr(faust_internals, "send_changelog", AsyncMock(return_value=0))
    return service


def crossing() -> BatchResult:
    state = LeadState(lead_id="L1")
    mql = MqlEvent(
        lead_id="L1",
        crossing=1,
        score=Score(score=80.0, fit=40.0, engagement=40.0, breakdown=()),
        threshold=70.0,
        crossed_at=1,
        triggering_event_id="t1",
        rules_version="v",
    )
    return BatchResult(states={"L1": state}, mql=[mql])


async def test_a_lost_member_sends_nothing_and_writes_nothing(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "confirm_membership", AsyncMock(side_effect=MembershipLost("gone")))
    with pytest.raises(MembershipLost):
        await output.apply_result(service, crossing(), 0, {})
    output.send_keyed.assert_not_called()  # type: ignore[attr-defined]
    faust_internals.send_changelog.assert_not_called()  # type: ignore[attr-defined]
    assert service.metrics.zombie_writes_refused._value.get() == 1


async def test_membership_lost_while_the_outputs_were_sent_writes_no_state(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "confirm_membership", AsyncMock(side_effect=[None, MembershipLost("gone")]))
    with pytest.raises(MembershipLost):
        await output.apply_result(service, crossing(), 0, {})
    output.send_keyed.assert_called_once()  # type: ignore[attr-defined]  # the MQL (same id when redone)
    faust_internals.send_changelog.assert_not_called()  # type: ignore[attr-defined]
    assert service.state_cache(0) == {}


async def test_a_member_writes(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "confirm_membership", AsyncMock())
    await output.apply_result(service, crossing(), 0, {})
    faust_internals.send_changelog.assert_called_once()  # type: ignore[attr-defined]
    assert service.metrics.zombie_writes_refused._value.get() == 0


async def test_a_lost_member_leaves_identity_messages_unacked_not_dead_lettered(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "confirm_membership", AsyncMock(side_effect=MembershipLost("gone")))
    monkeypatch.setattr(dead_letters, "hand_over", HandedOver())  # dead letters would go here
    record = visit("a1", days_ago=0, partition=3)  # parked: the identity path writes its key
    assert service.identity_batch is not None
    with pytest.raises(MembershipLost):  # the batch consumer rewinds; the next owner reads them
        await service.identity_batch(SimpleNamespace(topic=record.topic, partition=record.partition), [record])
    faust_internals.send_changelog.assert_not_called()  # type: ignore[attr-defined]
    assert dead_letters.hand_over.records == []  # type: ignore[attr-defined]
    assert service.metrics.zombie_writes_refused._value.get() == 1


async def test_a_member_writes_identity_states(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "confirm_membership", AsyncMock())
    record = visit("a1", days_ago=0, partition=3)  # parked: the identity path writes its key
    assert service.identity_batch is not None
    await service.identity_batch(SimpleNamespace(topic=record.topic, partition=record.partition), [record])
    faust_internals.send_changelog.assert_called_once()  # type: ignore[attr-defined]


def fetched_visits(service: Service, count: int) -> list[tuple[Any, list[Any]]]:
    """One fetched batch of ``count`` web visits of one lead, as the batch consumer hands it over."""
    topic = service.settings.topics.web_visits
    at = int(time.time() * 1000)
    records = [
        SimpleNamespace(
            topic=topic,
            partition=0,
            offset=i,
            key=b"L1",
            value=orjson.dumps({"event_id": f"e{i}", "lead_id": "L1", "occurred_at": at, "url": "/pricing"}),
            timestamp=at,
        )
        for i in range(count)
    ]
    return [(SimpleNamespace(topic=topic, partition=0), records)]


def consumed(service: Service) -> float:
    return float(service.metrics.events_consumed.labels(service.settings.topics.web_visits, "web_visit")._value.get())


async def test_a_batch_counts_as_consumed_once_its_states_are_written(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "confirm_membership", AsyncMock())
    await score_batches(service, fetched_visits(service, 3))
    faust_internals.send_changelog.assert_called_once()  # type: ignore[attr-defined]
    assert consumed(service) == 3


async def test_a_batch_dropped_by_a_lost_member_is_not_counted_as_consumed(
    service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "confirm_membership", AsyncMock(side_effect=MembershipLost("gone")))
    with pytest.raises(MembershipLost):  # the batch consumer reads the batch again (or its next owner does)
        await score_batches(service, fetched_visits(service, 3))
    assert consumed(service) == 0


async def test_a_batch_counts_the_cpu_of_its_steps(service: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output, "confirm_membership", AsyncMock())
    await score_batches(service, fetched_visits(service, 50))
    cpu = {step: service.metrics.step_cpu.labels(step)._value.get() for step in CPU_STEPS}
    assert all(seconds > 0 for seconds in cpu.values()), cpu
