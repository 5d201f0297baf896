"""Known bots, crawlers and prefetches: counted, never scored."""

import re
from collections.abc import Mapping

__all__ = ["bot_kind"]

# Substrings of the User-Agent of crawlers, monitors, link previewers and HTTP libraries.
_BOT = re.compile(
    r"bot\b|bot/|crawl|spider|slurp|scrape|headlesschrome|phantomjs|lighthouse|pingdom|"
    r"uptime|monitor|facebookexternalhit|embedly|quora link preview|whatsapp|skypeuripreview|"
    r"bingpreview|yahoo! slurp|curl/|wget/|python-requests|python-urllib|go-http-client|java/|"
    r"okhttp|libwww|httpclient|axios/|node-fetch|scrapy|ahrefs|semrush|mj12|dotbot|petalbot|yandex|"
    r"baiduspider|duckduckbot|applebot|googleother|google-inspectiontool|adsbot|mediapartners",
    re.IGNORECASE,
)
_PREFETCH = {"prefetch", "preview", "prerender"}


def bot_kind(headers: Mapping[str, str]) -> str | None:
    """``"bot"`` for a known crawler or HTTP library, ``"prefetch"`` for a prefetch or prerender,
    ``"no_user_agent"`` when there is no User-Agent at all, else ``None`` (a person's browser)."""
    for name in ("Purpose", "Sec-Purpose", "X-Purpose", "X-Moz"):
        value = headers.get(name, "")
        if value and any(word in value.lower() for word in _PREFETCH):
            return "prefetch"
    agent = headers.get("User-Agent", "")
    if not agent.strip():
        return "no_user_agent"
    return "bot" if _BOT.search(agent) else None
