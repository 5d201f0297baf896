"""Send JSON-lines events to the inbound topics their ``type`` names."""

from pathlib import Path

from aiokafka import AIOKafkaProducer

from streams.history import read_jsonl
from streams.kafka_clients import client_options
from streams.settings import Settings
from streams.topics import ensure_topics


async def send_files(settings: Settings, files: tuple[Path, ...]) -> dict[str, int]:
    """Validate every line of every file first, then send them all; returns counts per topic."""
    topics = {kind: topic for topic, kind in settings.topics.inbound().items()}
    messages: list[tuple[str, bytes, bytes]] = []
    for record in read_jsonl(files):  # every line is checked before anything is sent
        if record.key is None or record.kind is None or record.value is None:
            raise ValueError(f"event {record.offset + 1} of the input: 'lead_id' must be a non-empty string")
        messages.append((topics[record.kind], record.key, record.value))
    await ensure_topics(settings)  # never let the broker auto-create a topic with the wrong partitions
    producer = AIOKafkaProducer(**client_options(settings), acks="all", linger_ms=5)
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
