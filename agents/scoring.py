"""The scoring agent: every inbound record, one at a time, through the scoring core."""

import logging
import time
from typing import TYPE_CHECKING, Any

from agents.dead_letters import DeadLetterBlocked
from agents.output import apply_result, dead_letter, left_to_next_owner, load_erased, load_states
from scoring.engine import InputRecord
from streams.faust_internals import MembershipLost

if TYPE_CHECKING:
    from streams.app import Service

log = logging.getLogger(__name__)


async def score_record(service: "Service", message: Any) -> None:
    """Score one inbound record and apply the result."""
    kind = service.topic_kinds.get(message.topic)
    metrics = service.metrics
    reading = time.thread_time()
    record = InputRecord(kind, message.topic, message.partition, message.offset, message.key, message.value)
    keys = [message.key] if isinstance(message.key, bytes) else []
    states = load_states(service, message.partition, keys)
    previous: dict[str, str] = {lead_id: state.stage for lead_id, state in states.items()}
    erased = load_erased(service, message.partition, keys)
    scoring = time.thread_time()
    started = time.perf_counter()
    result = service.scorer.process_batch([record], states, service.clock.now_ms(), erased)
    metrics.scoring_duration.observe(time.perf_counter() - started)
    metrics.cpu_score.inc(time.thread_time() - scoring)
    metrics.cpu_read.inc(scoring - reading)
    for event_type, count in result.events_by_kind.items():
        metrics.events_scored.labels(event_type).inc(count)
    metrics.duplicates.inc(result.duplicates)
    await apply_result(service, result, message.partition, previous, message.timestamp)


def register_scoring(service: "Service") -> None:
    """Register the agent that scores the inbound topics."""

    @service.app.agent(service.topics.inbound, name="score-events")  # type: ignore[untyped-decorator]
    async def score_events(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            try:
                async with service.partition_lock(message.partition):
                    await score_record(service, message)
            except DeadLetterBlocked:
                raise  # stopping while the dead-letter topic refuses records: the record is not acked
            except MembershipLost as lost:  # frozen past the session timeout: the partition's next owner reads it
                service.forget_states(message.partition)
                left_to_next_owner(message, lost)
                continue
            except Exception as exc:
                # Faust would ack the record and lose it: dead-letter it and go on.
                service.forget_states(message.partition)
                service.metrics.processing_errors.labels("score").inc()
                log.exception(
                    "scoring failed; record dead-lettered",
                    extra={"topic": message.topic, "partition": message.partition, "offset": message.offset},
                )
                await dead_letter(service, message, "scoring_error", type(exc).__name__)
            service.count_consumed(message.topic, 1)
            service.note_progress(message.topic, message.partition, message.timestamp)
