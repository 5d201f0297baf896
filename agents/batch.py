"""The batch path: each fetched batch of an inbound partition, at once, through the scoring core.

The consumer (``streams/faust_internals.py``) hands over raw records of one partition; this
reads their leads' states, scores them, sends the outputs, then writes each touched lead once.
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

if TYPE_CHECKING:
    from streams.app import Service

log = logging.getLogger(__name__)


async def score_batch(service: "Service", tp: Any, records: Sequence[Any]) -> None:
    """Score one partition's batch of raw records; dead-letter them all if that fails unexpectedly."""
    try:
        async with service.partition_lock(tp.partition):
            await _score(service, tp, records)
    except DeadLetterBlocked:
        raise  # stopping while the dead-letter topic refuses records: the batch is not acked
    except MembershipLost:
        service.caches.pop(tp.partition, None)
        raise  # no longer the partition's owner: the batch is dropped, not acked (read again)
    except Exception as exc:
        service.caches.pop(tp.partition, None)  # states may be half-applied: read them again
        service.metrics.processing_errors.labels("batch").inc()
        log.exception(
            "batch scoring failed; records dead-lettered", extra={"topic": tp.topic, "partition": tp.partition}
        )
        letters = [
            DeadLetter("scoring_error", type(exc).__name__, r.topic, r.partition, r.offset, r.key, r.value)
            for r in records
        ]
        await send_outputs(service, BatchResult(dead_letters=letters))
    last = records[-1]
    service.note_progress(tp.topic, tp.partition, last.timestamp / 1000)


async def _score(service: "Service", tp: Any, records: Sequence[Any]) -> None:
    metrics = service.metrics
    kind = service.topic_kinds.get(tp.topic)
    metrics.events_consumed.labels(tp.topic, kind.value if kind else "unknown").inc(len(records))
    inputs = [InputRecord(kind, r.topic, r.partition, r.offset, r.key, r.value) for r in records]
    keys = {r.key for r in records if isinstance(r.key, bytes)}
    states = load_states(service, tp.partition, keys)
    previous = {lead_id: state.stage.value for lead_id, state in states.items()}
    started = time.perf_counter()
    erased = load_erased(service, tp.partition, keys)
    result = service.scorer.process_batch(inputs, states, service.clock.now_ms(), erased)
    metrics.scoring_duration.observe(time.perf_counter() - started)
    for event_type, count in result.events_by_kind.items():
        metrics.events_scored.labels(event_type).inc(count)
    metrics.duplicates.inc(result.duplicates)
    await apply_result(service, result, tp.partition, previous, records[-1].timestamp / 1000)
