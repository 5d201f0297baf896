"""A batch of ``lead-identities`` records of one partition through the identity rules.

The identity agent (one record) and the batch consumer (each fetched batch) share this: records
in offset order and their keys' states in; the states to write, the events to release and the
records to dead-letter out. Later records of a key see the state the earlier ones left.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from scoring.errors import InvalidEvent
from scoring.identity import Forward, IdentityConfig, IdentityState, apply_identity, decode_identity


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record to dead-letter: its index in the batch, the reason and the detail."""

    index: int
    reason: str
    detail: str


@dataclass(slots=True)
class IdentityBatch:
    """What a batch did. ``states`` holds the state of every key a record applied to (the caller
    writes those that changed); ``counts`` events by outcome; ``links`` link messages by outcome."""

    states: dict[bytes, IdentityState] = field(default_factory=dict)
    forwards: list[Forward] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    links: dict[str, int] = field(default_factory=dict)


def apply_identity_batch(
    records: Sequence[tuple[bytes | None, bytes | None]],
    states: Mapping[bytes, IdentityState],
    now_ms: int,
    config: IdentityConfig,
) -> IdentityBatch:
    """Apply ``(key, value)`` records, in order, to their keys' states (``states``: the known
    ones; a key absent from it is new). An invalid record, a link conflict, or a record the rules
    fail on is rejected with its reason, never dropped."""
    batch = IdentityBatch()
    for index, (key, value) in enumerate(records):
        try:
            message = decode_identity(key, value)
        except InvalidEvent as exc:
            batch.rejected.append(Rejected(index, exc.reason, exc.detail))
            continue
        assert key is not None  # decode_identity refuses a record without a key
        state = batch.states.get(key) or states.get(key)
        try:
            result = apply_identity(state, message, now_ms, config)
        except Exception as exc:  # a bug must not lose the record: dead-letter it
            batch.rejected.append(Rejected(index, "scoring_error", f"{type(exc).__name__}: {str(exc)[:200]}"))
            continue
        batch.states[key] = result.state
        batch.forwards.extend(result.forwards)
        for outcome, count in result.counts.items():
            batch.counts[outcome] = batch.counts.get(outcome, 0) + count
        if result.link is not None:
            batch.links[result.link] = batch.links.get(result.link, 0) + 1
        if result.conflict is not None:
            batch.rejected.append(Rejected(index, "identity_conflict", result.conflict))
    return batch
