"""The identity sweep: which keys of the identity table have outlived their window.

Parked events are otherwise dropped only when their key gets its next message, so the keys of
visitors who never come back would stay in the table (and its changelog) forever. A ``sweep``
message on ``lead-identities``, one per partition, sent by a timer, has the identity agent pass
the keys of that partition through :func:`sweep_states`: an unlinked key whose newest parked
event is older than the window is deleted (a tombstone on the changelog); an unlinked key that
still has events within the window keeps only those. Linked keys hold no parked events and stay.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson

from scoring.errors import InvalidEvent
from scoring.identity import IdentityConfig, IdentityState, decode_identity_state

__all__ = ["SWEEP_KEY", "IdentitySweep", "decode_sweep", "sweep_message", "sweep_states"]

SWEEP_KEY = b"sweep"  # the key of a sweep message; identity keys start with "anon:" or "email:"


def sweep_message(partition: int) -> bytes:
    """The value of the sweep message addressed to ``partition`` of ``lead-identities``."""
    return orjson.dumps({"type": "sweep", "partition": partition})


def decode_sweep(value: bytes | None, partition: int) -> None:
    """Check a record keyed :data:`SWEEP_KEY` read from ``partition``; raise :class:`InvalidEvent`.

    The sweep uses the worker's own clock, never a time from the message, so a forged sweep can
    remove nothing that has not already outlived the window."""
    if value is None:
        raise InvalidEvent("missing_field", "the record has no value")
    try:
        payload = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("invalid_json", f"the value is not JSON: {str(exc)[:200]}") from None
    if not isinstance(payload, dict):
        raise InvalidEvent("not_an_object", f"the value is a JSON {type(payload).__name__}, not an object")
    if payload.get("type") != "sweep":
        raise InvalidEvent("invalid_value", "a record keyed 'sweep' must have type 'sweep'")
    addressed = payload.get("partition")
    if isinstance(addressed, bool) or not isinstance(addressed, int):
        raise InvalidEvent("wrong_type", "field 'partition' must be an integer")
    if addressed != partition:
        raise InvalidEvent("invalid_value", f"the sweep is addressed to partition {addressed}, not {partition}")


@dataclass(slots=True)
class IdentitySweep:
    """What a sweep does to the keys it was given. ``deleted``: keys to tombstone; ``trimmed``:
    keys to rewrite with their expired events removed; ``expired``: events dropped either way;
    ``unreadable``: values that are not an identity state (left as they are)."""

    deleted: list[bytes] = field(default_factory=list)
    trimmed: dict[bytes, IdentityState] = field(default_factory=dict)
    expired: int = 0
    unreadable: int = 0


def sweep_states(items: Iterable[tuple[bytes, bytes]], now_ms: int, config: IdentityConfig) -> IdentitySweep:
    """Select the keys of ``(key, table value)`` items that hold nothing within the window.

    An event is within the window when ``occurred_at >= now_ms - window`` (as in
    :func:`scoring.identity.apply_identity`). An unlinked key with no event within it is
    deleted; one with some is trimmed to those; a linked key is kept."""
    horizon = now_ms - config.window_ms
    sweep = IdentitySweep()
    for key, raw in items:
        try:
            state = decode_identity_state(raw)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            sweep.unreadable += 1
            continue
        if state.lead_id is not None:
            continue
        kept = [p for p in state.parked if p.occurred_at >= horizon]
        if len(kept) == len(state.parked) and kept:
            continue
        sweep.expired += len(state.parked) - len(kept)
        if kept:
            state.parked = kept
            sweep.trimmed[key] = state
        else:
            sweep.deleted.append(key)
    return sweep
