"""The floor of one worker process: the CPU per event no change around the scoring core can take away.

A worker must at least read its records (parse Kafka's record batches into input records, as its
consumer's fetcher does), score them (the core), encode the states it writes (as many per event as
the worker wrote in the run) and store them in RocksDB. Everything else (the fetch protocol, the
changelog and output sends, commits, the event loop, Faust) costs something too, so the floor is
a lower bound of the worker's CPU per event, and ``baseline CPU per event / floor`` an upper bound
of the ratio one worker process, using one core fully, can reach against the raw loop.

The reading is measured here, in-process: the run's records, per partition, in record batches of
Kafka's format (magic 2) of up to 5,000 records, iterated through aiokafka's ``PartitionRecords``
with the worker's key deserializer (:class:`streams.faust_internals.InputRecordsOf`), as its fetcher
iterates a fetch response. The other parts come from the core part (``streams.bench_core``) and
the worker's own step counters. The raw loop's own work (decoding, its dict, its output values)
is measured in-process the same way, so its Kafka clients' share of its CPU shows too.
"""

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition

from scoring.engine import InputRecord
from scoring.events import EventKind
from streams.bench_baseline import MAX_RECORDS, add_points, output_value
from streams.faust_internals import InputRecordsOf, install_input_records

# (offset, timestamp, key, value), as a record batch holds them.
WireRow = tuple[int, int, bytes | None, bytes | None]


def record_batch(rows: Iterable[WireRow]) -> MemoryRecords:
    """The rows as one record batch in Kafka's format (magic 2, uncompressed), as a fetch response holds it."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 30,
    )
    for offset, timestamp, key, value in rows:
        builder.append(offset, timestamp=timestamp, key=key, value=value, headers=[])
    return MemoryRecords(bytes(builder.build()))


def fetched(topic: str, partition: int, batch: MemoryRecords, of: Any, fetch_offset: int = 0) -> list[Any]:
    """The records the worker's fetcher builds from ``batch`` of ``topic`` (``of``: the consumer's
    key deserializer, an :class:`InputRecordsOf` for a batch worker's inbound topics)."""
    install_input_records()
    tp = TopicPartition(topic, partition)
    return list(PartitionRecords(tp, batch, [], fetch_offset, of, None, True, 0))


def read_cost(batches: Sequence[Sequence[InputRecord]], kinds: Mapping[str, EventKind]) -> dict[str, Any]:
    """CPU per record of reading ``batches`` (each one topic partition's records or several: they are
    grouped per topic) as the worker's fetcher does, from Kafka-format record batches."""
    of = InputRecordsOf(kinds)
    wires: list[tuple[str, int, MemoryRecords]] = []
    for batch in batches:
        by_topic: dict[str, list[WireRow]] = {}
        for record in batch:
            by_topic.setdefault(record.topic, []).append((record.offset, record.timestamp, record.key, record.value))
        wires += [(topic, batch[0].partition, record_batch(rows)) for topic, rows in by_topic.items()]
    read = 0
    began = time.thread_time()
    for topic, partition, wire in wires:
        read += len(fetched(topic, partition, wire, of))
    spent = time.thread_time() - began
    return {"records": read, "read_us_per_event": round(spent / max(read, 1) * 1e6, 2)}


def baseline_own_cost(batches: Sequence[Sequence[InputRecord]]) -> dict[str, Any]:
    """CPU per record of the raw loop's own work on ``batches``' records, without its Kafka clients:
    decoding each value, its dict of scores, and encoding one output value per touched lead per
    ``getmany`` of up to 5,000 records (``streams.bench_baseline``)."""
    records = [record for batch in batches for record in batch]
    scores: dict[bytes, int] = {}
    began = time.thread_time()
    for start in range(0, len(records), MAX_RECORDS):
        touched: dict[bytes, int] = {}
        add_points(records[start : start + MAX_RECORDS], scores, touched)
        for key, score in touched.items():
            output_value(key, score)
    spent = time.thread_time() - began
    return {"records": len(records), "baseline_own_us_per_event": round(spent / max(len(records), 1) * 1e6, 2)}


def floor(report: Mapping[str, Any]) -> dict[str, float] | None:
    """The floor of one worker process from a report's parts (``None`` unless the core, the worker
    and the baseline parts all ran): its steps in microseconds per event, their sum, and the
    highest ratio to the baseline it leaves."""
    core, worker, baseline = report.get("core"), report.get("leadscore"), report.get("baseline")
    if not core or "read_us_per_event" not in core or not worker or not baseline:
        return None
    steps = worker.get("cpu_us_per_event_by_step") or {}
    parts = {
        "read": float(core["read_us_per_event"]),
        "score": float(core["score_us_per_event"]),
        "encode": float(core["encode_us_per_state"]) * float(worker["changelog_per_event"]),
        "store": float(steps.get("store", 0.0)),
    }
    total = sum(parts.values())
    raw, own = float(baseline["cpu_us_per_event"]), core.get("baseline_own_us_per_event")
    return {
        **{key: round(us, 2) for key, us in parts.items()},
        "us_per_event": round(total, 2),
        "max_ratio_to_baseline": round(raw / total, 2),
        "worker_over_floor": round(float(worker["cpu_us_per_event"]) / total, 2),
        **({} if own is None else {"baseline_own": float(own), "baseline_clients": round(raw - float(own), 2)}),
    }


def floor_line(parts: Mapping[str, float]) -> str:
    """One line of the report on the floor."""
    clients = (
        f". The baseline's own work (decoding, its dict of scores, its output values) takes "
        f"{parts['baseline_own']:.1f} us/event in-process: its Kafka clients the other {parts['baseline_clients']:.1f}"
        if "baseline_own" in parts
        else ""
    )
    return (
        f"floor of one worker process (reading its records {parts['read']:.1f} us, scoring {parts['score']:.1f}, "
        f"encoding the states it writes {parts['encode']:.1f}, RocksDB {parts['store']:.1f}; every other cost "
        f"taken as free): {parts['us_per_event']:.1f} us/event, so at most {parts['max_ratio_to_baseline']:.2f}x "
        f"the baseline's CPU per event; the worker took {parts['worker_over_floor']:.2f}x its floor"
        f"{clients}"
    )
