"""Pseudonyms: stable keys derived from personal data, so the data itself is never a key."""

import hashlib

_EMAIL_DOMAIN_SEPARATION = b"leadscore-email-v1:"


def email_hash(address: str) -> str:
    """A stable pseudonym of an e-mail address (SHA-256 of its trimmed, lower-cased form), so that
    the address itself is never a Kafka key, a table key, a log field or a metric label."""
    normalized = address.strip().lower().encode()
    return hashlib.sha256(_EMAIL_DOMAIN_SEPARATION + normalized).hexdigest()
