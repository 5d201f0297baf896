"""Write keys of the events API: ``Authorization: Bearer <key>``, several keys at once (rotation)."""

import hashlib
import hmac
from collections.abc import Iterable, Mapping

__all__ = ["WriteKeys"]


class WriteKeys:
    """The accepted keys; each caller is known by a short fingerprint of its key, never the key."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._keys = [key.encode() for key in keys if key]

    def __bool__(self) -> bool:
        return bool(self._keys)

    def client(self, headers: Mapping[str, str]) -> str | None:
        """The fingerprint (``key-<8 hex>``) of the write key the request carries, or ``None`` when
        it carries none or an unknown one. Every key is compared in constant time."""
        scheme, _, token = headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        given = token.strip().encode()
        found = None
        for key in self._keys:
            if hmac.compare_digest(given, key):
                found = key
        return None if found is None else "key-" + hashlib.sha256(found).hexdigest()[:8]
