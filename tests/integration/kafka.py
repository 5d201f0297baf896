"""Talking to the test broker: where it is, producing, and reading topics until a condition holds."""

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from scoring.partitioner import key_partition

Message = tuple[str, bytes | None, bytes | None]
# Timestamped messages: (topic, key, value, record timestamp in wall ms).
Timed = tuple[str, bytes, bytes, int]
TOPICS = {
    "web_visit": "web-visits",
    "email_event": "email-events",
    "content_download": "content-downloads",
    "webinar_event": "webinar-events",
    "lead_profile": "lead-profiles",
    "sales_feedback": "sales-feedback",
}


def journey(names: str, lead: str, start_ms: int) -> list[Message]:
    """A lead that qualifies, as (topic, key, value) messages: fit 32, pricing three times and a
    demo webinar attended (score 85). Every one of its events is needed to reach 75."""
    events: list[tuple[str, dict[str, Any]]] = [
        ("lead_profile", {"seniority": "director", "company_size": 800, "industry": "software", "country": "DE"}),
        ("web_visit", {"url": "https://www.example.com/pricing", "utm_source": "linkedin"}),
        ("web_visit", {"url": "/pricing"}),
        ("web_visit", {"url": "/pricing/enterprise"}),
        ("webinar_event", {"webinar_id": "w1", "status": "attended", "webinar_type": "demo"}),
    ]
    return [
        (
            names + TOPICS[kind],
            lead.encode(),
            orjson.dumps({"event_id": f"{lead}-{i}", "lead_id": lead, "occurred_at": start_ms + i * 10, **fields}),
        )
        for i, (kind, fields) in enumerate(events)
    ]


def same_partition_leads(lead: str, count: int, partitions: int) -> list[str]:
    """``count`` filler lead ids on the same partition as ``lead`` (Kafka's default partitioner)."""
    partition = key_partition(lead.encode(), partitions)
    leads = (f"filler-{i}" for i in range(100 * count))
    return [f for f in leads if key_partition(f.encode(), partitions) == partition][:count]


def docker_answers() -> bool:
    """Whether a Docker engine answers here (the client alone is not enough)."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@dataclass
class Received:
    """A record read back from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def json(self) -> Any:
        assert self.value is not None
        return orjson.loads(self.value)


async def produce(bootstrap: str, messages: Sequence[tuple[str, bytes | None, bytes | None]]) -> None:
    """Send (topic, key, value) messages in order and wait until the broker has them all."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for topic, key, value in messages:
            await producer.send(topic, key=key, value=value)
        await producer.flush()
    finally:
        await producer.stop()


async def produce_timed(bootstrap: str, messages: list[Timed]) -> None:
    """Send messages with the record timestamps of when they happened, as a backlog built up
    during an outage holds them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    await producer.start()
    try:
        for topic, key, value, timestamp_ms in messages:
            await producer.send(topic, key=key, value=value, timestamp_ms=timestamp_ms)
        await producer.flush()
    finally:
        await producer.stop()


async def read_until(
    bootstrap: str,
    topics: list[str],
    done: Callable[[list[Received]], bool],
    timeout_s: float = 60.0,
    settle_s: float = 0.0,
) -> list[Received]:
    """Read the topics from the beginning until ``done(records)`` holds (or the timeout passes),
    then keep reading for ``settle_s`` more seconds, to catch anything sent twice."""
    consumer = AIOKafkaConsumer(
        *topics, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records: list[Received] = []
    deadline = time.monotonic() + timeout_s
    settle_until: float | None = None
    try:
        while time.monotonic() < (settle_until or deadline):
            batch = await consumer.getmany(timeout_ms=500)
            for tp, messages in batch.items():
                records.extend(
                    Received(tp.topic, tp.partition, m.offset, m.key, m.value, list(m.headers or [])) for m in messages
                )
            if settle_until is None and done(records):
                settle_until = time.monotonic() + settle_s
                if settle_s == 0:
                    break
    finally:
        await consumer.stop()
    return records


async def topic_config(bootstrap: str, topic: str, name: str, timeout_s: float = 10.0) -> str:
    """One configuration value of a topic, as the broker describes it (waiting while a topic just
    created is described without it: seen once in the test tier)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    await admin.start()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
            entries = {entry[0]: entry[1] for entry in response.resources[0][4]}  # (name, value, ...)
            if name in entries or time.monotonic() > deadline:
                return str(entries[name])
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


def run(coro: Any) -> Any:
    """Run a coroutine from a synchronous test."""
    return asyncio.run(coro)


def bootstrap_from_env() -> str | None:
    """The broker named by LEADSCORE_TEST_BOOTSTRAP, if any."""
    return os.environ.get("LEADSCORE_TEST_BOOTSTRAP") or None
