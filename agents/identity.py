"""The identity agent: anonymous visits and e-mail events wait under a pseudonymous key of the
``lead-identities`` topic until their lead is known, then go to their own topic under the lead.

``scoring/identity.py`` decides; this agent reads and writes the identity table (one state per
``anon:<anonymous_id>`` or ``email:<email_hash>`` key, on the message's own partition) and sends.
Released events are awaited until the broker has them before the state that says so is written,
and the state is written before the message is acked: a crash in between releases them again
under the same event ids, which the scorer counts once. A timer sends each owned partition a
``sweep`` message, on which the agent deletes the partition's keys whose parked events all
outlived the window (scoring/identity_sweep.py).
"""

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agents.dead_letters import DeadLetterBlocked
from agents.output import fenced, left_to_next_owner, send_outputs
from scoring.engine import BatchResult
from scoring.errors import InvalidEvent
from scoring.events import EventKind
from scoring.identity import DAY_MS, IdentityConfig, decode_identity_state, encode_identity_state
from scoring.identity_batch import apply_identity_batch
from scoring.identity_sweep import SWEEP_KEY, decode_sweep, sweep_message, sweep_states
from scoring.outputs import DeadLetter
from streams.faust_internals import MembershipLost, partition_items, read_states, send_keyed, write_states

if TYPE_CHECKING:
    from streams.app import Service

log = logging.getLogger(__name__)
# How often the sweep timer looks whether a sweep is due (at most; less with a shorter interval).
SWEEP_CHECK_S = 10.0


async def handle_identities(
    service: "Service", records: Sequence[Any], config: IdentityConfig, forward_to: dict[EventKind, str]
) -> None:
    """Apply ``lead-identities`` records of one partition: identity messages as
    :func:`apply_identities` does, then, if the records hold a sweep, the partition's sweep."""
    messages = [r for r in records if r.key != SWEEP_KEY]
    if messages:
        await apply_identities(service, messages, config, forward_to)
    if len(messages) < len(records):
        await sweep_partition(service, [r for r in records if r.key == SWEEP_KEY], config)


async def apply_identities(
    service: "Service", records: Sequence[Any], config: IdentityConfig, forward_to: dict[EventKind, str]
) -> None:
    """Apply identity messages of one partition, in offset order: park, link, release or refuse.
    Released events and dead letters are awaited, then each changed key is written once (one
    changelog batch). Each step first confirms that this worker still owns the partition
    (:func:`agents.output.fenced`; :class:`MembershipLost` leaves the records unacked)."""
    table, partition = service.identities, records[0].partition
    keys = {r.key for r in records if isinstance(r.key, bytes)}
    stored = read_states(table, partition, keys)
    states = {key: decode_identity_state(raw) for key, raw in stored.items()}
    batch = apply_identity_batch([(r.key, r.value) for r in records], states, service.clock.now_ms(), config)
    await fenced(service)
    if batch.forwards:
        released: dict[str, list[tuple[bytes, bytes]]] = {}
        for f in batch.forwards:
            released.setdefault(forward_to[f.kind], []).append((f.lead_id.encode(), f.value))
        await send_keyed(service.app, released)  # awaited until the broker has them
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
    if items:
        await fenced(service)
        await write_states(table, partition, items)
    metrics = service.metrics
    for outcome, count in batch.counts.items():
        metrics.identity_events.labels(outcome).inc(count)
    for link, count in batch.links.items():
        metrics.identity_links.labels(link).inc(count)


async def sweep_partition(service: "Service", sweeps: Sequence[Any], config: IdentityConfig) -> None:
    """Delete (tombstone) the partition's unlinked keys whose parked events all outlived the window
    and trim the expired events of the others (scoring/identity_sweep.py), by the worker's clock.
    ``sweeps``: the sweep records of one partition; an invalid one is dead-lettered, and one sweep
    serves them all. Skipped when this worker is no longer the partition's owner."""
    letters = []
    for r in sweeps:
        try:
            decode_sweep(r.value, r.partition)
        except InvalidEvent as exc:
            letters.append(DeadLetter(exc.reason, exc.detail, r.topic, r.partition, r.offset, r.key, r.value))
    if letters:
        await send_outputs(service, BatchResult(dead_letters=letters))
    if len(letters) == len(sweeps):
        return
    table, partition = service.identities, sweeps[0].partition
    items = partition_items(table, partition, service.settings.partitions)
    sweep = sweep_states(items, service.clock.now_ms(), config)
    writes: list[tuple[bytes, bytes | None]] = [(key, None) for key in sweep.deleted]
    writes += [(key, encode_identity_state(state)) for key, state in sweep.trimmed.items()]
    if writes:
        try:
            await fenced(service)
        except MembershipLost:  # frozen past the session timeout: the partition's next owner sweeps it
            return
        await write_states(table, partition, writes)
    metrics = service.metrics
    metrics.identity_sweeps.inc()
    metrics.identity_swept_keys.inc(len(sweep.deleted))
    metrics.identity_events.labels("expired").inc(sweep.expired)
    if sweep.unreadable:
        log.warning(
            "identity keys not readable, left as they are", extra={"partition": partition, "keys": sweep.unreadable}
        )
    if writes:
        log.info(
            "identity keys swept",
            extra={"partition": partition, "deleted": len(sweep.deleted), "trimmed": len(sweep.trimmed)},
        )


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

    forward_to = {EventKind.WEB_VISIT: settings.topics.web_visits, EventKind.EMAIL_EVENT: settings.topics.email_events}
    service.metrics.processing_errors.labels("identity")

    async def handle_safely(records: Sequence[Any]) -> None:
        try:
            await handle_identities(service, records, config, forward_to)
        except DeadLetterBlocked:
            raise  # stopping while the dead-letter topic refuses records: they are not acked
        except MembershipLost:
            raise  # no longer the partition's owner: the records are not acked (read again)
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

    # Tables cannot be written from a timer: the timer sends a sweep message to each partition of
    # lead-identities this worker owns, and the partition's own path (above) sweeps its keys. The
    # first sweep follows recovery, so workers restarted more often than the interval still sweep.
    interval = settings.identity.sweep_interval_s
    next_sweep_at = [0.0]  # monotonic

    @app.timer(interval=min(interval, SWEEP_CHECK_S))  # type: ignore[untyped-decorator]
    async def send_sweeps() -> None:
        if not service.recovered or time.monotonic() < next_sweep_at[0]:
            return
        next_sweep_at[0] = time.monotonic() + interval
        for tp in app.assignor.assigned_actives():
            if tp.topic == settings.topics.identities:
                value = sweep_message(tp.partition)
                await service.topics.identities.send(key=SWEEP_KEY, value=value, partition=tp.partition)

    @app.agent(service.topics.identities, name="identities")  # type: ignore[untyped-decorator]
    async def identities(stream: Any) -> None:
        async for event in stream.events():
            message = event.message
            try:
                await handle_safely([message])
            except MembershipLost as lost:  # frozen past the session timeout: the partition's next owner reads it
                left_to_next_owner(message, lost)
                continue
            service.note_progress(message.topic, message.partition, message.timestamp)
