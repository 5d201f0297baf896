"""The tracking pixel: its GIF, its cookies, and the web visit a pixel request describes."""

import base64
import hashlib
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from scoring.timeutil import format_rfc3339

__all__ = [
    "ANON_COOKIE",
    "GIF",
    "NO_CACHE",
    "TOKEN_COOKIE",
    "do_not_track",
    "new_anonymous_id",
    "visit_event",
]

# The smallest transparent 1x1 GIF (43 bytes).
GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_CACHE = {
    "Cache-Control": "no-store, no-cache, must-revalidate, max-age=0",
    "Pragma": "no-cache",
    "Expires": "0",
}
ANON_COOKIE = "ls_aid"  # the anonymous visitor id the collector gives a browser
# A lead token the browser once brought in a link (``lt``), kept first-party.
TOKEN_COOKIE = "ls_lt"  # noqa: S105 (a cookie name, not a secret)
UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")
MAX_TEXT = 4096


def new_anonymous_id() -> str:
    """A fresh random anonymous id (128 bits, URL-safe)."""
    return "a_" + secrets.token_urlsafe(16)


def do_not_track(headers: Mapping[str, str]) -> bool:
    """Whether the browser asks not to be tracked (``DNT: 1`` or Global Privacy Control)."""
    return headers.get("DNT", "").strip() == "1" or headers.get("Sec-GPC", "").strip() == "1"


def _usable_url(url: str) -> bool:
    if url.startswith("/"):
        return not url.startswith("//")
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def visit_event(
    query: Mapping[str, str],
    referer: str,
    now_ms: int,
    *,
    lead_id: str | None,
    anonymous_id: str | None,
) -> dict[str, Any] | None:
    """The web visit of a pixel request, or ``None`` when no page URL is known.

    The page is ``u`` or else the Referer header; the referrer is ``r``; UTM parameters come from
    explicit ``utm_*`` parameters or else the page URL's query. The ``event_id`` is a hash of the
    visitor, the page, and ``e`` (a page-view id the page may send) or else the millisecond, so a
    page that sends ``e`` gets the same id when a request is retried."""
    url = (query.get("u") or referer or "")[:MAX_TEXT]
    if not url or not _usable_url(url):
        return None
    event: dict[str, Any] = {}
    if lead_id is not None:
        event["lead_id"] = lead_id
    if anonymous_id is not None:
        event["anonymous_id"] = anonymous_id
    who = lead_id if lead_id is not None else f"anon:{anonymous_id}"
    view = query.get("e", "")[:256] or str(now_ms)
    digest = hashlib.sha256("\x00".join((who, url, view)).encode()).hexdigest()[:32]
    event.update(event_id=f"px_{digest}", occurred_at=format_rfc3339(now_ms), url=url)
    referrer = query.get("r")
    if referrer:
        event["referrer"] = referrer[:MAX_TEXT]
    from_page = dict(parse_qsl(urlsplit(url).query)) if "?" in url else {}
    for name in UTM_FIELDS:
        value = query.get(name) or from_page.get(name)
        if value:
            event[name] = value[:MAX_TEXT]
    return event
