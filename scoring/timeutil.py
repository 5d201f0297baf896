"""Durations and timestamps: parsing and formatting, all in epoch milliseconds."""

import re
from datetime import UTC, datetime

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def parse_duration_ms(text: str) -> int:
    """Parse a duration such as ``"30d"``, ``"12h"``, ``"90s"`` or ``"250ms"`` into milliseconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use a number and one of ms, s, m, h, d, w)")
    value = float(match.group(1)) * _UNIT_MS[match.group(2)]
    if value <= 0:
        raise ValueError(f"duration must be positive: {text!r}")
    return int(value)


def parse_rfc3339_ms(text: str) -> int:
    """Parse an RFC 3339 timestamp that carries a zone into epoch milliseconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an RFC 3339 timestamp: {text[:64]!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"timestamp has no zone offset: {text[:64]!r}")
    return int(moment.timestamp() * 1000)


def format_rfc3339(ms: int) -> str:
    """Format epoch milliseconds as an RFC 3339 UTC timestamp with millisecond precision."""
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
