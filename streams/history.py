"""Histories of inbound events for replay and calibration: JSON-lines files, or the inbound topics
of a broker read from the beginning without a consumer group (nothing is committed, no live state
is touched)."""

import asyncio
from collections.abc import Iterable
from pathlib import Path

import orjson

from scoring.engine import InputRecord
from scoring.events import EventKind
from streams.settings import Settings
from streams.synthetic import TimedEvent

KINDS = {kind.value: kind for kind in EventKind}


def parse_record(line: bytes, where: str, offset: int) -> InputRecord:
    """One JSON line with a ``type`` as the record its topic would carry (the value is the line
    itself, as ``leadscore send`` sends it); raises ValueError naming ``where``."""
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{where}: not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise ValueError(f"{where}: expected a JSON object")
    kind = KINDS.get(str(event.get("type")))
    if kind is None:
        raise ValueError(f"{where}: unknown type {event.get('type')!r} (known: {', '.join(KINDS)})")
    lead_id = event.get("lead_id")
    key = lead_id.encode() if isinstance(lead_id, str) else None
    return InputRecord(kind, kind.value, 0, offset, key, line.strip())


def read_jsonl(paths: Iterable[Path]) -> list[InputRecord]:
    """The records of JSON-lines files, in file order; blank lines are skipped."""
    records: list[InputRecord] = []
    for path in paths:
        with path.open("rb") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    records.append(parse_record(line, f"{path}:{number}", len(records)))
    return records


def event_line(event: TimedEvent) -> bytes:
    """An event as one JSON line with its ``type``."""
    return orjson.dumps({"type": event.kind.value, **event.payload})


def write_jsonl(path: Path, events: Iterable[TimedEvent]) -> int:
    """Write events as JSON lines; returns how many."""
    count = 0
    with path.open("wb") as handle:
        for event in events:
            handle.write(event_line(event) + b"\n")
            count += 1
    return count


async def read_topics(settings: Settings, timeout_s: float = 60.0) -> list[InputRecord]:
    """Every record of the inbound topics up to their current end offsets, ordered by topic,
    partition and offset. No consumer group: nothing is committed and no worker is disturbed."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    inbound = settings.topics.inbound()
    partitions = [
        TopicPartition(topic, p) for topic, count in (await _partition_counts(settings)).items() for p in range(count)
    ]
    from streams.kafka_clients import check_connection, client_options

    await check_connection(settings)  # refused credentials: a clear error, not a hang
    consumer = AIOKafkaConsumer(
        **client_options(settings),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # "latest" could win a race with seek_to_beginning and read nothing
    )
    await consumer.start()
    try:
        if not partitions:
            return []
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[InputRecord] = []
        pending = {tp for tp in partitions if ends[tp] > 0}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while pending:
            if loop.time() > deadline:
                raise TimeoutError(f"reading the inbound topics took over {timeout_s:g} s")
            batches = await consumer.getmany(*pending, timeout_ms=500)
            for tp, messages in batches.items():
                records.extend(
                    InputRecord(inbound[tp.topic], tp.topic, tp.partition, m.offset, m.key, m.value)
                    for m in messages
                    if m.offset < ends[tp]
                )
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        records.sort(key=lambda r: (r.topic, r.partition, r.offset))
        return records
    finally:
        await consumer.stop()


async def _partition_counts(settings: Settings) -> dict[str, int]:
    """The partition count of each existing inbound topic."""
    from aiokafka.admin import AIOKafkaAdminClient

    from streams.kafka_clients import client_options

    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [topic for topic in settings.topics.inbound() if topic in existing]
        described = await admin.describe_topics(wanted) if wanted else []
        for topic in described:
            if topic["error_code"] or not topic["partitions"]:
                raise RuntimeError(f"cannot describe topic {topic['topic']!r} (error code {topic['error_code']})")
        return {d["topic"]: len(d["partitions"]) for d in described}
    finally:
        await admin.close()
