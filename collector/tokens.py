"""Signed lead tokens: an HMAC over the lead id, so that only pages and e-mails the site signed can
raise a lead's score through the pixel (a guessed lead id gets nothing)."""

import base64
import binascii
import hashlib
import hmac

__all__ = ["TOKEN_PREFIX", "sign_lead_token", "verify_lead_token"]

TOKEN_PREFIX = "v1"  # noqa: S105 (a format version, not a secret)
_DOMAIN = b"leadscore-lead-token-v1:"
_MAC_BYTES = 16  # 128 bits of HMAC-SHA256 are plenty against forgery and keep URLs short


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(lead_id: str, secret: str) -> bytes:
    return hmac.new(secret.encode(), _DOMAIN + lead_id.encode(), hashlib.sha256).digest()[:_MAC_BYTES]


def sign_lead_token(lead_id: str, secret: str) -> str:
    """The token of ``lead_id`` under ``secret``: ``v1.<lead id, base64url>.<HMAC, base64url>``
    (URL-safe, no padding). Raises ``ValueError`` for an empty lead id or secret."""
    if not lead_id:
        raise ValueError("the lead id must not be empty")
    if not secret:
        raise ValueError("the token secret must not be empty (LEADSCORE_COLLECTOR_TOKEN_SECRET)")
    return f"{TOKEN_PREFIX}.{_b64(lead_id.encode())}.{_b64(_mac(lead_id, secret))}"


def verify_lead_token(token: str, secret: str) -> str | None:
    """The lead id a token was signed for, or ``None`` if it is malformed or its HMAC is wrong."""
    if not secret or len(token) > 1024:
        return None
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
        return None
    try:
        lead_id = _unb64(parts[1]).decode()
        mac = _unb64(parts[2])
    except (binascii.Error, ValueError):
        return None
    if not lead_id or len(lead_id) > 256:
        return None
    return lead_id if hmac.compare_digest(mac, _mac(lead_id, secret)) else None
