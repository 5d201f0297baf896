"""The ``core`` part of ``leadscore bench``: the scoring core alone on the catch-up input, in-process.

No Kafka and no worker: the input's records are split by partition and scored in batches of up to
``batch`` records per partition, taken in turn like a worker's fetches, each against the decoded
states its partition already holds; every changed state is encoded as the worker encodes it for
the table. The collector runs as the worker's does (``streams.gc_pauses``: no automatic full
collections, young objects frozen between batches). What it gives, per
event: the CPU of ``Scorer.process_batch`` and of ``encode_state``, and the shape of the states
(how many are written per event, their mean size in bytes and in objects): the part of the
worker's CPU that no change around the core can take away, measured without the noise of the
broker and the clients.
"""

import gc
import time
from collections.abc import Sequence
from typing import Any

from scoring.compiled import is_compiled
from scoring.engine import InputRecord, Scorer
from scoring.events import EventKind
from scoring.state import LeadState, encode_state
from streams import gc_pauses
from streams.bench_input import partition_for, topic_of

BATCH_RECORDS = 5000


def partition_batches(
    records: Sequence[Any], kinds: dict[str, EventKind], partitions: int, batch: int = BATCH_RECORDS
) -> list[list[InputRecord]]:
    """The input's records as the core's input records (with their timestamps), split by partition
    (Kafka's default partitioner), in batches of up to ``batch`` records, the partitions taken in turn."""
    by_partition: list[list[InputRecord]] = [[] for _ in range(partitions)]
    for record in records:
        partition = partition_for(record.key, partitions)
        rows = by_partition[partition]
        stamp = -1 if record.timestamp_ms is None else record.timestamp_ms
        rows.append(
            InputRecord(kinds.get(record.topic), record.topic, partition, len(rows), record.key, record.value, stamp)
        )
    batches: list[list[InputRecord]] = []
    for start in range(0, max((len(rows) for rows in by_partition), default=0), batch):
        batches += [rows[start : start + batch] for rows in by_partition if rows[start : start + batch]]
    return batches


def _object_count(value: Any) -> int:
    """Objects reachable from ``value`` through dicts, lists and tuples (itself included)."""
    if isinstance(value, dict):
        return 1 + sum(_object_count(k) + _object_count(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return 1 + sum(_object_count(v) for v in value)
    return 1


def state_shape(states: Sequence[LeadState]) -> dict[str, float]:
    """Mean encoded bytes of the states, and the mean objects each holds in its containers."""
    fields = [name for name in LeadState.__dataclass_fields__ if name != "fit_memo"]
    sizes = [len(encode_state(state)) for state in states]
    objects = [sum(_object_count(getattr(state, name)) for name in fields) for state in states]
    count = max(len(states), 1)
    return {"mean_state_bytes": round(sum(sizes) / count, 1), "mean_state_objects": round(sum(objects) / count, 1)}


class _WorkerCollector:
    """The worker's collector policy for the duration of a ``with`` block (timed full collections:
    young objects frozen between batches, ``streams.gc_pauses``)."""

    def __enter__(self) -> None:
        gc_pauses.configure(interval_s=1.0)

    def __exit__(self, *_: object) -> None:
        gc_pauses.reset()
        gc.collect()


def core_bench(scorer: Scorer, batches: Sequence[Sequence[InputRecord]], now_ms: int) -> dict[str, Any]:
    """Score and encode the batches as a worker would; CPU per event of each step, and state shape."""
    partitions = {batch[0].partition for batch in batches if batch}
    caches: dict[int, dict[str, LeadState]] = {p: {} for p in partitions}
    score_s = encode_s = 0.0
    written = encoded_bytes = 0
    with _WorkerCollector():
        for batch in batches:
            cache = caches[batch[0].partition]
            keys = {record.key.decode() for record in batch if record.key is not None}
            states = {key: cache[key] for key in keys if key in cache}
            began = time.thread_time()
            result = scorer.process_batch(batch, states, now_ms)
            scored = time.thread_time()
            for lead_id, state in result.states.items():
                encoded_bytes += len(encode_state(state))
                cache[lead_id] = state
            score_s += scored - began
            encode_s += time.thread_time() - scored
            written += len(result.states)
            gc_pauses.between_batches()  # as the worker's consumer does between two polls
    events = sum(len(batch) for batch in batches)
    leads = [state for cache in caches.values() for state in cache.values()]
    return {
        "events": events,
        "leads": len(leads),
        "batch_records": max((len(batch) for batch in batches), default=0),
        "compiled": is_compiled(),
        "score_us_per_event": round(score_s / max(events, 1) * 1e6, 2),
        "encode_us_per_event": round(encode_s / max(events, 1) * 1e6, 2),
        "encode_us_per_state": round(encode_s / max(written, 1) * 1e6, 2),
        "states_per_event": round(written / max(events, 1), 3),
        "mean_written_bytes": round(encoded_bytes / max(written, 1), 1),
        **state_shape(leads),
    }


def input_kinds(topics: Any) -> dict[str, EventKind]:
    """Topic name -> event kind of the inbound topics."""
    return {topic: kind for kind, topic in topic_of(topics).items()}


def summary_line(result: dict[str, Any]) -> str:
    """One line of the report on the core part."""
    return (
        f"scoring core alone ({'compiled' if result['compiled'] else 'interpreted'}, in-process, "
        f"{result['events']:,} events in batches of up to {result['batch_records']:,} per partition): "
        f"scoring {result['score_us_per_event']} us/event, encoding {result['encode_us_per_event']} us/event "
        f"({result['encode_us_per_state']} us per state, {result['states_per_event']} states/event); "
        f"{result['leads']:,} states of {result['mean_state_bytes']:,.0f} bytes and "
        f"{result['mean_state_objects']:,.0f} objects on average"
    )
