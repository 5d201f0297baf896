"""The identity agent's sweep path without a broker: a memory-store service, records handed to
``handle_identities`` as either consumption mode hands them, the changelog send recorded."""

import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest.mock import AsyncMock

import orjson
import pytest

from agents import dead_letters, output
from agents.identity import handle_identities
from scoring.identity import DAY_MS, IdentityConfig, visit_message
from scoring.identity_sweep import SWEEP_KEY, sweep_message
from scoring.partitioner import key_partition
from streams import faust_internals
from streams.app import Service, create_app
from streams.settings import Settings
from tests.agents.test_scoring_agent import HandedOver

PARKING = IdentityConfig(window_ms=30 * DAY_MS)
SWEEPING = IdentityConfig(window_ms=5 * DAY_MS)  # the same keys swept under a shorter window


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Service:
    settings = Settings(store="memory://", data_dir=tmp_path, app_id=f"sweep-{uuid.uuid4().hex[:8]}")
    service = create_app(settings)
    monkeypatch.setattr(output, "send_keyed", AsyncMock())
    monkeypatch.setattr(dead_letters, "hand_over", HandedOver())
    monkeypatch.setattr(faust_internals, "send_changelog", AsyncMock(return_value=0))
    return service


def anon_on(partition: int, prefix: str) -> str:
    """An anonymous id whose key Kafka's default partitioner puts on ``partition`` (of 8)."""
    return next(f"{prefix}{i}" for i in range(1000) if key_partition(f"anon:{prefix}{i}".encode(), 8) == partition)


def record(key: bytes, value: bytes, partition: int, offset: int = 0) -> Any:
    return SimpleNamespace(
        topic="lead-identities", partition=partition, offset=offset, key=key, value=value, timestamp=time.time() * 1000
    )


def visit(anon: str, days_ago: float, partition: int) -> Any:
    at = int(time.time() * 1000 - days_ago * DAY_MS)
    event = orjson.dumps({"event_id": f"{anon}-v", "anonymous_id": anon, "occurred_at": at, "url": "/pricing"})
    return record(f"anon:{anon}".encode(), visit_message(anon, event), partition)


async def test_a_sweep_tombstones_the_expired_keys_of_its_partition_only(service: Service) -> None:
    old, fresh, elsewhere = anon_on(2, "old"), anon_on(2, "fresh"), anon_on(5, "other")
    await handle_identities(service, [visit(old, 10, 2), visit(fresh, 1, 2)], PARKING, {})
    await handle_identities(service, [visit(elsewhere, 10, 5)], PARKING, {})
    store = service.identities.data.data
    assert {f"anon:{a}".encode() for a in (old, fresh, elsewhere)} <= set(store)
    sent = faust_internals.send_changelog
    assert isinstance(sent, AsyncMock)
    sent.reset_mock()

    await handle_identities(service, [record(SWEEP_KEY, sweep_message(2), 2, offset=7)], SWEEPING, {})

    assert sent.call_count == 1
    _table, partition, items = sent.call_args.args
    assert (partition, items) == (2, [(f"anon:{old}".encode(), None)])  # a tombstone on the key's partition
    assert f"anon:{old}".encode() not in store
    assert f"anon:{fresh}".encode() in store
    assert f"anon:{elsewhere}".encode() in store  # another partition's key: its own sweep decides
    assert service.metrics.identity_swept_keys._value.get() == 1
    assert service.metrics.identity_sweeps._value.get() == 1
    assert service.metrics.identity_events.labels("expired")._value.get() == 1


async def test_a_sweep_among_identity_messages_and_a_misaddressed_one(service: Service) -> None:
    old, late = anon_on(1, "old"), anon_on(1, "late")
    await handle_identities(service, [visit(old, 10, 1)], PARKING, {})
    records = [record(SWEEP_KEY, sweep_message(3), 1, 0), visit(late, 1, 1), record(SWEEP_KEY, sweep_message(1), 1, 2)]
    await handle_identities(service, records, SWEEPING, {})
    store = service.identities.data.data
    # The visit in the same batch is parked, and the sweep (once for both sweep records) keeps it.
    assert f"anon:{old}".encode() not in store
    assert f"anon:{late}".encode() in store
    assert service.metrics.identity_events.labels("parked")._value.get() == 2
    assert service.metrics.identity_swept_keys._value.get() == 1
    assert service.metrics.identity_sweeps._value.get() == 1
    [(_, _, _, headers)] = dead_letters.hand_over.records  # type: ignore[attr-defined]  # the sweep addressed to 3, read from 1
    assert headers == [("leadscore-reason", b"invalid_value")]


async def test_a_sweep_with_nothing_expired_writes_nothing(service: Service) -> None:
    fresh = anon_on(0, "fresh")
    await handle_identities(service, [visit(fresh, 1, 0)], PARKING, {})
    sent = faust_internals.send_changelog
    assert isinstance(sent, AsyncMock)
    sent.reset_mock()
    await handle_identities(service, [record(SWEEP_KEY, sweep_message(0), 0)], SWEEPING, {})
    sent.assert_not_called()
    assert service.metrics.identity_sweeps._value.get() == 1
    assert service.metrics.identity_swept_keys._value.get() == 0
