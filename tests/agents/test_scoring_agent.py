"""The scoring agent in Faust's test context: no broker, the app built from explicit settings."""

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock

import orjson
import pytest

from agents import dead_letters, output
from scoring.state import decode_state
from streams import faust_internals
from streams.app import Service, create_app
from streams.settings import Settings


def resolved(*_args: Any, **_kwargs: Any) -> "asyncio.Future[None]":
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future


class HandedOver:
    """Stands in for ``hand_over``, which dead letters go through (no producer here): records each
    (topic, key, value, headers) and answers at once that the broker has them."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]] = []

    async def __call__(
        self, app: Any, topic: str, records: list[tuple[bytes | None, bytes]], headers: Any = None
    ) -> tuple[list[tuple[Any, list[int]]], None]:
        self.records += [(topic, key, value, headers[i] if headers else []) for i, (key, value) in enumerate(records)]
        return [(resolved(), list(range(len(records))))], None


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    # Settings are fixed before the app exists: the factory builds a fresh app per test.
    settings = Settings(store="memory://", data_dir=tmp_path, app_id=f"agents-{uuid.uuid4().hex[:8]}")
    service = create_app(settings)
    # MQL, nurture and identity messages go out in produce batches (no producer here): recorded.
    monkeypatch.setattr(output, "send_keyed", AsyncMock())
    # Dead letters too (agents/dead_letters.py): recorded instead.
    monkeypatch.setattr(dead_letters, "hand_over", HandedOver())
    # No producer in the test context: the changelog send is recorded instead.
    monkeypatch.setattr(faust_internals, "send_changelog", AsyncMock(return_value=0))
    return service


async def put(context: Any, topic: str, key: bytes | None, value: bytes) -> None:
    """Like the test context's put, but from a named topic of the agent's multi-topic channel."""
    message = context.to_message(key, value, offset=context.sent_offset)
    message.topic = topic
    channel = context.stream().channel
    await channel.put(await channel.decode(message))
    context.sent_offset += 1
    async with context.new_value_processed:
        await asyncio.wait_for(context.new_value_processed.wait(), timeout=10)
    if context._crash_reason:
        raise context._crash_reason


def event(event_id: str, **fields: Any) -> bytes:
    return orjson.dumps({"event_id": event_id, "lead_id": "L1", "occurred_at": int(time.time() * 1000), **fields})


async def test_scoring_agent_writes_the_table_and_sends_one_mql(service: Service) -> None:
    topics = service.settings.topics
    agent = service.app.agents["score-events"]
    async with agent.test_context() as context:
        await put(context, topics.lead_profiles, b"L1", event("p", seniority="vp", company_size=900, country="US"))
        for i in range(3):
            await put(context, topics.web_visits, b"L1", event(f"v{i}", url="/pricing"))
        await put(context, topics.webinar_events, b"L1", event("w", webinar_id="w", status="attended"))
        await put(context, topics.content_downloads, b"L1", event("d", asset_id="a", asset_type="api_docs"))
    state = decode_state(service.leads.data.data[b"L1"])
    sent = faust_internals.send_changelog
    assert isinstance(sent, AsyncMock)
    assert sent.call_count == 6  # one changelog send per scored event (a batch of one)
    assert all(call.args[1] == 0 for call in sent.call_args_list)  # on the event's partition
    assert state.stage.value == "mql"
    assert state.crossings == 1
    send = vars(output)["send_keyed"]  # the AsyncMock the fixture put there
    assert isinstance(send, AsyncMock)
    handoffs = [sent[service.settings.topics.mql_handoff] for sent in (call.args[1] for call in send.call_args_list)]
    handoffs = [records for records in handoffs if records]
    assert len(handoffs) == 1
    assert len(handoffs[0]) == 1
    key, value = handoffs[0][0]
    assert key == b"L1"
    payload = orjson.loads(value)
    assert payload["lead_id"] == "L1"
    assert payload["triggering_event_id"] == "d"
    assert dead_letters.hand_over.records == []  # type: ignore[attr-defined]


async def test_scoring_agent_dead_letters_a_record_from_an_unknown_topic(service: Service) -> None:
    agent = service.app.agents["score-events"]
    async with agent.test_context() as context:
        await put(context, "somewhere-else", b"L1", event("x", url="/pricing"))
    [(topic, key, _, headers)] = dead_letters.hand_over.records  # type: ignore[attr-defined]
    assert (topic, key) == (service.settings.topics.dead_letters, b"L1")
    assert headers == [("leadscore-reason", b"unknown_topic")]
    assert b"L1" not in service.leads.data.data


def test_leads_per_stage_follow_the_states_written_and_the_leads_erased(service: Service) -> None:
    from scoring.engine import BatchResult
    from scoring.state import LeadState, Stage

    def gauges() -> dict[str, float]:
        return {stage.value: service.metrics.leads.labels(stage.value)._value.get() for stage in Stage}

    first = BatchResult()
    first.states.update(
        {"L1": LeadState("L1", stage=Stage.MQL), "L2": LeadState("L2"), "L3": LeadState("L3", stage=Stage.MQL)}
    )
    output.record_states(service, first, 0, {})  # three new leads
    expected = {"lead": 1, "mql": 2, "nurture": 0, "sal": 0, "sql": 0, "customer": 0}
    assert service.stage_counts == expected
    assert gauges() == expected

    second = BatchResult()
    second.states.update({"L1": LeadState("L1", stage=Stage.NURTURE), "L2": LeadState("L2"), "L4": LeadState("L4")})
    second.deleted.add("L3")  # erased
    output.record_states(service, second, 0, {"L1": Stage.MQL, "L2": Stage.LEAD, "L3": Stage.MQL})
    expected = {"lead": 2, "mql": 0, "nurture": 1, "sal": 0, "sql": 0, "customer": 0}
    assert service.stage_counts == expected
    assert gauges() == expected
