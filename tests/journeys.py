"""Building blocks for tests: raw records and events of every kind."""

from typing import Any

import orjson

from scoring.engine import InputRecord
from scoring.events import EventKind

DAY_MS = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def record(
    kind: EventKind | None,
    lead_id: str,
    event_id: str,
    occurred_at: int | str,
    offset: int = 0,
    **fields: Any,
) -> InputRecord:
    """A raw record as it would arrive on the topic of ``kind``."""
    payload = {"event_id": event_id, "lead_id": lead_id, "occurred_at": occurred_at, **fields}
    return InputRecord(
        kind=kind,
        topic=str(kind.value if kind else "unknown"),
        partition=0,
        offset=offset,
        key=lead_id.encode(),
        value=orjson.dumps(payload),
    )


def visit(lead: str, eid: str, at: int, path: str) -> InputRecord:
    return record(EventKind.WEB_VISIT, lead, eid, at, url=f"https://www.example.com{path}")


def profile(lead: str, eid: str, at: int, **fields: Any) -> InputRecord:
    return record(EventKind.LEAD_PROFILE, lead, eid, at, **fields)


def download(lead: str, eid: str, at: int, asset_type: str) -> InputRecord:
    return record(EventKind.CONTENT_DOWNLOAD, lead, eid, at, asset_id=f"a-{eid}", asset_type=asset_type)


def webinar(lead: str, eid: str, at: int, status: str, webinar_type: str = "demo") -> InputRecord:
    return record(EventKind.WEBINAR_EVENT, lead, eid, at, webinar_id="w1", status=status, webinar_type=webinar_type)


def email(lead: str, eid: str, at: int, action: str) -> InputRecord:
    return record(EventKind.EMAIL_EVENT, lead, eid, at, action=action, campaign_id="c1")


def good_fit_profile(lead: str, eid: str, at: int) -> InputRecord:
    """A director at a mid-market software company in Germany: fit 12 + 10 + 5 + 5 = 32."""
    return profile(
        lead,
        eid,
        at,
        seniority="director",
        company_size=800,
        industry="software",
        country="DE",
        job_title="Director of Operations",
        email="someone@acme.example",
    )


def qualifying_journey(lead: str, start: int, tag: str = "") -> list[InputRecord]:
    """Fit 32, then pricing x3 (+30 and +3 page views), a demo webinar attended (+20): 85."""
    prefix = f"{lead}{tag}"
    return [
        good_fit_profile(lead, f"{prefix}-p", start),
        visit(lead, f"{prefix}-v1", start + 1_000, "/pricing"),
        visit(lead, f"{prefix}-v2", start + 2_000, "/pricing"),
        visit(lead, f"{prefix}-v3", start + 3_000, "/pricing"),
        webinar(lead, f"{prefix}-w1", start + 4_000, "attended"),
    ]
