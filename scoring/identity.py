"""Identity: the pseudonymous keys under which anonymous visitors and e-mail addresses wait to
be tied to a lead, and what the identity agent does with each message of ``lead-identities``.

Keys are ``anon:<anonymous_id>`` or ``email:<email_hash>``. Events that arrive under a key not
yet linked to a lead are parked (within a window, bounded in number and size); the first
``identify`` (or ``email_known``) links the key and releases them to their own topic under the
lead, each with its own ``event_id``, so that the scorer counts each once however often it is
released. Later events under a linked key go straight through. The first link wins: a link to
another lead later is a conflict, refused (dead-lettered as ``identity_conflict``) and counted.
"""

import hashlib
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from scoring.errors import InvalidEvent
from scoring.events import (
    MAX_EVENT_BYTES,
    EventKind,
    decode_event,
    json_object,
    key_field,
    occurred_at_field,
    text_field,
)
from scoring.pseudonyms import email_hash
from scoring.timeutil import format_rfc3339

__all__ = [
    "ANON_PREFIX",
    "EMAIL_PREFIX",
    "Forward",
    "IdentityConfig",
    "IdentityMessage",
    "IdentityResult",
    "IdentityState",
    "MessageType",
    "Parked",
    "apply_identity",
    "decode_identity",
    "decode_identity_state",
    "email_hash",
    "email_known_message",
    "encode_identity_state",
    "identify_event_id",
    "visit_message",
]

ANON_PREFIX = "anon:"
EMAIL_PREFIX = "email:"
DAY_MS = 86_400_000
# An identity message wraps one inbound event; a state's parked events stay far below Kafka's
# default 1 MiB record limit, since the state is one changelog record.
MAX_IDENTITY_BYTES = MAX_EVENT_BYTES + 4096
MAX_PARKED_BYTES = 512 * 1024
_EMAIL_HASH = re.compile(r"[0-9a-f]{64}")
_PROBE = "parked"  # the stand-in lead id under which a parked event is validated


class MessageType(StrEnum):
    """The ``type`` of a ``lead-identities`` message."""

    IDENTIFY = "identify"  # an anonymous visitor is this lead (the collector's /v1/identify)
    VISIT = "visit"  # a web visit under an anonymous id (the worker)
    EMAIL_EVENT = "email_event"  # an e-mail event known only by address (the collector's webhook)
    EMAIL_KNOWN = "email_known"  # a lead's profile carries this address (the worker)


_PARKED_KINDS = {MessageType.VISIT: EventKind.WEB_VISIT, MessageType.EMAIL_EVENT: EventKind.EMAIL_EVENT}


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    """How long events wait for their lead, and how many may wait under one key."""

    window_ms: int = 30 * DAY_MS
    max_parked: int = 100


@dataclass(frozen=True, slots=True)
class Parked:
    """An event waiting for its lead: its JSON object without ``lead_id``."""

    kind: EventKind
    event_id: str
    occurred_at: int
    event: dict[str, Any]
    size: int  # bytes of its JSON, for the state's size bound


@dataclass(frozen=True, slots=True)
class IdentityMessage:
    """A decoded, validated ``lead-identities`` message."""

    type: MessageType
    key: str
    occurred_at: int
    lead_id: str | None = None  # identify, email_known
    parked: Parked | None = None  # visit, email_event


@dataclass(slots=True)
class IdentityState:
    """What the identity table holds per key: the lead it is linked to, or the events waiting."""

    key: str
    lead_id: str | None = None
    linked_at: int | None = None
    parked: list[Parked] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Forward:
    """An event released to its own topic under its lead, with its own event id."""

    kind: EventKind
    lead_id: str
    event_id: str
    value: bytes


@dataclass(slots=True)
class IdentityResult:
    """What one message did. ``counts`` has events by outcome (``parked``, ``forwarded``,
    ``expired``, ``overflow``, ``duplicate``); ``link`` is ``linked``, ``repeated`` or
    ``conflict`` for a link message; ``conflict`` is the dead-letter detail of a conflict."""

    state: IdentityState
    forwards: list[Forward] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    link: str | None = None
    conflict: str | None = None

    def count(self, outcome: str, n: int = 1) -> None:
        """Add ``n`` events to an outcome."""
        if n:
            self.counts[outcome] = self.counts.get(outcome, 0) + n


# -- decoding ----------------------------------------------------------------------------------


def _email_hash(payload: dict[str, Any]) -> str:
    value = text_field(payload, "email_hash")
    if _EMAIL_HASH.fullmatch(value) is None:
        raise InvalidEvent("invalid_value", "field 'email_hash' must be 64 lower-case hex digits")
    return value


def _parked(kind: EventKind, payload: dict[str, Any]) -> Parked:
    """The wrapped event, validated as its own topic would validate it (under a stand-in lead)."""
    event = payload.get("event")
    if event is None:
        raise InvalidEvent("missing_field", "field 'event' is missing")
    if not isinstance(event, dict):
        raise InvalidEvent("wrong_type", f"field 'event' must be an object, got {type(event).__name__}")
    if event.get("lead_id") is not None:
        raise InvalidEvent("invalid_value", "field 'event' must not carry a lead_id: send it to its own topic")
    probe = orjson.dumps({**event, "lead_id": _PROBE})
    try:
        decoded = decode_event(kind, _PROBE.encode(), probe)
    except InvalidEvent as exc:
        raise InvalidEvent(exc.reason, f"field 'event': {exc.detail}") from None
    return Parked(kind, decoded.event_id, decoded.occurred_at, event, len(probe))


def decode_identity(key: bytes | None, value: bytes | None) -> IdentityMessage:
    """Decode and validate one ``lead-identities`` record; raise :class:`InvalidEvent`."""
    if key is None:
        raise InvalidEvent("missing_key", "the record has no key; it must be anon:<anonymous_id> or email:<email_hash>")
    if value is None:
        raise InvalidEvent("missing_field", "the record has no value")
    if len(value) > MAX_IDENTITY_BYTES:
        raise InvalidEvent("too_large", f"the value has {len(value)} bytes; the limit is {MAX_IDENTITY_BYTES}")
    key_text = key_field(key)
    payload = json_object(value)
    raw_type = payload.get("type")
    if raw_type is None:
        raise InvalidEvent("missing_field", "field 'type' is missing")
    if raw_type not in MessageType.__members__.values():
        raise InvalidEvent("invalid_value", f"field 'type' must be one of {', '.join(sorted(MessageType))}")
    kind = MessageType(raw_type)
    parked = _parked(_PARKED_KINDS[kind], payload) if kind in _PARKED_KINDS else None
    lead_id: str | None = None
    if kind in (MessageType.IDENTIFY, MessageType.VISIT):
        anonymous_id = text_field(payload, "anonymous_id")
        expected, what = ANON_PREFIX + anonymous_id, "'anon:' + anonymous_id"
        if parked is not None and parked.event.get("anonymous_id") != anonymous_id:
            raise InvalidEvent("invalid_value", "field 'event': its anonymous_id differs from the message's")
    else:
        expected, what = EMAIL_PREFIX + _email_hash(payload), "'email:' + email_hash"
    if kind is MessageType.IDENTIFY:
        text_field(payload, "event_id")
    if kind in (MessageType.IDENTIFY, MessageType.EMAIL_KNOWN):
        lead_id = text_field(payload, "lead_id")
        occurred_at = occurred_at_field(payload)
    else:
        assert parked is not None
        occurred_at = parked.occurred_at
    if key_text != expected:
        raise InvalidEvent("key_mismatch", f"the record key must be {what}")
    return IdentityMessage(kind, key_text, occurred_at, lead_id, parked)


# -- what a message does -----------------------------------------------------------------------


def apply_identity(
    state: IdentityState | None, message: IdentityMessage, now_ms: int, config: IdentityConfig
) -> IdentityResult:
    """Apply one message to its key's state (``None`` for a key not seen yet).

    Parked events older than ``now_ms - window`` are dropped first (counted ``expired``). An
    event under a linked key is forwarded; under an unlinked key it is parked, unless it is
    already older than the window or a duplicate (same ``event_id``); beyond the bounds the
    oldest parked events are dropped (``overflow``). A link releases every parked event, oldest
    first; the same link again does nothing; a link to another lead is a conflict.
    """
    if state is None:
        state = IdentityState(message.key)
    result = IdentityResult(state)
    horizon = now_ms - config.window_ms
    kept = [p for p in state.parked if p.occurred_at >= horizon]
    result.count("expired", len(state.parked) - len(kept))
    state.parked = kept
    if message.parked is not None:
        _take(state, message.parked, horizon, config, result)
    else:
        assert message.lead_id is not None
        _link(state, message.lead_id, message.occurred_at, result)
    return result


def _forward(parked: Parked, lead_id: str) -> Forward:
    value = orjson.dumps({**parked.event, "lead_id": lead_id})
    return Forward(parked.kind, lead_id, parked.event_id, value)


def _take(state: IdentityState, event: Parked, horizon: int, config: IdentityConfig, result: IdentityResult) -> None:
    if state.lead_id is not None:
        result.forwards.append(_forward(event, state.lead_id))
        result.count("forwarded")
    elif event.occurred_at < horizon:
        result.count("expired")
    elif any(p.event_id == event.event_id for p in state.parked):
        result.count("duplicate")
    else:
        state.parked.append(event)
        state.parked.sort(key=lambda p: p.occurred_at)
        result.count("parked")
        size = sum(p.size for p in state.parked)
        while len(state.parked) > config.max_parked or size > MAX_PARKED_BYTES:
            size -= state.parked.pop(0).size
            result.count("overflow")


def _link(state: IdentityState, lead_id: str, at: int, result: IdentityResult) -> None:
    if state.lead_id is None:
        state.lead_id, state.linked_at = lead_id, at
        result.link = "linked"
        result.forwards.extend(_forward(p, lead_id) for p in state.parked)
        result.count("forwarded", len(state.parked))
        state.parked = []
    elif state.lead_id == lead_id:
        result.link = "repeated"
    else:
        result.link = "conflict"
        result.conflict = "this key is already linked to another lead; the first link stands"


# -- encodings ---------------------------------------------------------------------------------


def encode_identity_state(state: IdentityState) -> bytes:
    """The table value of a key's state."""
    parked = [[p.kind.value, p.event_id, p.occurred_at, p.size, p.event] for p in state.parked]
    return orjson.dumps(
        {"v": 1, "key": state.key, "lead_id": state.lead_id, "linked_at": state.linked_at, "parked": parked}
    )


def decode_identity_state(raw: bytes) -> IdentityState:
    """A key's state from its table value."""
    data = orjson.loads(raw)
    parked = [Parked(EventKind(kind), event_id, at, event, size) for kind, event_id, at, size, event in data["parked"]]
    return IdentityState(data["key"], data["lead_id"], data["linked_at"], parked)


def visit_message(anonymous_id: str, value: bytes) -> bytes:
    """The ``visit`` message for an anonymous web visit (``value``: the visit's JSON, as received)."""
    return orjson.dumps({"type": "visit", "anonymous_id": anonymous_id, "event": orjson.Fragment(value)})


def email_known_message(hashed: str, lead_id: str, occurred_at: int) -> bytes:
    """The ``email_known`` message: a lead's profile carries the address of this pseudonym."""
    return orjson.dumps(
        {"type": "email_known", "email_hash": hashed, "lead_id": lead_id, "occurred_at": format_rfc3339(occurred_at)}
    )


def identify_event_id(anonymous_id: object, lead_id: object) -> str:
    """The ``event_id`` of an ``identify`` message sent without one (the collector's /v1/identify,
    ``leadscore send``): the same pair always gets the same id."""
    digest = hashlib.sha256(f"{anonymous_id}\x00{lead_id}".encode()).hexdigest()[:32]
    return f"idf_{digest}"
