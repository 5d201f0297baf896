"""What the scorer produces: MQL events, nurture events, stage transitions and dead letters."""

import base64
import uuid
from dataclasses import dataclass
from typing import Any

from scoring.timeutil import format_rfc3339

_EVENT_NAMESPACE = uuid.UUID("6f1c2b0e-3d4a-5b6c-8d7e-9f0a1b2c3d4e")


def derived_event_id(lead_id: str, what: str, crossing: int) -> str:
    """A deterministic event id: the same lead, kind and crossing always give the same id."""
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{what}\x1f{lead_id}\x1f{crossing}"))


@dataclass(frozen=True, slots=True)
class BreakdownRow:
    """One rule's share of a score; the rows of a breakdown add up to the score."""

    rule: str
    kind: str  # "fit", "engagement" or "adjustment"
    points: float
    count: int

    def to_payload(self) -> dict[str, Any]:
        """The row as JSON-ready data."""
        return {"rule": self.rule, "kind": self.kind, "points": self.points, "count": self.count}


@dataclass(frozen=True, slots=True)
class Score:
    """A lead's score at one instant, rounded to 0.01, with its breakdown."""

    score: float
    fit: float
    engagement: float
    breakdown: tuple[BreakdownRow, ...]


@dataclass(frozen=True, slots=True)
class MqlEvent:
    """A lead crossed the MQL threshold."""

    lead_id: str
    crossing: int
    score: Score
    threshold: float
    crossed_at: int
    triggering_event_id: str
    rules_version: str

    @property
    def event_id(self) -> str:
        """Deterministic from the lead and the crossing number."""
        return derived_event_id(self.lead_id, "mql", self.crossing)

    def to_payload(self) -> dict[str, Any]:
        """The event as sent to the handoff topic."""
        return {
            "event_id": self.event_id,
            "lead_id": self.lead_id,
            "stage": "mql",
            "crossing": self.crossing,
            "score": self.score.score,
            "fit_score": self.score.fit,
            "engagement_score": self.score.engagement,
            "threshold": self.threshold,
            "crossed_at": format_rfc3339(self.crossed_at),
            "triggering_event_id": self.triggering_event_id,
            "rules_version": self.rules_version,
            "breakdown": [row.to_payload() for row in self.score.breakdown],
        }


@dataclass(frozen=True, slots=True)
class NurtureEvent:
    """A qualified lead returned to nurture."""

    lead_id: str
    crossing: int
    score: Score
    threshold: float
    at: int
    reason: str  # "decay", "negative_signal", "sales_rejected" or "lost"
    rules_version: str

    @property
    def event_id(self) -> str:
        """Deterministic from the lead and the crossing this return ends."""
        return derived_event_id(self.lead_id, "nurture", self.crossing)

    def to_payload(self) -> dict[str, Any]:
        """The event as sent to the nurture topic."""
        return {
            "event_id": self.event_id,
            "lead_id": self.lead_id,
            "stage": "nurture",
            "crossing": self.crossing,
            "score": self.score.score,
            "threshold": self.threshold,
            "at": format_rfc3339(self.at),
            "reason": self.reason,
            "rules_version": self.rules_version,
            "breakdown": [row.to_payload() for row in self.score.breakdown],
        }


@dataclass(frozen=True, slots=True)
class Transition:
    """A lead moved from one stage to another (for the funnel counters; never sent)."""

    lead_id: str
    from_stage: str
    to_stage: str
    at: int
    rules_version: str  # of the lead's current MQL crossing


# Original bytes kept per key and per value in a dead letter: the envelope (the key, and both in
# base64) stays far below the 1 MB default record limit even for a huge hostile record.
DEAD_LETTER_MAX_BYTES = 131072


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input record that could not be scored, with its reason and its original bytes."""

    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    def record_key(self) -> bytes | None:
        """The dead-letter record's key: the original key, cut to ``DEAD_LETTER_MAX_BYTES``."""
        return None if self.key is None else self.key[:DEAD_LETTER_MAX_BYTES]

    def to_payload(self, failed_at_ms: int) -> dict[str, Any]:
        """The envelope sent to the dead-letter topic. A key or value longer than
        ``DEAD_LETTER_MAX_BYTES`` keeps its first bytes (the detail says so), so that the envelope
        always fits in a record of the dead-letter topic."""

        def b64(data: bytes | None) -> str | None:
            return None if data is None else base64.b64encode(data[:DEAD_LETTER_MAX_BYTES]).decode()

        detail = self.detail
        for name, data in (("key", self.key), ("value", self.value)):
            if data is not None and len(data) > DEAD_LETTER_MAX_BYTES:
                detail += f" ({name} cut to its first {DEAD_LETTER_MAX_BYTES} of {len(data)} bytes)"

        return {
            "reason": self.reason,
            "detail": detail,
            "source_topic": self.topic,
            "source_partition": self.partition,
            "source_offset": self.offset,
            "key_b64": b64(self.key),
            "value_b64": b64(self.value),
            "failed_at": format_rfc3339(failed_at_ms),
        }
