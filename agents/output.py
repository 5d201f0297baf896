"""What every agent does with a scoring result: send, dead-letter, record the states, count."""

import logging
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from agents.dead_letters import send_dead_letters
from scoring.engine import BatchResult, Erased
from scoring.identity import ANON_PREFIX, EMAIL_PREFIX, email_known_message, visit_message
from scoring.outputs import DeadLetter
from scoring.state import LeadState, Stage, decode_state, encode_state
from streams.app import Unwritten
from streams.faust_internals import MembershipLost, confirm_membership, read_states, send_keyed, write_states

if TYPE_CHECKING:
    from streams.app import Service

log = logging.getLogger(__name__)
# The most states encoded and sent to the changelog at once (a write of held states can hold a
# partition's every lead: its encoded states and their produce batches would all be in memory).
WRITE_CHUNK = 2000


def decode_states(values: dict[bytes, bytes]) -> dict[str, LeadState]:
    """Decode table values into states keyed by lead id."""
    states = [decode_state(raw) for raw in values.values()]
    return {state.lead_id: state for state in states}


async def send_outputs(service: "Service", result: BatchResult, record_timestamp_s: float | None = None) -> None:
    """Send a result's MQL and nurture events, its identity messages and its dead letters.

    MQL, nurture and identity messages go out together and are awaited until the broker has them;
    callers write the states only afterwards, so a crash in between redelivers the input and the
    same crossing is sent again under the same event id, never lost. Dead letters are awaited too
    (agents/dead_letters.py: while the topic refuses them, this waits and the source record is not
    acked).
    """
    names, metrics = service.settings.topics, service.metrics
    now_ms = service.clock.now_ms()
    messages = {
        names.mql_handoff: [(mql.lead_id.encode(), orjson.dumps(mql.to_payload())) for mql in result.mql],
        names.lead_nurture: [(n.lead_id.encode(), orjson.dumps(n.to_payload())) for n in result.nurture],
        names.identities: identity_messages(result),
    }
    if any(messages.values()):
        await send_keyed(service.app, messages)  # one round trip for all three topics
    for mql in result.mql:
        metrics.mql_events.inc()
        if service.settings.clock_speed == 1.0:
            metrics.end_to_end_latency.labels("event").observe(max(now_ms - mql.crossed_at, 0) / 1000)
        if record_timestamp_s is not None:
            metrics.end_to_end_latency.labels("record").observe(max(time.time() - record_timestamp_s, 0))
    for nurture in result.nurture:
        metrics.nurture_events.labels(nurture.reason).inc()
    metrics.count_funnel(result)
    if result.anonymous:
        metrics.identity_sent.labels("visit").inc(len(result.anonymous))
    if result.email_links:
        metrics.identity_sent.labels("email_known").inc(len(result.email_links))
    await send_dead_letters(service, result.dead_letters, now_ms)  # waits while the topic refuses them


def identity_messages(result: BatchResult) -> list[tuple[bytes, bytes]]:
    """The identity agent's messages of a result: its anonymous visits, and the e-mail pseudonyms
    of its profile events (sent before the source offset can be committed, like dead letters)."""
    messages = []
    for record in result.anonymous:
        key, raw = record.key, record.value
        assert key is not None  # decoded by the core: the key is the anonymous_id, the value a visit
        assert raw is not None
        messages.append((ANON_PREFIX.encode() + key, visit_message(key.decode(), raw)))
    for hashed, lead_id, occurred_at in result.email_links:
        messages.append(((EMAIL_PREFIX + hashed).encode(), email_known_message(hashed, lead_id, occurred_at)))
    return messages


def record_states(
    service: "Service", result: BatchResult, partition: int, previous_stages: dict[str, str]
) -> list[tuple[bytes, LeadState | None]]:
    """A result's changed states (and ``None``, a tombstone, for each erased lead) by table key;
    caches them and updates the due index and stage counts."""
    items: list[tuple[bytes, LeadState | None]] = []
    cache = service.state_cache(partition)
    moves: dict[str, int] = {}  # leads in (+) and out (-) of each stage
    for lead_id in result.deleted:  # erased: a tombstone (a lead started afresh is written after it)
        key = lead_id.encode()
        items.append((key, None))
        cache.pop(key, None)
        service.due.schedule(partition, lead_id, None)
        gone = previous_stages.get(lead_id)
        if gone is not None and lead_id not in result.states:
            moves[gone] = moves.get(gone, 0) - 1
    for lead_id, state in result.states.items():
        state.partition = partition
        key = lead_id.encode()
        items.append((key, state))
        cache.pop(key, None)  # to the end: the most recently written (the cache drops from the front)
        cache[key] = state
        before, after = previous_stages.get(lead_id), state.stage  # a Stage is its value, a str
        if before != after:  # most writes keep the stage
            if before is not None:
                moves[before] = moves.get(before, 0) - 1
            moves[after] = moves.get(after, 0) + 1
        service.due.schedule(partition, lead_id, state.due_at if after is Stage.MQL else None)
    service.count_stages(moves)
    service.metrics.due_leads.set(len(service.due))
    return items


async def apply_result(
    service: "Service",
    result: BatchResult,
    partition: int,
    previous_stages: dict[str, str],
    record_timestamp_s: float | None = None,
    hold: bool = False,
    with_held: bool = True,
) -> bool:
    """Send a result's events, then write its states: each lead once, on its partition, durable
    before the input is acked (every path writes the table this one way). Each step first
    confirms that this worker still owns the partition (:func:`fenced`).

    With ``hold`` (the batch path, catching up), the changed states are held back from the table
    instead (``Service.unwritten``), unless the result erased a lead: a lead's events in later
    batches then update one held state, written once (:func:`write_unwritten`). Else the states
    held back for the partition are written with the result's, unless ``with_held`` is False (the
    decay path: a tick writes the leads it settled, and the held states wait for their batches'
    own write; a settled lead that is held too is the same object, written again then). Return
    whether every changed state of the partition is written (False: some are held back)."""
    await fenced(service)
    await send_outputs(service, result, record_timestamp_s)
    await fenced(service)
    if result.erased:  # the marker first: a crash before the tombstone redelivers the erasure
        marks = [(lead.encode(), f"{mark.at}:{mark.crossings}".encode()) for lead, mark in result.erased.items()]
        await write_states(service.erasures, partition, marks)
        service.metrics.erasures.inc(len(marks))
        await fenced(service)
    service.metrics.erased_events_dropped.inc(result.erased_dropped)
    items = record_states(service, result, partition, previous_stages)
    if hold and not result.deleted:
        generation = service.app.consumer_generation_id
        held = service.unwritten.get(partition)
        if held is None:
            held = service.unwritten[partition] = Unwritten(generation)
        # Held up to the cache's bound (what the states' memory is sized by), in one generation.
        if held.generation == generation and len(held.states) < service.settings.state_cache_per_partition:
            held.states.update((key, state) for key, state in items if state is not None)  # no tombstone here
            service.metrics.state_writes_held.inc(len(items))
            return False
    if with_held:
        await write_unwritten(service, partition, items)
        return True
    await _write_items(service, partition, items)
    return partition not in service.unwritten


async def write_unwritten(
    service: "Service", partition: int, items: Sequence[tuple[bytes, LeadState | None]] = ()
) -> None:
    """Write ``items`` and the partition's held states (each lead once, ``items`` winning), then
    count the records they came from as consumed. Held states of an older group generation are
    never written (their input is read again from the committed offsets): forgotten instead.
    On failure the held states stay held (the caller forgets them: ``Service.forget_states``)."""
    held = service.unwritten.get(partition)
    if held is not None and held.generation != service.app.consumer_generation_id:
        service.forget_states(partition)
        held = None
    states: dict[bytes, LeadState | None] = dict(held.states) if held is not None else {}
    states.update(items)
    await _write_items(service, partition, list(states.items()))
    if held is not None:
        del service.unwritten[partition]
        for topic, records in held.records:
            service.count_consumed(topic, records)


async def _write_items(service: "Service", partition: int, items: Sequence[tuple[bytes, LeadState | None]]) -> None:
    """Encode and write states (``None``: a tombstone) to the table and its changelog, a chunk at a
    time (bounded memory), each chunk after confirming membership."""
    for start in range(0, len(items), WRITE_CHUNK):
        await fenced(service)
        encoding = time.thread_time()
        chunk = [
            (key, None if state is None else encode_state(state)) for key, state in items[start : start + WRITE_CHUNK]
        ]
        service.metrics.cpu_encode.inc(time.thread_time() - encoding)
        await write_states(service.leads, partition, chunk, store_cpu=service.metrics.cpu_store.inc)
        service.metrics.changelog_records.inc(len(chunk))


async def fenced(service: "Service") -> None:
    """Raise :class:`MembershipLost` (and count it) if the group no longer counts this worker as a
    member: a worker frozen past its session timeout must not write states the partition's next
    owner has moved past (streams/faust_internals.py ``confirm_membership``)."""
    try:
        await confirm_membership(service.app)
    except MembershipLost:
        service.metrics.zombie_writes_refused.inc()
        raise


def left_to_next_owner(message: Any, lost: MembershipLost) -> None:
    """Log a record an agent let go of because this worker is no longer a member of the group
    generation it was handed out in (the partition's next owner reads it from the committed offset)."""
    log.warning(
        "membership lost; record left to the partition's next owner",
        extra={
            "topic": message.topic,
            "partition": message.partition,
            "offset": message.offset,
            "generation": message.generation_id,
            "detail": str(lost),
        },
    )


async def dead_letter(service: "Service", message: Any, reason: str, detail: str) -> None:
    """Send one raw record to the dead-letter topic with its reason."""
    letter = DeadLetter(reason, detail, message.topic, message.partition, message.offset, message.key, message.value)
    await send_outputs(service, BatchResult(dead_letters=[letter]))


def load_erased(service: "Service", partition: int, lead_keys: Iterable[bytes]) -> dict[str, Erased]:
    """The erasure markers of the given leads, from the partition's store (``at:crossings``)."""
    found = read_states(service.erasures, partition, lead_keys)
    marks = {}
    for key, value in found.items():
        at, _, crossings = value.decode().partition(":")
        marks[key.decode(errors="replace")] = Erased(int(at), int(crossings))
    return marks


def load_states(service: "Service", partition: int, lead_keys: Iterable[bytes]) -> dict[str, LeadState]:
    """The states of the given leads (absent leads are left out): decoded objects from the
    partition's cache, else read from its store and decoded."""
    cache = service.state_cache(partition)
    states = {state.lead_id: state for key in lead_keys if (state := cache.get(key)) is not None}
    missing = [key for key in lead_keys if key not in cache]
    held = service.unwritten.get(partition)
    if missing and held is not None:  # held back from the store, and out of a cache trimmed since
        for key in [key for key in missing if key in held.states]:
            state = held.states[key]
            states[state.lead_id] = cache[key] = state
        missing = [key for key in missing if key not in held.states]
    if missing:
        states.update(decode_states(read_states(service.leads, partition, missing)))
    return states
