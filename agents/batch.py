"""The batch path: the fetched batches of one partition number, at once, through the scoring core.

The consumer (``streams/faust_internals.py``) hands over the raw records fetched from each inbound
topic's partition ``p`` (co-partitioned: a lead's events are all on partition ``p``); this reads
their leads' states, scores them in time order, sends the outputs, then writes each touched lead
once.
"""

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agents.dead_letters import DeadLetterBlocked
from agents.output import apply_result, load_erased, load_states, send_outputs
from scoring.engine import BatchResult, InputRecord
from scoring.outputs import DeadLetter
from streams.faust_internals import MembershipLost
from streams.time_sync import in_time_order

if TYPE_CHECKING:
    from streams.app import Service

log = logging.getLogger(__name__)


async def score_batches(service: "Service", batches: Sequence[tuple[Any, Sequence[Any]]]) -> None:
    """Score the fetched batches of one partition number (one per inbound topic) at once: one
    scoring pass, one send of their outputs, one write of each touched lead. If that fails
    unexpectedly, dead-letter them all."""
    partition = batches[0][0].partition
    try:
        async with service.partition_lock(partition):
            await _score(service, partition, batches)
    except DeadLetterBlocked:
        raise  # stopping while the dead-letter topic refuses records: the batches are not acked
    except MembershipLost:
        service.caches.pop(partition, None)
        raise  # no longer the partition's owner: the batches are dropped, not acked (read again)
    except Exception as exc:
        service.caches.pop(partition, None)  # states may be half-applied: read them again
        service.metrics.processing_errors.labels("batch").inc()
        log.exception("batch scoring failed; records dead-lettered", extra={"partition": partition})
        letters = [
            DeadLetter("scoring_error", type(exc).__name__, r.topic, r.partition, r.offset, r.key, r.value)
            for _, records in batches
            for r in records
        ]
        await send_outputs(service, BatchResult(dead_letters=letters))
    for tp, records in batches:
        service.count_consumed(tp.topic, len(records))
        service.note_progress(tp.topic, tp.partition, records[-1].timestamp / 1000)


async def _score(service: "Service", partition: int, batches: Sequence[tuple[Any, Sequence[Any]]]) -> None:
    metrics, kinds = service.metrics, service.topic_kinds
    reading = time.thread_time()
    if len(batches) == 1:
        kind = kinds.get(batches[0][0].topic)
        inputs = [InputRecord(kind, r.topic, r.partition, r.offset, r.key, r.value) for r in batches[0][1]]
    else:  # the topics' records in time order (the consumer cut them at a common time)
        ordered = in_time_order(records for _, records in batches)
        inputs = [InputRecord(kinds.get(r.topic), r.topic, r.partition, r.offset, r.key, r.value) for r in ordered]
    keys = {r.key for r in inputs if isinstance(r.key, bytes)}
    states = load_states(service, partition, keys)
    previous = {lead_id: state.stage.value for lead_id, state in states.items()}
    erased = load_erased(service, partition, keys)
    scoring = time.thread_time()
    started = time.perf_counter()
    result = service.scorer.process_batch(inputs, states, service.clock.now_ms(), erased)
    metrics.scoring_duration.observe(time.perf_counter() - started)
    metrics.cpu_score.inc(time.thread_time() - scoring)
    metrics.cpu_read.inc(scoring - reading)
    for event_type, count in result.events_by_kind.items():
        metrics.events_scored.labels(event_type).inc(count)
    metrics.duplicates.inc(result.duplicates)
    newest_s = max(records[-1].timestamp for _, records in batches) / 1000
    await apply_result(service, result, partition, previous, newest_s)
