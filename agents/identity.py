"""The identity agent: anonymous visits and e-mail events wait under a pseudonymous key of the
``lead-identities`` topic until their lead is known, then go to their own topic under the lead.

``scoring/identity.py`` decides; this agent reads and writes the identity table (one state per
``anon:<anonymous_id>`` or ``email:<email_hash>`` key, on the message's own partition) and sends.
Released events are awaited until the broker has them before the state that says so is written,
and the state is written before the message is acked: a crash in between releases them again
under the same event ids, which the scorer counts once.
"""

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agents.dead_letters import DeadLetterBlocked
from agents.output import send_outputs
from scoring.engine import BatchResult
from scoring.events import EventKind
from scoring.identity import DAY_MS, IdentityConfig, decode_identity_state, encode_identity_state
from scoring.identity_batch import apply_identity_batch
from scoring.outputs import DeadLetter
from streams.faust_internals import read_states, write_states

if TYPE_CHECKING:
    from streams.app import Service

log = logging.getLogger(__name__)


async def handle_identities(
    service: "Service", records: Sequence[Any], config: IdentityConfig, forward_to: dict[EventKind, Any]
) -> None:
    """Apply ``lead-identities`` records of one partition, in offset order: park, link, release
    or refuse. Released events and dead letters are awaited, then each changed key is written
    once (one changelog batch)."""
    table, partition = service.identities, records[0].partition
    keys = {r.key for r in records if isinstance(r.key, bytes)}
    stored = read_states(table, partition, keys)
    states = {key: decode_identity_state(raw) for key, raw in stored.items()}
    batch = apply_identity_batch([(r.key, r.value) for r in records], states, service.clock.now_ms(), config)
    pending = [await forward_to[f.kind].send(key=f.lead_id.encode(), value=f.value) for f in batch.forwards]
    for future in pending:
        await future
    letters = []
    for rejected in batch.rejected:
        r = records[rejected.index]
        letters.append(DeadLetter(rejected.reason, rejected.detail, r.topic, r.partition, r.offset, r.key, r.value))
    if letters:
        await send_outputs(service, BatchResult(dead_letters=letters))
    items: list[tuple[bytes, bytes | None]] = []
    for key, state in batch.states.items():
        encoded, raw = encode_identity_state(state), stored.get(key)
        empty = state.lead_id is None and not state.parked
        if encoded != raw and not (raw is None and empty):
            items.append((key, encoded))
    await write_states(table, partition, items)
    metrics = service.metrics
    for outcome, count in batch.counts.items():
        metrics.identity_events.labels(outcome).inc(count)
    for link, count in batch.links.items():
        metrics.identity_links.labels(link).inc(count)


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

    async def handle_safely(records: Sequence[Any]) -> None:
        try:
            await handle_identities(service, records, config, forward_to)
        except DeadLetterBlocked:
            raise  # stopping while the dead-letter topic refuses records: they are not acked
        except Exception as exc:
            # Faust would ack the records and lose them: dead-letter them and go on.
            service.metrics.processing_errors.labels("identity").inc()
            first = records[0]
            log.exception(
                "identity messages failed; records dead-lettered",
                extra={"topic": first.topic, "partition": first.partition, "offset": first.offset},
            )
            letters = [
                DeadLetter("scoring_error", type(exc).__name__, r.topic, r.partition, r.offset, r.key, r.value)
                for r in records
            ]
            await send_outputs(service, BatchResult(dead_letters=letters))

    async def identity_batch(tp: Any, records: Sequence[Any]) -> None:
        await handle_safely(records)
        service.note_progress(tp.topic, tp.partition, records[-1].timestamp / 1000)

    service.identity_batch = identity_batch  # the batch consumer's path (streams/app.py)

    @app.agent(service.topics.identities, name="identities")  # type: ignore[untyped-decorator]
    async def identities(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            await handle_safely([message])
            service.note_progress(message.topic, message.partition, message.timestamp)
