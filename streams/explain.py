"""``leadscore explain``: a lead's score and breakdown, as a worker reports it."""

import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from typing import Any

import orjson


def render(lead: dict[str, Any]) -> str:
    """A lead's JSON from ``/leads/{id}`` as readable text."""
    lines = [
        f"lead {lead['lead_id']}: {lead['stage'].upper()}  score {lead['score']:.2f} "
        f"(fit {lead['fit_score']:.2f} + engagement {lead['engagement_score']:.2f})",
        f"rules {lead['rules_version']}, {lead['crossings']} MQL crossing(s)",
    ]
    if lead.get("due_for_nurture_ms"):
        due = datetime.fromtimestamp(lead["due_for_nurture_ms"] / 1000, tz=UTC)
        lines.append(f"returns to nurture at {due.isoformat(timespec='seconds')} without new activity")
    lines.append("breakdown:")
    for row in sorted(lead["breakdown"], key=lambda r: -abs(r["points"])):
        count = f" x{row['count']}" if row["count"] > 1 else ""
        lines.append(f"  {row['points']:>8.2f}  {row['kind']:<11} {row['rule']}{count}")
    return "\n".join(lines)


def explain_lead(base_url: str, lead_id: str) -> tuple[int, str]:
    """(exit code, text) for a lead; the worker routes the request to the lead's owner."""
    url = f"{base_url.rstrip('/')}/leads/{urllib.parse.quote(lead_id, safe='')}"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (our own worker's URL)
            return 0, render(orjson.loads(response.read()))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return 1, f"lead {lead_id!r} is not known"
        return 2, f"the worker answered {exc.code}: {exc.read()[:200]!r}"
    except urllib.error.URLError as exc:
        return 2, f"no worker answers at {base_url}: {exc.reason}"
