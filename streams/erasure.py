"""Send an erasure request (GDPR) for a lead: one message on ``lead-erasures``, keyed by the lead."""

import time
import uuid

import orjson
from aiokafka import AIOKafkaProducer

from scoring.events import MAX_ID_LENGTH
from scoring.timeutil import format_rfc3339
from streams.kafka_clients import client_options
from streams.settings import Settings
from streams.topics import ensure_topics


def erasure_message(lead_id: str, requested_at_ms: int, event_id: str | None = None) -> bytes:
    """The value of an erasure request (schemas/erasure.schema.json)."""
    if not lead_id or len(lead_id) > MAX_ID_LENGTH:
        raise ValueError(f"a lead id has 1 to {MAX_ID_LENGTH} characters")
    return orjson.dumps(
        {
            "event_id": event_id or str(uuid.uuid4()),
            "lead_id": lead_id,
            "requested_at": format_rfc3339(requested_at_ms),
        }
    )


async def send_erasure(settings: Settings, lead_id: str, requested_at_ms: int | None = None) -> tuple[str, int, int]:
    """Send the request and wait until the broker has it; returns (topic, partition, offset)."""
    value = erasure_message(lead_id, requested_at_ms if requested_at_ms is not None else int(time.time() * 1000))
    await ensure_topics(settings)  # never let the broker auto-create a topic with the wrong partitions
    producer = AIOKafkaProducer(**client_options(settings), acks="all")
    await producer.start()
    try:
        sent = await producer.send_and_wait(settings.topics.erasures, key=lead_id.encode(), value=value)
    finally:
        await producer.stop()
    return settings.topics.erasures, sent.partition, sent.offset
