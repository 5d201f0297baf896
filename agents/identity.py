"""The identity agent: anonymous visits and e-mail events wait under a pseudonymous key of the
``lead-identities`` topic until their lead is known, then go to their own topic under the lead.

``scoring/identity.py`` decides; this agent reads and writes the identity table (one state per
``anon:<anonymous_id>`` or ``email:<email_hash>`` key, on the message's own partition) and sends.
Released events are awaited until the broker has them before the state that says so is written,
and the state is written before the message is acked: a crash in between releases them again
under the same event ids, which the scorer counts once.
"""

import logging
from typing import TYPE_CHECKING, Any

from agents.output import dead_letter
from scoring.errors import InvalidEvent
from scoring.events import EventKind
from scoring.identity import (
    DAY_MS,
    IdentityConfig,
    apply_identity,
    decode_identity,
    decode_identity_state,
    encode_identity_state,
)
from streams.faust_internals import read_states, write_states

if TYPE_CHECKING:
    from streams.app import Service

log = logging.getLogger(__name__)


async def handle_identity(
    service: "Service", message: Any, config: IdentityConfig, forward_to: dict[EventKind, Any]
) -> None:
    """Apply one ``lead-identities`` record: park, link, release or refuse."""
    try:
        decoded = decode_identity(message.key, message.value)
    except InvalidEvent as exc:
        await dead_letter(service, message, exc.reason, exc.detail)
        return
    table, partition, key = service.identities, message.partition, message.key
    raw = read_states(table, partition, [key]).get(key)
    state = decode_identity_state(raw) if raw is not None else None
    result = apply_identity(state, decoded, service.clock.now_ms(), config)
    pending = [await forward_to[f.kind].send(key=f.lead_id.encode(), value=f.value) for f in result.forwards]
    for future in pending:
        await future
    if result.conflict is not None:
        await dead_letter(service, message, "identity_conflict", result.conflict)
    encoded = encode_identity_state(result.state)
    empty = result.state.lead_id is None and not result.state.parked
    if encoded != raw and not (raw is None and empty):
        await write_states(table, partition, [(key, encoded)])
    metrics = service.metrics
    for outcome, count in result.counts.items():
        metrics.identity_events.labels(outcome).inc(count)
    if result.link is not None:
        metrics.identity_links.labels(result.link).inc()


def register_identity(service: "Service") -> None:
    """Register the identity table and the agent that consumes ``lead-identities``."""
    app, settings = service.app, service.settings
    service.identities = app.Table(
        "identities",
        default=None,
        partitions=settings.partitions,
        key_type=bytes,  # raw codec for the table and its changelog, as for the lead table
        value_type=bytes,
    )
    config = IdentityConfig(
        window_ms=int(settings.identity.window_days * DAY_MS), max_parked=settings.identity.max_parked
    )

    def raw_topic(name: str) -> Any:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    forward_to = {
        EventKind.WEB_VISIT: raw_topic(settings.topics.web_visits),
        EventKind.EMAIL_EVENT: raw_topic(settings.topics.email_events),
    }
    service.metrics.processing_errors.labels("identity")

    @app.agent(service.topics.identities, name="identities")  # type: ignore[untyped-decorator]
    async def identities(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            try:
                await handle_identity(service, message, config, forward_to)
            except Exception as exc:
                # Faust would ack the record and lose it: dead-letter it and go on.
                service.metrics.processing_errors.labels("identity").inc()
                log.exception(
                    "identity message failed; record dead-lettered",
                    extra={"topic": message.topic, "partition": message.partition, "offset": message.offset},
                )
                await dead_letter(service, message, "scoring_error", type(exc).__name__)
            service.note_progress(message.topic, message.partition, message.timestamp)
