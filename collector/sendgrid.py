"""The SendGrid Event Webhook: its signature check, and its ``open``/``click`` events as e-mail
events (known lead) or identity messages (known only by the recipient's address)."""

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from collector.validation import Accepted, Rejected, schema_error, validate_event, validator
from scoring.identity import EMAIL_PREFIX, email_hash

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "IdentityRecord",
    "Ignored",
    "load_public_key",
    "map_event",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
SCORED = ("open", "click")
CAMPAIGN_ARGS = ("campaign_id", "singlesend_id", "marketing_campaign_id")


@dataclass(frozen=True)
class IdentityRecord:
    """A message for ``lead-identities``: key ``email:<hash>``, an ``email_event`` value."""

    key: bytes
    value: bytes


@dataclass(frozen=True)
class Ignored:
    """An event type leadscore does not score (delivered, bounce, ...): counted by type."""

    event_type: str


def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """The verification key as SendGrid shows it (base64 of the DER key), or a PEM block;
    raises ``ValueError`` if it is neither, or not an elliptic-curve key."""
    text = text.strip()
    try:
        key = (
            load_pem_public_key(text.encode())
            if text.startswith("-----BEGIN")
            else load_der_public_key(base64.b64decode(text, validate=True))
        )
    except (binascii.Error, ValueError, TypeError) as exc:
        raise ValueError(f"not a public key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("the SendGrid verification key must be an elliptic-curve (ECDSA) key")
    return key


def verify_signature(key: ec.EllipticCurvePublicKey, body: bytes, signature: str, timestamp: str) -> bool:
    """Whether ``signature`` (base64 DER ECDSA, SHA-256) signs the timestamp header followed by the
    raw request body, as SendGrid signs its webhook."""
    try:
        der = base64.b64decode(signature, validate=True)
        key.verify(der, timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True


def _text_arg(event: dict[str, Any], name: str) -> str | None:
    value = event.get(name)
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        return None
    return str(value)


def _campaign(event: dict[str, Any]) -> str:
    for name in CAMPAIGN_ARGS:
        value = _text_arg(event, name)
        if value is not None:
            return value
    category = event.get("category")
    if isinstance(category, list) and category and isinstance(category[0], str) and category[0]:
        return category[0]
    return category if isinstance(category, str) and category else "sendgrid"


def map_event(event: Any) -> Accepted | IdentityRecord | Ignored | Rejected:
    """One webhook event: an ``open``/``click`` with a ``lead_id`` custom argument becomes an e-mail
    event for ``email-events`` (its ``event_id`` the ``sg_event_id``, so a retried webhook counts
    once); without one, an ``email_event`` identity message under the address's pseudonym; any
    other type is ignored. The address itself goes nowhere."""
    if not isinstance(event, dict):
        return Rejected("not_an_object", f"the event is a JSON {type(event).__name__}, not an object")
    event_type = event.get("event")
    if not isinstance(event_type, str):
        return Rejected("missing_field", "field 'event' is missing")
    if event_type not in SCORED:
        return Ignored(event_type)
    sg_event_id = _text_arg(event, "sg_event_id")
    if sg_event_id is None:
        return Rejected("missing_field", "field 'sg_event_id' is missing")
    timestamp = event.get("timestamp")
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float) or not 0 <= timestamp < 10**11:
        return Rejected("invalid_value", "field 'timestamp' must be epoch seconds")
    email_event: dict[str, Any] = {
        "event_id": sg_event_id,
        "occurred_at": int(timestamp * 1000),
        "action": event_type,
        "campaign_id": _campaign(event),
    }
    if event_type == "click" and isinstance(event.get("url"), str) and event["url"]:
        email_event["url"] = event["url"]
    lead_id = _text_arg(event, "lead_id")
    if lead_id is not None:
        return validate_event({"type": "email_event", "lead_id": lead_id, **email_event})
    address = event.get("email")
    if not isinstance(address, str) or "@" not in address:
        return Rejected("missing_field", "neither a 'lead_id' custom argument nor an 'email' address")
    digest = email_hash(address)
    message = {"type": "email_event", "email_hash": digest, "event": email_event}
    error = next(iter(validator("lead_identity").iter_errors(message)), None)
    if error is not None:
        return schema_error(error)
    return IdentityRecord((EMAIL_PREFIX + digest).encode(), orjson.dumps(message))
