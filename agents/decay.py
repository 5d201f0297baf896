"""Decay back to nurture, driven by time: a timer sends ticks, an agent expires the leads due.

Faust tables cannot be written from a timer, so the timer only sends a tick to each partition
of the tick topic this worker owns; the tick topic is co-partitioned with the inbound topics, so
the tick agent writes each lead's state under an event of the lead's own partition. The due
index holds the closed-form time each qualified lead falls below the nurture threshold, so a
tick touches only the leads due, never the whole table.
"""

import logging
import math
import time
from typing import TYPE_CHECKING, Any

import orjson
from faust.types import TP

from agents.output import apply_result, dead_letter, load_states
from scoring.decay import settle_clock
from scoring.state import Stage, decode_stage
from streams.faust_internals import MembershipLost, read_to_end, stored_values

if TYPE_CHECKING:
    from streams.app import Service

log = logging.getLogger(__name__)


def decay_clock(service: "Service", partition: int, now_ms: int) -> int:
    """``now_ms``, held back to the newest record read while the partition's inbound topics are
    not read to their end (``scoring.decay.settle_clock``; record times in the service's clock)."""
    inbound = []
    for topic in service.topic_kinds:
        progress = service.progress.get((topic, partition))
        newest_ms = None if progress is None else service.clock.at(progress[1] * 1000)
        inbound.append((read_to_end(service.app, TP(topic, partition)), newest_ms))
    return settle_clock(now_ms, inbound)


async def expire_due(service: "Service", partition: int, now_ms: int) -> None:
    """Return to nurture the partition's qualified leads whose score fell by ``now_ms``, or by
    the newest record read while the partition is not read to its end (:func:`decay_clock`)."""
    service.metrics.ticks.inc()
    clock = decay_clock(service, partition, now_ms)
    service.metrics.decay_clock_behind.labels(str(partition)).set(math.inf if clock < 0 else (now_ms - clock) / 1000)
    due = service.due.pop_due(partition, clock)
    if not due:
        return
    reading = time.thread_time()
    states = load_states(service, partition, [lead_id.encode() for lead_id in due])
    previous: dict[str, str] = {lead_id: state.stage for lead_id, state in states.items()}
    scoring = time.thread_time()
    result = service.scorer.expire_due(states.values(), clock)
    service.metrics.cpu_score.inc(time.thread_time() - scoring)
    service.metrics.cpu_read.inc(scoring - reading)
    await apply_result(service, result, partition, previous, with_held=False)  # held states: their batches write them


def register_decay(service: "Service") -> None:
    """Register the tick timer, the tick agent and the due-index rebuild after recovery."""
    app, settings = service.app, service.settings
    ticks_topic = settings.topics.ticks
    inbound = set(settings.topics.inbound())

    @app.timer(interval=settings.tick_interval_s)  # type: ignore[untyped-decorator]
    async def send_ticks() -> None:
        if not service.recovered:
            return
        now_ms = service.clock.now_ms()
        for tp in app.assignor.assigned_actives():
            if tp.topic == ticks_topic:
                value = orjson.dumps({"now_ms": now_ms, "partition": tp.partition})
                await service.topics.ticks.send(value=value, partition=tp.partition)

    @app.agent(service.topics.ticks, name="decay-ticks")  # type: ignore[untyped-decorator]
    async def decay_ticks(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            try:
                now_ms = int(orjson.loads(message.value)["now_ms"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                await dead_letter(service, message, "invalid_value", "not a tick: expected {now_ms, partition}")
                continue
            try:
                async with service.partition_lock(message.partition):
                    await expire_due(service, message.partition, now_ms)
            except MembershipLost:  # frozen past the session timeout: the partition's next owner decays it
                service.forget_states(message.partition)
                continue
            except Exception as exc:
                service.forget_states(message.partition)
                service.metrics.processing_errors.labels("decay").inc()
                log.exception("decay tick failed; tick dead-lettered", extra={"partition": message.partition})
                await dead_letter(service, message, "scoring_error", type(exc).__name__)
            service.note_progress(message.topic, message.partition, message.timestamp)

    @service.leads.on_recover  # type: ignore[untyped-decorator]
    async def rebuild_due_index() -> None:
        actives = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic in inbound}
        service.due.clear()
        counts = dict.fromkeys(service.stage_counts, 0)
        for raw in stored_values(service.leads, sorted(actives)):
            lead_id, partition, stage, due_at = decode_stage(raw)
            if partition not in actives:
                continue
            counts[stage.value] += 1
            if stage is Stage.MQL:
                service.due.schedule(partition, lead_id, due_at)
        service.stage_counts.update(counts)
        for name, count in counts.items():
            service.metrics.leads.labels(name).set(count)
        service.metrics.due_leads.set(len(service.due))
        service.metrics.recoveries.inc()
        service.metrics.recovery_in_progress.set(0)
        service.recovered = True
        log.info(
            "lead table recovered",
            extra={"leads": sum(counts.values()), "due_for_decay": len(service.due), "partitions": sorted(actives)},
        )
