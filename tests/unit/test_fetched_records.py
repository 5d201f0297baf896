"""Inbound records are fetched as the scoring core's input records (streams.faust_internals
``InputRecordsOf``): the fetcher's records, parsed from Kafka's own record-batch bytes."""

import asyncio
from typing import Any

from aiokafka.structs import ConsumerRecord

from scoring.engine import InputRecord
from scoring.events import EventKind
from streams.app import create_app
from streams.bench_floor import fetched, record_batch
from streams.faust_internals import InputRecordsOf
from streams.settings import settings_from_env

ROWS = [  # offset, timestamp, key, value
    (40, 1_700_000_000_000, b"lead-1", b'{"a":1}'),
    (41, 1_700_000_000_500, None, b'{"a":2}'),
    (42, 1_700_000_001_000, b"lead-2", None),
]


def _fetched(topic: str, deserializer: Any, fetch_offset: int = 0) -> list[Any]:
    return fetched(topic, 3, record_batch(ROWS), deserializer, fetch_offset)


def test_an_inbound_topic_s_records_are_fetched_as_input_records_of_its_kind() -> None:
    records = _fetched("web-visits", InputRecordsOf({"web-visits": EventKind.WEB_VISIT}))
    assert records == [
        InputRecord(EventKind.WEB_VISIT, "web-visits", 3, offset, key, value, timestamp)
        for offset, timestamp, key, value in ROWS
    ]
    assert all(type(r) is InputRecord for r in records)


def test_records_below_the_fetch_offset_are_still_skipped() -> None:
    records = _fetched("web-visits", InputRecordsOf({"web-visits": EventKind.WEB_VISIT}), fetch_offset=41)
    assert [r.offset for r in records] == [41, 42]


def test_other_topics_and_other_consumers_get_consumer_records() -> None:
    stock = _fetched("lead-identities", None)
    assert all(type(r) is ConsumerRecord for r in stock)
    assert [(r.topic, r.partition, r.offset, r.timestamp, r.key, r.value) for r in stock] == [
        ("lead-identities", 3, offset, timestamp, key, value) for offset, timestamp, key, value in ROWS
    ]
    # A topic the consumer does not fetch as input records: its records as stock aiokafka builds them.
    other = _fetched("lead-identities", InputRecordsOf({"web-visits": EventKind.WEB_VISIT}))
    assert other == stock


def test_the_deserializer_returns_keys_as_they_are() -> None:
    of = InputRecordsOf({"web-visits": EventKind.WEB_VISIT})
    assert of(b"lead-1") == b"lead-1"
    assert of(None) is None


def _key_deserializer(env: dict[str, str]) -> Any:
    """The key deserializer of the aiokafka consumer a worker with ``env`` builds (not started)."""
    consumer = create_app(settings_from_env(env)).app._new_consumer()

    async def build() -> Any:  # aiokafka builds its clients in a running event loop
        return consumer._thread._create_worker_consumer(consumer.transport)._key_deserializer

    return asyncio.run(build())


def test_a_batch_worker_fetches_its_inbound_topics_and_only_them_as_input_records() -> None:
    settings = settings_from_env({"LEADSCORE_CONSUMPTION": "batch"})
    of = _key_deserializer({"LEADSCORE_CONSUMPTION": "batch"})
    assert isinstance(of, InputRecordsOf)
    assert of.kinds == settings.topics.inbound()
    assert settings.topics.identities not in of.kinds


def test_an_agent_worker_fetches_consumer_records() -> None:
    # Faust's per-message path builds its events from every field of a ConsumerRecord.
    assert _key_deserializer({"LEADSCORE_CONSUMPTION": "agent"}) is None
