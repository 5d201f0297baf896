"""Validation of API events against the JSON Schema contracts in ``schemas/``, then against the
worker's own decoder, so that an accepted event is one the worker scores (no dead letter later)."""

from dataclasses import dataclass
from functools import cache
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from schemas.contracts import load_schema, schema_names
from scoring.errors import InvalidEvent
from scoring.events import MAX_EVENT_BYTES, EventKind, decode_event

__all__ = ["Accepted", "Rejected", "schema_error", "validate_event", "validator"]

# Erasure requests are an operator's act (`leadscore erase`, or the lead-erasures topic), never
# something a write key for tracking events may do.
KINDS = {kind.value: kind for kind in EventKind if kind is not EventKind.ERASURE}


@dataclass(frozen=True)
class Accepted:
    """An event ready for its topic: the kind (which names the topic), key and value bytes."""

    kind: EventKind
    key: bytes
    value: bytes


@dataclass(frozen=True)
class Rejected:
    """Why an event was refused: a stable reason (the dead-letter vocabulary) and a detail."""

    reason: str
    detail: str


@cache
def _registry() -> Registry[Any]:
    resources = []
    for name in schema_names():
        schema = load_schema(name)
        resource = Resource.from_contents(schema, default_specification=DRAFT202012)
        resources += [(schema["$id"], resource), (f"{name}.schema.json", resource)]
    return Registry().with_resources(resources)


@cache
def validator(schema: str) -> Draft202012Validator:
    """The validator of one packaged schema (``"web_visit"``, ``"lead_identity"``, ...), built once."""
    return Draft202012Validator(load_schema(schema), registry=_registry())


def _field(error: ValidationError) -> str:
    path = ".".join(str(part) for part in error.absolute_path)
    if error.validator == "required":
        missing = str(error.message).split("'")
        return missing[1] if len(missing) > 2 else path
    return path or "(event)"


def schema_error(error: ValidationError) -> Rejected:
    """The reason and detail of a schema violation: ``missing_field``, ``wrong_type`` or
    ``invalid_value``; the detail names the field and never repeats a long value."""
    name = _field(error)
    if error.validator == "required":
        return Rejected("missing_field", f"field '{name}' is missing")
    types = [sub.validator for sub in error.context or []]
    if error.validator == "anyOf" and types and all(t == "required" for t in types):
        names = " or ".join(f"'{_field(sub)}'" for sub in error.context or [])
        return Rejected("missing_field", f"field {names} is missing")
    if error.validator == "type" or (types and all(t == "type" for t in types)):
        return Rejected("wrong_type", f"field '{name}' has the wrong type")
    message = str(error.message)
    return Rejected("invalid_value", f"field '{name}': {message[:200]}")


def validate_event(event: Any) -> Accepted | Rejected:
    """Check one API event (an object with ``type`` and the fields of that type's contract) and
    return it as a record for its topic, or why it is refused."""
    if not isinstance(event, dict):
        return Rejected("not_an_object", f"the event is a JSON {type(event).__name__}, not an object")
    type_name = event.get("type")
    kind = KINDS.get(type_name) if isinstance(type_name, str) else None
    if kind is None:
        return Rejected("unknown_type", f"field 'type' must be one of {', '.join(KINDS)}")
    payload = {name: value for name, value in event.items() if name != "type"}
    error = best_match(validator(kind.value).iter_errors(payload))
    if error is not None:
        return schema_error(error)
    lead_id = payload.get("lead_id")
    key_text = lead_id if isinstance(lead_id, str) else payload.get("anonymous_id")
    if not isinstance(key_text, str):  # the schema requires one of them; belt and braces
        return Rejected("missing_field", "field 'lead_id' is missing")
    key, value = key_text.encode(), orjson.dumps(payload)
    if len(value) > MAX_EVENT_BYTES:
        return Rejected("too_large", f"the event has {len(value)} bytes; the limit is {MAX_EVENT_BYTES}")
    try:
        decode_event(kind, key, value)
    except InvalidEvent as exc:
        return Rejected(exc.reason, exc.detail)
    return Accepted(kind, key, value)
