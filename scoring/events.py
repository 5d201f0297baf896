"""Inbound events: their kinds, and the decoding and validation of one raw record."""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final
from urllib.parse import urlsplit

import orjson

from scoring.errors import InvalidEvent
from scoring.pseudonyms import email_hash
from scoring.timeutil import parse_rfc3339_ms


class EventKind(StrEnum):
    """The kinds of inbound event; each has its own topic."""

    WEB_VISIT = "web_visit"
    EMAIL_EVENT = "email_event"
    CONTENT_DOWNLOAD = "content_download"
    WEBINAR_EVENT = "webinar_event"
    LEAD_PROFILE = "lead_profile"
    SALES_FEEDBACK = "sales_feedback"
    # An erasure request (GDPR): the lead's state is deleted and its earlier events are dropped.
    ERASURE = "erasure"


SCORED_KINDS = (
    EventKind.WEB_VISIT,
    EventKind.EMAIL_EVENT,
    EventKind.CONTENT_DOWNLOAD,
    EventKind.WEBINAR_EVENT,
)
# What sales says about a lead, in funnel order (see scoring/stages.py for what each one does).
FEEDBACK_OUTCOMES = ("accepted", "rejected", "sql", "won", "lost")

# Per kind: field -> (accepted types, required). Strings are capped in length on decode.
_STR = (str,)
_INT = (int,)
EVENT_SPECS: Mapping[EventKind, Mapping[str, tuple[tuple[type, ...], bool]]] = {
    EventKind.WEB_VISIT: {
        "url": (_STR, True),
        "referrer": (_STR, False),
        "anonymous_id": (_STR, False),
        "utm_source": (_STR, False),
        "utm_medium": (_STR, False),
        "utm_campaign": (_STR, False),
    },
    EventKind.EMAIL_EVENT: {
        "action": (_STR, True),
        "campaign_id": (_STR, True),
        "url": (_STR, False),
    },
    EventKind.CONTENT_DOWNLOAD: {
        "asset_id": (_STR, True),
        "asset_type": (_STR, True),
        "title": (_STR, False),
    },
    EventKind.WEBINAR_EVENT: {
        "webinar_id": (_STR, True),
        "status": (_STR, True),
        "minutes_attended": (_INT, False),
        "webinar_type": (_STR, False),
    },
    EventKind.LEAD_PROFILE: {
        "job_title": (_STR, False),
        "seniority": (_STR, False),
        "company_size": (_INT, False),
        "industry": (_STR, False),
        "country": (_STR, False),
        "email": (_STR, False),
    },
    EventKind.SALES_FEEDBACK: {
        "outcome": (_STR, True),
        "reason": (_STR, False),
    },
    EventKind.ERASURE: {},  # lead_id, event_id and requested_at (its occurred_at) only
}
EVENT_FIELDS: Mapping[EventKind, tuple[str, ...]] = {kind: tuple(spec) for kind, spec in EVENT_SPECS.items()}
_ENUMS: Mapping[tuple[EventKind, str], frozenset[str]] = {
    (EventKind.EMAIL_EVENT, "action"): frozenset({"open", "click"}),
    (EventKind.WEBINAR_EVENT, "status"): frozenset({"registered", "attended"}),
    (EventKind.SALES_FEEDBACK, "outcome"): frozenset(FEEDBACK_OUTCOMES),
    (EventKind.LEAD_PROFILE, "seniority"): frozenset(
        {"intern", "individual_contributor", "manager", "director", "vp", "c_level", "owner"}
    ),
}
# Final: compiled, each is a constant in the code, not a look-up in the module's globals.
MAX_ID_LENGTH: Final = 256
MAX_TEXT_LENGTH: Final = 4096
MAX_EVENT_BYTES: Final = 65536
_MAX_EPOCH_MS: Final = 100_000_000_000_000  # 10**14
# Per kind, what _attrs checks for each field: (name, whether it is text (else an integer),
# required, allowed values). A dict, not a Mapping: compiled, a look-up in it is a direct dict
# look-up. Whether it is text is decided by equality: compiled, the tuples _STR and _INT are
# rebuilt where they are read, so an identity test on them would never hold.
_CHECKS: Final[dict[EventKind, tuple[tuple[str, bool, bool, frozenset[str] | None], ...]]] = {
    kind: tuple((name, types == _STR, required, _ENUMS.get((kind, name))) for name, (types, required) in spec.items())
    for kind, spec in EVENT_SPECS.items()
}
# URL -> its lower-case path: pages repeat, and splitting an absolute URL is the dearest check.
_PATHS: Final[dict[str, str]] = {}
_PATHS_SIZE: Final = 8192


@dataclass(slots=True, init=False)
class Event:
    """A decoded, validated inbound event. ``occurred_at`` is in epoch milliseconds. Not changed
    once built.

    A slotted class with its constructor written out (``init=False``): compiled, building one and
    reading its fields are native code, where a named tuple's ``__new__`` runs as interpreted
    Python and each field read is a generic attribute look-up (one is built per inbound record,
    and its fields are read a dozen times).

    ``lead_id`` is empty for an anonymous web visit (``attrs["anonymous_id"]`` says whose): it is
    not scored but handed to the identity agent. ``email_hash`` is the pseudonym of a profile
    event's e-mail address (the address itself is not kept).
    """

    kind: EventKind
    event_id: str
    lead_id: str
    occurred_at: int
    attrs: dict[str, Any]
    email_hash: str | None

    def __init__(
        self,
        kind: EventKind,
        event_id: str,
        lead_id: str,
        occurred_at: int,
        attrs: dict[str, Any],
        email_hash: str | None = None,
    ) -> None:
        self.kind = kind
        self.event_id = event_id
        self.lead_id = lead_id
        self.occurred_at = occurred_at
        self.attrs = attrs
        self.email_hash = email_hash

    @property
    def anonymous(self) -> bool:
        """A web visit by a visitor not yet tied to a lead."""
        return not self.lead_id


def json_object(value: bytes) -> dict[str, Any]:
    """A record value parsed as one JSON object; raise :class:`InvalidEvent` (``invalid_utf8``,
    ``invalid_json`` or ``not_an_object``) otherwise."""
    try:
        payload = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        reason = "invalid_utf8" if "utf-8" in str(exc).lower() else "invalid_json"
        raise InvalidEvent(reason, f"the value is not JSON: {str(exc)[:200]}") from None
    if not isinstance(payload, dict):
        raise InvalidEvent("not_an_object", f"the value is a JSON {type(payload).__name__}, not an object")
    return payload


def key_field(key: bytes) -> str:
    """A record key as text; raise :class:`InvalidEvent` (``invalid_utf8``) when it is not UTF-8."""
    try:
        return key.decode()
    except UnicodeDecodeError:
        raise InvalidEvent("invalid_utf8", "the record key is not UTF-8") from None


def text_field(payload: Mapping[str, Any], name: str, limit: int = MAX_ID_LENGTH) -> str:
    """The non-empty string field ``name`` of at most ``limit`` characters; raise :class:`InvalidEvent`
    (``missing_field``, ``wrong_type`` or ``invalid_value``) otherwise."""
    value = payload.get(name)
    if value is None:
        raise InvalidEvent("missing_field", f"field '{name}' is missing")
    if not isinstance(value, str):
        raise InvalidEvent("wrong_type", f"field '{name}' must be a string, got {type(value).__name__}")
    if not value or len(value) > limit:
        raise InvalidEvent("invalid_value", f"field '{name}' must have 1 to {limit} characters")
    return value


def occurred_at_field(payload: Mapping[str, Any]) -> int:
    """The field ``occurred_at`` (RFC 3339 with a zone, or epoch milliseconds) in epoch milliseconds;
    raise :class:`InvalidEvent` otherwise."""
    value = payload.get("occurred_at")
    if value is None:
        raise InvalidEvent("missing_field", "field 'occurred_at' is missing")
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidEvent(
            "wrong_type",
            "field 'occurred_at' must be an RFC 3339 string with a zone or epoch milliseconds",
        )
    if isinstance(value, int):
        if not 0 <= value < _MAX_EPOCH_MS:
            raise InvalidEvent("timestamp_out_of_range", f"occurred_at {value} is not epoch milliseconds")
        return value
    try:
        return parse_rfc3339_ms(value)
    except ValueError as exc:
        raise InvalidEvent("invalid_value", f"field 'occurred_at': {exc}") from None


def _path_of(url: str) -> str:
    path = _PATHS.get(url)
    if path is None:
        path = _split_path(url)  # raises for a bad URL, which is never remembered
        if len(_PATHS) >= _PATHS_SIZE:
            _PATHS.clear()
        _PATHS[url] = path
    return path


def _split_path(url: str) -> str:
    if url.startswith("/"):
        path = url.split("?", 1)[0].split("#", 1)[0]
    else:
        try:
            parts = urlsplit(url)
        except ValueError:
            raise InvalidEvent("invalid_value", "field 'url' is not a URL") from None
        if not parts.scheme or not parts.netloc:
            raise InvalidEvent("invalid_value", "field 'url' must be an absolute URL or a path")
        path = parts.path or "/"
    return path.lower()


def _attrs(kind: EventKind, payload: dict[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {}
    for name, text, required, allowed in _CHECKS[kind]:
        value = payload.get(name)
        if value is None:
            if required:
                raise InvalidEvent("missing_field", f"field '{name}' is missing")
            continue
        # JSON gives exact types: a bool is not an int here.
        if text:
            if type(value) is not str:
                raise InvalidEvent("wrong_type", f"field '{name}' must be a string, got {type(value).__name__}")
            if len(value) > MAX_TEXT_LENGTH:
                raise InvalidEvent("invalid_value", f"field '{name}' is longer than {MAX_TEXT_LENGTH}")
        elif type(value) is not int:
            raise InvalidEvent("wrong_type", f"field '{name}' must be an integer, got {type(value).__name__}")
        elif value < 0:
            raise InvalidEvent("invalid_value", f"field '{name}' must not be negative")
        if allowed is not None and value not in allowed:
            raise InvalidEvent("invalid_value", f"field '{name}' must be one of {', '.join(sorted(allowed))}")
        attrs[name] = value
    if "url" in attrs:
        attrs["path"] = _path_of(attrs["url"])
    if kind is EventKind.LEAD_PROFILE:
        email = attrs.pop("email", None)
        if email is not None:
            local, at, domain = email.rpartition("@")
            if not at or not local or "." not in domain:
                raise InvalidEvent("invalid_value", "field 'email' is not an e-mail address")
            attrs["email_domain"] = domain.lower()
        country = attrs.get("country")
        if country is not None:
            attrs["country"] = country.upper()
    return attrs


def decode_event(kind: EventKind, key: bytes | None, value: bytes | None) -> Event:
    """Decode and validate one record of a topic of ``kind``; raise :class:`InvalidEvent`."""
    if key is None:
        raise InvalidEvent("missing_key", "the record has no key; it must be the lead id")
    if value is None:
        raise InvalidEvent("missing_field", "the record has no value")
    if len(value) > MAX_EVENT_BYTES:
        raise InvalidEvent("too_large", f"the value has {len(value)} bytes; the limit is {MAX_EVENT_BYTES}")
    try:
        loaded = orjson.loads(value)
    except orjson.JSONDecodeError:
        loaded = None
    # A dict, not Any: compiled, each ``payload.get`` is then a direct dict look-up, not a method call.
    payload: dict[str, Any] = loaded if type(loaded) is dict else json_object(value)  # raises why it is not
    lead_id = payload.get("lead_id")
    if kind is EventKind.WEB_VISIT and lead_id is None and payload.get("anonymous_id") is not None:
        return _anonymous_visit(key, payload)
    if kind is EventKind.ERASURE:
        payload = {**payload, "occurred_at": payload.get("requested_at")}  # when the erasure was asked
        if payload["occurred_at"] is None:
            raise InvalidEvent("missing_field", "field 'requested_at' is missing")
    # The checks of text_field, key_field and occurred_at_field, which raise on the uncommon paths.
    if type(lead_id) is not str or not lead_id or len(lead_id) > MAX_ID_LENGTH:
        lead_id = text_field(payload, "lead_id", MAX_ID_LENGTH)
    try:
        key_text = key.decode()
    except UnicodeDecodeError:
        raise InvalidEvent("invalid_utf8", "the record key is not UTF-8") from None
    if key_text != lead_id:
        raise InvalidEvent("key_mismatch", "the record key differs from the event's lead_id")
    event_id = payload.get("event_id")
    if type(event_id) is not str or not event_id or len(event_id) > MAX_ID_LENGTH:
        event_id = text_field(payload, "event_id", MAX_ID_LENGTH)
    occurred_at = payload.get("occurred_at")
    if type(occurred_at) is not int or not 0 <= occurred_at < _MAX_EPOCH_MS:
        occurred_at = occurred_at_field(payload)
    attrs = _attrs(kind, payload)
    email = payload.get("email") if kind is EventKind.LEAD_PROFILE else None  # a string: _attrs checked it
    return Event(kind, event_id, lead_id, occurred_at, attrs, None if email is None else email_hash(email))


def _anonymous_visit(key: bytes, payload: dict[str, Any]) -> Event:
    """A web visit with an ``anonymous_id`` and no ``lead_id``, keyed by the anonymous id: checked
    like any visit, with an empty ``lead_id`` (the identity agent finds the lead)."""
    anonymous_id = text_field(payload, "anonymous_id", MAX_ID_LENGTH)
    key_text = key_field(key)
    if key_text != anonymous_id:
        raise InvalidEvent("key_mismatch", "the record key differs from the anonymous visit's anonymous_id")
    return Event(
        kind=EventKind.WEB_VISIT,
        event_id=text_field(payload, "event_id", MAX_ID_LENGTH),
        lead_id="",
        occurred_at=occurred_at_field(payload),
        attrs=_attrs(EventKind.WEB_VISIT, payload),
    )
