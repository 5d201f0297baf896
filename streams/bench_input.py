"""Benchmark input: the realistic catch-up history, the recovery table's profile events, the
latency run's journey templates, and a fast producer.

The producer uses aiokafka's batch API (one ``BatchBuilder`` per topic-partition) and places each
record with Kafka's default partitioner (murmur2 of the key), as the service requires of every
producer, so input production is not what limits a run.
"""

import asyncio
import random
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from scoring.engine import InputRecord, Scorer
from scoring.events import EventKind
from scoring.partitioner import key_partition
from streams.settings import TopicNames
from streams.synthetic import DAY_MS, TimedEvent, history, journey, lead_id_for

# Catch-up journeys start within SPREAD_MS and all end before now (the longest journeys of the
# demo generator last about 100 days); events later than now would be dead-lettered.
SPREAD_MS = 90 * DAY_MS
TAIL_MS = 150 * DAY_MS
MAX_BATCH_BYTES = 512 * 1024


@dataclass(frozen=True, slots=True)
class Record:
    """One record to produce: topic, key (the lead id), JSON value, and the record's timestamp
    (the event's time, as a backfill must stamp it; None: the time it is produced)."""

    topic: str
    key: bytes
    value: bytes
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class CatchUpInput:
    """The catch-up input: records in ``occurred_at`` order, and what they hold."""

    records: list[Record]
    leads: int
    by_topic: dict[str, int]
    mean_value_bytes: float


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (murmur2 of the key, as the Java client and aiokafka place keys)."""
    return key_partition(key, partitions)


def topic_of(topics: TopicNames) -> dict[EventKind, str]:
    """Event kind -> its inbound topic."""
    return {kind: topic for topic, kind in topics.inbound().items()}


def _rounds(seed: int, leads: int, start_ms: int) -> Iterator[list[TimedEvent]]:
    """Rounds of ``leads`` journeys; rounds after the first reuse the first round's lead ids (so
    a lead can have several journeys) under fresh event ids."""
    first = history(seed, leads, start_ms, SPREAD_MS)
    yield [event for j in first for event in j.events]
    ids = [j.lead_id for j in first]
    number = 1
    while True:
        again = history(seed + number, leads, start_ms, SPREAD_MS)
        events = []
        for lead_id, j in zip(ids, again, strict=True):
            for i, event in enumerate(j.events):
                payload = {**event.payload, "lead_id": lead_id, "event_id": f"{lead_id}-r{number}-{i}"}
                events.append(TimedEvent(event.kind, lead_id, payload))
        yield events
        number += 1


def catch_up_input(seed: int, leads: int, events: int, now_ms: int, topics: TopicNames) -> CatchUpInput:
    """``leads`` journeys of the demo generator's realistic mix (more rounds of journeys for the
    same leads if they hold fewer than ``events`` events), all in the past; the earliest ``events``
    events by ``occurred_at``, encoded as records."""
    pool: list[TimedEvent] = []
    for chunk in _rounds(seed, leads, now_ms - TAIL_MS - SPREAD_MS):
        pool.extend(e for e in chunk if e.occurred_at <= now_ms)
        if len(pool) >= events:
            break
    pool.sort(key=lambda e: e.occurred_at)
    del pool[events:]
    names = topic_of(topics)
    # Stamped with their event times, as README *How it works* tells producers of history to do:
    # the worker's decay clock then follows the history it reads, not the time it reads it.
    records = [Record(names[e.kind], e.lead_id.encode(), orjson.dumps(e.payload), e.occurred_at) for e in pool]
    by_topic: dict[str, int] = {}
    for record in records:
        by_topic[record.topic] = by_topic.get(record.topic, 0) + 1
    mean = sum(len(r.value) for r in records) / max(len(records), 1)
    return CatchUpInput(records, len({e.lead_id for e in pool}), by_topic, mean)


_SENIORITY = ("c_level", "vp", "director", "manager", "individual_contributor", "intern")
_INDUSTRY = ("software", "saas", "fintech", "manufacturing", "retail", "education")
_COUNTRY = ("US", "GB", "DE", "FR", "IN", "BR", "AU", "JP")


def profile_records(leads: int, now_ms: int, topic: str, seed: int = 7) -> Iterator[Record]:
    """One profile event per lead (``rec-0000000`` ...): the cheapest way to create ``leads`` leads."""
    rng = random.Random(seed)
    for i in range(leads):
        lead_id = f"rec-{i:07d}"
        payload = {
            "event_id": f"{lead_id}-p",
            "lead_id": lead_id,
            "occurred_at": now_ms - rng.randrange(30 * DAY_MS),
            "job_title": "Engineering Manager",
            "seniority": rng.choice(_SENIORITY),
            "company_size": rng.randrange(5, 20_000),
            "industry": rng.choice(_INDUSTRY),
            "country": rng.choice(_COUNTRY),
            "email": f"user{i}@company-{i % 997}.example",
        }
        yield Record(topic, lead_id.encode(), orjson.dumps(payload))


# -- latency journeys -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Template:
    """A journey's events (kinds and payloads), replayed at one instant under a fresh lead id."""

    kinds: tuple[EventKind, ...]
    payloads: tuple[dict[str, Any], ...]


@dataclass
class Templates:
    """Journey templates split by whether they cross the MQL threshold when replayed at one instant."""

    qualifying: list[Template] = field(default_factory=list)
    other: list[Template] = field(default_factory=list)

    @property
    def natural_share(self) -> float:
        """The share of qualifying journeys in the demo generator's mix."""
        return len(self.qualifying) / max(len(self.qualifying) + len(self.other), 1)


def _qualifies(scorer: Scorer, events: list[TimedEvent], now_ms: int) -> bool:
    records = [
        InputRecord(e.kind, e.kind.value, 0, i, e.lead_id.encode(), orjson.dumps({**e.payload, "occurred_at": now_ms}))
        for i, e in enumerate(events)
    ]
    return bool(scorer.process_batch(records, {}, now_ms).mql)


def latency_templates(seed: int, count: int, scorer: Scorer, now_ms: int) -> Templates:
    """``count`` journeys of the realistic mix, screened offline by the scoring core."""
    rng = random.Random(seed)
    templates = Templates()
    for i in range(count):
        j = journey(rng, lead_id_for(i, seed), now_ms)
        template = Template(tuple(e.kind for e in j.events), tuple(e.payload for e in j.events))
        (templates.qualifying if _qualifies(scorer, j.events, now_ms) else templates.other).append(template)
    return templates


class JourneyStream:
    """Fresh journeys from templates: a qualifying one with probability ``share``, else another,
    each under a new lead id, as (kind, lead id, payload without ``occurred_at``). A new lead is a
    new person: its e-mail address and anonymous id are its own too (a template's, repeated under
    many lead ids, would make every repeat an identity conflict and a dead letter)."""

    def __init__(self, templates: Templates, share: float, run: str, seed: int) -> None:
        self.templates = templates
        self.share = share
        self.run = run
        self.rng = random.Random(seed)
        self.started = 0

    def __iter__(self) -> Iterator[tuple[EventKind, str, dict[str, Any]]]:
        while True:
            pool = self.templates.qualifying if self.rng.random() < self.share else self.templates.other
            template = self.rng.choice(pool)
            lead_id = f"lat-{self.run}-{self.started}"
            self.started += 1
            for i, (kind, payload) in enumerate(zip(template.kinds, template.payloads, strict=True)):
                yield kind, lead_id, {**payload, **_own_identity(payload, lead_id), "event_id": f"{lead_id}-{i}"}


def _own_identity(payload: dict[str, Any], lead_id: str) -> dict[str, str]:
    """The lead id, and the lead's own e-mail address (the template's domain) and anonymous id
    where the template's event has them."""
    fields = {"lead_id": lead_id}
    if "email" in payload:
        fields["email"] = f"{lead_id}@{str(payload['email']).rpartition('@')[2]}"
    if "anonymous_id" in payload:
        fields["anonymous_id"] = f"anon-{lead_id}"
    return fields


# -- producing ---------------------------------------------------------------------------------------


def new_producer(client: Mapping[str, Any]) -> AIOKafkaProducer:
    """A producer for the batch API: large batches, acks from all replicas. ``client`` is
    :func:`streams.kafka_clients.client_options` (bootstrap servers and security)."""
    return AIOKafkaProducer(**client, acks="all", max_batch_size=MAX_BATCH_BYTES, max_request_size=4 * MAX_BATCH_BYTES)


class BatchSender:
    """Appends records to one open batch per topic-partition and sends full ones."""

    def __init__(self, producer: AIOKafkaProducer, partitions: int) -> None:
        self.producer = producer
        self.partitions = partitions
        self.batches: dict[tuple[str, int], Any] = {}
        self.futures: list[asyncio.Future[Any]] = []
        self._partition_of: dict[bytes, int] = {}

    def partition(self, key: bytes) -> int:
        """The key's partition (cached: leads repeat)."""
        found = self._partition_of.get(key)
        if found is None:
            found = self._partition_of[key] = partition_for(key, self.partitions)
        return found

    async def add(self, topic: str, key: bytes, value: bytes, timestamp_ms: int | None = None) -> None:
        """Add a record (stamped ``timestamp_ms``, else now); send its topic-partition's batch when full."""
        tp = (topic, self.partition(key))
        batch = self.batches.get(tp)
        if batch is None:
            batch = self.batches[tp] = self.producer.create_batch()
        if batch.append(key=key, value=value, timestamp=timestamp_ms) is None:
            await self._send(tp, batch)
            batch = self.batches[tp] = self.producer.create_batch()
            batch.append(key=key, value=value, timestamp=timestamp_ms)

    async def _send(self, tp: tuple[str, int], batch: Any) -> None:
        self.futures.append(await self.producer.send_batch(batch, tp[0], partition=tp[1]))
        if len(self.futures) > 256:
            self.futures = [f for f in self.futures if not f.done() or f.exception() is not None]

    async def send_open(self) -> None:
        """Send every open batch now, without waiting for the broker."""
        batches, self.batches = self.batches, {}
        for tp, batch in batches.items():
            if batch.record_count():
                await self._send(tp, batch)

    async def flush(self) -> None:
        """Send every open batch and wait until the broker has everything sent so far."""
        await self.send_open()
        futures, self.futures = self.futures, []
        await asyncio.gather(*futures)


async def produce(client: Mapping[str, Any], records: Iterable[Record], partitions: int) -> int:
    """Produce records (keyed, Kafka's default partitioning) and wait for all; return the count."""
    producer = new_producer(client)
    await producer.start()
    count = 0
    try:
        sender = BatchSender(producer, partitions)
        for record in records:
            await sender.add(record.topic, record.key, record.value, record.timestamp_ms)
            count += 1
        await sender.flush()
    finally:
        await producer.stop()
    return count
