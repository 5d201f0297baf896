"""Send JSON-lines events to the inbound topics their ``type`` names, anonymous web visits keyed by
their ``anonymous_id``, and ``identify`` lines to ``lead-identities``."""

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from scoring.errors import InvalidEvent
from scoring.events import EventKind
from scoring.identity import ANON_PREFIX, decode_identity, identify_event_id
from scoring.timeutil import format_rfc3339
from streams.history import KINDS, parse_record
from streams.kafka_clients import client_options
from streams.settings import Settings
from streams.topics import ensure_topics

IDENTIFY = "identify"


def _lines(files: tuple[Path, ...]) -> Iterator[tuple[str, bytes]]:
    """``(where, line)`` of every non-blank line, in file order."""
    for path in files:
        with path.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    yield f"{path}:{number}", line.strip()


def identify_record(settings: Settings, payload: dict[str, Any], where: str, now_ms: int) -> tuple[str, bytes, bytes]:
    """The ``lead-identities`` record of an ``identify`` line (``anonymous_id``, ``lead_id``;
    ``event_id`` and ``occurred_at`` default as in the collector's /v1/identify), checked by the
    worker's own decoder; raises ValueError naming ``where``."""
    message = {
        "type": IDENTIFY,
        "event_id": payload.get("event_id", identify_event_id(payload.get("anonymous_id"), payload.get("lead_id"))),
        "anonymous_id": payload.get("anonymous_id"),
        "lead_id": payload.get("lead_id"),
        "occurred_at": payload.get("occurred_at", format_rfc3339(now_ms)),
    }
    extra = sorted(set(payload) - set(message))
    if extra:
        raise ValueError(f"{where}: unknown field {extra[0]!r} in an identify line (fields: {', '.join(message)})")
    anonymous_id = message["anonymous_id"]
    key = f"{ANON_PREFIX}{anonymous_id}".encode() if isinstance(anonymous_id, str) else b""
    value = orjson.dumps({name: v for name, v in message.items() if v is not None})
    try:
        decode_identity(key, value)
    except InvalidEvent as exc:
        raise ValueError(f"{where}: {exc.detail}") from None
    return settings.topics.identities, key, value


def read_messages(settings: Settings, files: tuple[Path, ...], now_ms: int) -> list[tuple[str, bytes, bytes]]:
    """Every line of every file as ``(topic, key, value)``, each checked; raises ValueError at the
    first line that cannot be sent. Events go as they are, keyed by ``lead_id``, or, for a web
    visit without one, by its ``anonymous_id`` (the worker parks it until the visitor is identified)."""
    topics = {kind: topic for topic, kind in settings.topics.inbound().items()}
    messages: list[tuple[str, bytes, bytes]] = []
    for where, line in _lines(files):
        try:
            payload = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{where}: not JSON: {exc}") from None
        if not isinstance(payload, dict):
            raise ValueError(f"{where}: expected a JSON object")
        kind = payload.get("type")
        if kind == IDENTIFY:
            messages.append(identify_record(settings, payload, where, now_ms))
            continue
        if kind not in KINDS:
            raise ValueError(f"{where}: unknown type {kind!r} (known: {', '.join([*KINDS, IDENTIFY])})")
        record = parse_record(line, where, len(messages))
        key, anonymous_id = record.key, payload.get("anonymous_id")
        if key is None and record.kind is EventKind.WEB_VISIT and payload.get("lead_id") is None:
            if not isinstance(anonymous_id, str) or not anonymous_id:
                raise ValueError(f"{where}: a web_visit needs 'lead_id' or, anonymous, 'anonymous_id'")
            key = anonymous_id.encode()
        if not key or record.kind is None or record.value is None:
            raise ValueError(f"{where}: 'lead_id' must be a non-empty string")
        messages.append((topics[record.kind], key, record.value))
    return messages


async def send_files(settings: Settings, files: tuple[Path, ...]) -> dict[str, int]:
    """Validate every line of every file first, then send them all; returns counts per topic."""
    messages = read_messages(settings, files, int(time.time() * 1000))  # nothing is sent before all pass
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
