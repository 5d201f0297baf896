"""The scoring agent: every inbound record, one at a time, through the scoring core."""

import time
from typing import TYPE_CHECKING, Any

from agents.output import apply_result, load_states
from scoring.engine import InputRecord

if TYPE_CHECKING:
    from streams.app import Service


def register_scoring(service: "Service") -> None:
    """Register the agent that scores the inbound topics."""
    kinds = service.settings.topics.inbound()
    metrics = service.metrics

    @service.app.agent(service.topics.inbound, name="score-events")  # type: ignore[untyped-decorator]
    async def score_events(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            kind = kinds.get(message.topic)
            metrics.events_consumed.labels(message.topic, kind.value if kind else "unknown").inc()
            record = InputRecord(
                kind=kind,
                topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                key=message.key,
                value=message.value,
            )
            keys = [message.key] if isinstance(message.key, bytes) else []
            states = load_states(service, keys)
            previous = {lead_id: state.stage.value for lead_id, state in states.items()}
            started = time.perf_counter()
            result = service.scorer.process_batch([record], states, service.clock.now_ms())
            metrics.scoring_duration.observe(time.perf_counter() - started)
            for event_type, count in result.events_by_kind.items():
                metrics.events_scored.labels(event_type).inc(count)
            metrics.duplicates.inc(result.duplicates)
            await apply_result(service, result, message.partition, previous, message.timestamp)
