"""Send JSON-lines events to the inbound topics their ``type`` names."""

from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from scoring.events import EventKind
from streams.settings import Settings
from streams.topics import ensure_topics


def topic_for(settings: Settings, kind: str) -> str:
    """The inbound topic of an event type."""
    by_kind = {k.value: topic for topic, k in settings.topics.inbound().items()}
    if kind not in by_kind:
        raise ValueError(f"unknown type {kind!r} (known: {', '.join(k.value for k in EventKind)})")
    return by_kind[kind]


def parse_line(settings: Settings, line: bytes, where: str) -> tuple[str, bytes, bytes]:
    """(topic, key, value) for one JSON line; raises ValueError naming ``where`` if it is unusable."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{where}: not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise ValueError(f"{where}: expected a JSON object")
    lead_id, kind = event.get("lead_id"), event.get("type")
    if not isinstance(lead_id, str) or not lead_id:
        raise ValueError(f"{where}: 'lead_id' must be a non-empty string")
    if not isinstance(kind, str):
        raise ValueError(f"{where}: 'type' must name the event type")
    try:
        topic = topic_for(settings, kind)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    return topic, lead_id.encode(), line.strip()


async def send_files(settings: Settings, files: tuple[Path, ...]) -> dict[str, int]:
    """Validate every line of every file first, then send them all; returns counts per topic."""
    messages: list[tuple[str, bytes, bytes]] = []
    for path in files:
        with path.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    messages.append(parse_line(settings, line, f"{path}:{number}"))
    await ensure_topics(settings)  # never let the broker auto-create a topic with the wrong partitions
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=5)
    await producer.start()
    counts: dict[str, int] = {}
    try:
        for topic, key, value in messages:
            await producer.send(topic, key=key, value=value)
            counts[topic] = counts.get(topic, 0) + 1
        await producer.flush()
    finally:
        await producer.stop()
    return counts
