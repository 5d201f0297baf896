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
from agents.output import apply_result, load_erased, load_states, send_outputs, write_unwritten
from scoring.engine import BatchResult, InputRecord
from scoring.events import EventKind
from scoring.outputs import DeadLetter
from streams.faust_internals import MembershipLost, ReadAgain
from streams.time_sync import in_time_order

if TYPE_CHECKING:
    from streams.app import Service

log = logging.getLogger(__name__)
# How long a partition writes every batch after its held states were forgotten (a failure).
HOLD_PAUSE_S = 60.0


async def score_batches(service: "Service", batches: Sequence[tuple[Any, Sequence[Any]]], hold: bool = False) -> bool:
    """Score the fetched batches of one partition number (one per inbound topic) at once: one
    scoring pass, one send of their outputs, one write of each touched lead, or with ``hold``
    the leads' states held back for a later write (``apply_result``). Return whether the
    partition's states are all written (False: held back; the batches are then counted as
    consumed when they are). If scoring fails unexpectedly, dead-letter the batches; but if
    states were held back, forget them and raise :class:`ReadAgain` instead (they may be
    half-applied), and write every batch for a while (a failure that repeats is dead-lettered)."""
    partition = batches[0][0].partition
    written = True
    try:
        async with service.partition_lock(partition):
            _read_again_if_forgotten(service, partition)
            if time.monotonic() < service.hold_paused.get(partition, 0.0):
                hold = False
            written = await _score(service, partition, batches, hold)
    except (DeadLetterBlocked, ReadAgain):
        raise  # stopping while the dead-letter topic refuses records: the batches are not acked
    except MembershipLost:
        service.forget_states(partition)
        service.forgotten.discard(partition)  # the consumer reads the group's batches again
        raise  # no longer the partition's owner: the batches are dropped, not acked (read again)
    except Exception as exc:
        had_held = partition in service.unwritten
        service.forget_states(partition)  # states may be half-applied: read them again
        service.metrics.processing_errors.labels("batch").inc()
        if had_held:
            service.forgotten.discard(partition)
            _pause_holding(service, partition)
            log.exception("batch scoring failed; held states forgotten, reading again", extra={"partition": partition})
            raise ReadAgain(f"batch scoring failed: {type(exc).__name__}") from exc
        log.exception("batch scoring failed; records dead-lettered", extra={"partition": partition})
        letters = [
            DeadLetter("scoring_error", type(exc).__name__, r.topic, r.partition, r.offset, r.key, r.value)
            for _, records in batches
            for r in records
        ]
        await send_outputs(service, BatchResult(dead_letters=letters))
    held = service.unwritten.get(partition)
    for tp, records in batches:
        if written or held is None:
            service.count_consumed(tp.topic, len(records))
        else:
            held.records.append((tp.topic, len(records)))
        service.note_progress(tp.topic, tp.partition, records[-1].timestamp / 1000)
    return written


async def write_held_states(service: "Service", batches: Sequence[tuple[Any, Sequence[Any]]]) -> None:
    """Write the states held back for the partition of these batches (the consumer's flush of a
    group that held them: ``streams.faust_internals.GroupFlush``). If that fails, forget them
    and raise :class:`ReadAgain` (or :class:`MembershipLost`): the batches are read again."""
    partition = batches[0][0].partition
    try:
        async with service.partition_lock(partition):
            _read_again_if_forgotten(service, partition)
            await write_unwritten(service, partition)
            _read_again_if_forgotten(service, partition)  # held in an older generation: not written
    except ReadAgain:
        raise
    except MembershipLost:
        service.forget_states(partition)
        service.forgotten.discard(partition)
        raise
    except Exception as exc:
        service.forget_states(partition)
        service.forgotten.discard(partition)
        service.metrics.processing_errors.labels("batch").inc()
        _pause_holding(service, partition)
        log.exception("writing held states failed; reading their records again", extra={"partition": partition})
        raise ReadAgain(f"writing held states failed: {type(exc).__name__}") from exc


def _input_record(record: Any, kinds: dict[str, EventKind]) -> InputRecord:
    """A fetched record of another form (a ``ConsumerRecord``) as the scoring core's input record."""
    return InputRecord(
        kinds.get(record.topic),
        record.topic,
        record.partition,
        record.offset,
        record.key,
        record.value,
        record.timestamp,
    )


def _read_again_if_forgotten(service: "Service", partition: int) -> None:
    """Raise :class:`ReadAgain` if the partition's held states were forgotten (by the decay path,
    or a write of an older generation's) since the consumer last heard."""
    if partition in service.forgotten:
        service.forgotten.discard(partition)
        _pause_holding(service, partition)
        raise ReadAgain("held states were forgotten")


def _pause_holding(service: "Service", partition: int) -> None:
    """Write every batch of the partition for a while: the records read again after a failure are
    then scored as without write-behind (one that fails again is dead-lettered, not read forever)."""
    service.hold_paused[partition] = time.monotonic() + HOLD_PAUSE_S


async def _score(service: "Service", partition: int, batches: Sequence[tuple[Any, Sequence[Any]]], hold: bool) -> bool:
    metrics, kinds = service.metrics, service.topic_kinds
    newest_s = max(records[-1].timestamp for _, records in batches) / 1000
    metrics.fetch_delay.observe(max(time.time() - newest_s, 0.0))
    reading = time.thread_time()
    # The consumer fetches inbound records as input records (streams.faust_internals.InputRecordsOf).
    ordered = batches[0][1] if len(batches) == 1 else in_time_order(records for _, records in batches)
    inputs = [r if type(r) is InputRecord else _input_record(r, kinds) for r in ordered]
    keys = {r.key for r in inputs if isinstance(r.key, bytes)}
    states = load_states(service, partition, keys)
    previous: dict[str, str] = {lead_id: state.stage for lead_id, state in states.items()}
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
    return await apply_result(service, result, partition, previous, newest_s, hold)
