"""First-touch sources: what a web visit says about where the lead came from, and a bounded set
of names for reporting it (funnel figures and metric labels never carry a free-form string)."""

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

MAX_SOURCE_LENGTH = 64
DIRECT = "direct"
OTHER = "other"
UNKNOWN = "unknown"  # no web visit yet

# Reported name -> the utm_source values and referrer domains (without "www.") that mean it.
KNOWN_SOURCES: Mapping[str, frozenset[str]] = {
    "google": frozenset({"google", "adwords", "google_ads", "googleads"}),
    "bing": frozenset({"bing", "microsoft_ads"}),
    "duckduckgo": frozenset({"duckduckgo"}),
    "linkedin": frozenset({"linkedin", "lnkd.in"}),
    "facebook": frozenset({"facebook", "fb", "meta", "instagram"}),
    "twitter": frozenset({"twitter", "x", "t.co", "x.com"}),
    "youtube": frozenset({"youtube", "youtu.be"}),
    "reddit": frozenset({"reddit"}),
    "github": frozenset({"github"}),
    "g2": frozenset({"g2", "g2crowd"}),
    "capterra": frozenset({"capterra"}),
    "newsletter": frozenset({"newsletter"}),
    "email": frozenset({"email", "e-mail", "mail", "hubspot", "marketo", "mailchimp"}),
    "partner": frozenset({"partner", "partners", "referral"}),
    "event": frozenset({"event", "events", "conference", "webinar"}),
}
_BY_ALIAS: Final = {alias: name for name, aliases in KNOWN_SOURCES.items() for alias in aliases}
_SECOND_LEVEL: Final = frozenset({"co", "com", "org", "net", "ac", "gov", "edu"})
REPORTED_SOURCES = (*KNOWN_SOURCES, DIRECT, OTHER, UNKNOWN)


def referrer_domain(referrer: str) -> str:
    """The host of a referrer URL, lower case, without ``www.`` or a port; "" if it has none."""
    try:
        host = urlsplit(referrer.strip()).hostname or ""
    except ValueError:
        return ""
    return host.removeprefix("www.")[:MAX_SOURCE_LENGTH]


def first_touch(attrs: Mapping[str, Any]) -> str:
    """A web visit's source: its utm_source, else its referrer's domain, else "" (direct)."""
    utm = attrs.get("utm_source")
    if isinstance(utm, str) and utm.strip():
        return utm.strip().lower()[:MAX_SOURCE_LENGTH]
    referrer = attrs.get("referrer")
    return referrer_domain(referrer) if isinstance(referrer, str) else ""


def normalise_source(source: str | None) -> str:
    """One of :data:`REPORTED_SOURCES` for a stored first-touch source."""
    if source is None:
        return UNKNOWN
    if not source:
        return DIRECT
    if source in _BY_ALIAS:
        return _BY_ALIAS[source]
    labels = source.split(".")
    if len(labels) < 2:
        return OTHER
    # A domain: its registered name, "google" of "news.google.com" and of "google.co.uk".
    second_level = len(labels) >= 3 and labels[-2] in _SECOND_LEVEL
    name = labels[-3] if second_level else labels[-2]
    return _BY_ALIAS.get(name, OTHER)
