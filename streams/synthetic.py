"""Synthetic lead journeys for demos and tests: pure, deterministic from a ``random.Random``.

A journey is one lead's events over simulated hours, days or weeks, shaped by a persona:

- ``champion`` (~10%): a good fit whose engagement escalates over 1-3 weeks (blog, product,
  pricing, docs, a technical download, a demo webinar) and then goes silent; becomes an MQL and
  later decays back to nurture.
- ``evaluator`` (~16%): a medium fit comparing products; sometimes qualifies.
- ``researcher`` (~26%): reads the blog and opens newsletters for weeks; does not qualify.
- ``student`` (~8%): a free-mail student who downloads everything; never qualifies.
- ``job_seeker`` (~7%): careers and job pages; never qualifies.
- ``lurker`` (~33%): one to three anonymous page views, no profile.

Each journey also has a hidden ``fit`` and ``intent`` (0 to 1, drawn by persona; intent shapes how
far the journey escalates) and, for a lead that left a profile (sales can contact it), the sales
outcomes it would get if it were handed over: drawn from a logistic model of fit and intent
(:data:`OUTCOME_MODEL`), never from the score, so that a threshold can be calibrated against them.

Nothing here does I/O. E-mail addresses are synthetic (``user<number>@<domain>``); no personal
names appear anywhere.
"""

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scoring.events import EventKind

BASE_URL = "https://www.example.com"
MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

PERSONA_WEIGHTS: dict[str, float] = {
    "champion": 10,
    "evaluator": 16,
    "researcher": 26,
    "student": 8,
    "job_seeker": 7,
    "lurker": 33,
}
SERVED_COUNTRIES = ("US", "CA", "GB", "IE", "DE", "FR", "NL", "SE", "DK", "NO", "FI", "ES", "IT", "AU", "NZ")
OTHER_COUNTRIES = ("BR", "IN", "MX", "PL", "ZA", "SG", "JP", "AR")
TARGET_INDUSTRIES = ("software", "saas", "fintech")
OTHER_INDUSTRIES = ("manufacturing", "retail", "education", "logistics", "media", "government")
FREE_MAIL = ("gmail.com", "outlook.com")
COMPANY_STEMS = ("acme", "globex", "initech", "northwind", "contoso", "fabrikam", "tailspin", "wingtip")

BLOG = (
    "event-driven-architecture-101",
    "kafka-consumer-lag-explained",
    "stream-processing-vs-batch",
    "choosing-a-message-broker",
    "schema-evolution-in-practice",
    "real-time-analytics-patterns",
    "data-pipeline-best-practices",
    "observability-for-data-teams",
    "zero-downtime-migrations",
    "the-cost-of-stale-data",
    "gdpr-for-data-engineers",
    "exactly-once-myths",
)
FEATURES = ("stream-processing", "connectors", "monitoring", "governance", "alerting", "security")
INTEGRATIONS = ("salesforce", "snowflake", "slack", "postgres", "s3", "bigquery")
DOCS = ("getting-started", "quickstart", "api/authentication", "api/events", "sdk/python", "deployment")
CASE_STUDIES = ("fintech-payments-platform", "retail-inventory-sync", "saas-usage-analytics", "logistics-tracking")
JOBS = ("senior-backend-engineer", "data-engineer", "account-executive", "product-designer", "support-engineer")
UTM_SOURCES: dict[str, tuple[str, str, str]] = {  # source -> (medium, campaign, referrer)
    "google": ("cpc", "search-streaming-platform", "https://www.google.com/"),
    "linkedin": ("paid_social", "abm-platform-teams", "https://www.linkedin.com/"),
    "newsletter": ("email", "monthly-newsletter", ""),
    "g2": ("review", "g2-category-page", "https://www.g2.com/"),
}
# asset type -> (asset id, title)
ASSETS: dict[str, tuple[str, str]] = {
    "whitepaper": ("wp-real-time-roi", "The ROI of real-time data"),
    "guide": ("guide-reference-architecture", "Reference architecture guide"),
    "api_docs": ("api-reference-pdf", "API reference"),
    "case_study": ("cs-payments-platform", "How a payments platform cut latency"),
    "datasheet": ("ds-platform-overview", "Platform datasheet"),
    "ebook": ("ebook-streaming-basics", "Streaming basics"),
}
# webinar type -> webinar id
WEBINARS = {"demo": "wb-live-demo", "product": "wb-product-tour", "educational": "wb-streaming-101"}
CAMPAIGNS = ("cmp-monthly-newsletter", "cmp-product-update", "cmp-webinar-invite", "cmp-case-study-digest")

# Hidden fit and intent by persona: the (alpha, beta) of a Beta distribution for each.
HIDDEN: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "champion": ((8, 2), (6, 2.5)),
    "evaluator": ((3, 4), (2, 4)),
    "researcher": ((3, 4), (1.5, 6)),
    "student": ((1, 9), (2, 5)),
    "job_seeker": ((1, 12), (1, 12)),
    "lurker": ((2, 5), (1.5, 5)),
}


@dataclass(frozen=True)
class Logistic:
    """``P = 1 / (1 + exp(-(bias + fit_weight * fit + intent_weight * intent)))``."""

    bias: float
    fit_weight: float
    intent_weight: float

    def probability(self, fit: float, intent: float) -> float:
        """The probability for a lead of this fit and intent."""
        return 1 / (1 + math.exp(-(self.bias + self.fit_weight * fit + self.intent_weight * intent)))


# What sales would make of a lead handed over: accept it, then qualify it (SQL), then win it.
OUTCOME_MODEL: dict[str, Logistic] = {
    "accepted": Logistic(-3.0, 4.0, 3.0),
    "sql": Logistic(-7.6, 4.0, 6.0),  # given accepted
    "won": Logistic(-3.0, 2.0, 3.0),  # given sql
}


@dataclass(frozen=True)
class TimedEvent:
    """One inbound event: its kind (hence topic), its lead and its full JSON payload."""

    kind: EventKind
    lead_id: str
    payload: dict[str, Any]

    @property
    def occurred_at(self) -> int:
        """When the event happened, in epoch milliseconds."""
        return int(self.payload["occurred_at"])


@dataclass(frozen=True)
class Journey:
    """One lead's events, sorted by ``occurred_at``; its hidden fit and intent; and the sales
    outcomes it would get once handed over (empty for a lead without a profile)."""

    lead_id: str
    persona: str
    events: list[TimedEvent]
    fit: float = 0.0
    intent: float = 0.0
    outcomes: list[TimedEvent] = field(default_factory=list)

    @property
    def converted(self) -> bool:
        """Whether sales would qualify this lead (an ``sql`` outcome)."""
        return any(e.payload["outcome"] == "sql" for e in self.outcomes)

    @property
    def won(self) -> bool:
        """Whether this lead would become a customer."""
        return any(e.payload["outcome"] == "won" for e in self.outcomes)


class _Builder:
    """Collects a journey's events on a moving simulated clock."""

    def __init__(self, rng: random.Random, lead_id: str, start_ms: int, fit: float = 0.5, intent: float = 0.5) -> None:
        self.rng = rng
        self.lead_id = lead_id
        self.t = start_ms
        self.fit = fit
        self.intent = intent
        self.raw: list[tuple[int, EventKind, dict[str, Any]]] = []

    def wait(self, low_ms: int, high_ms: int) -> None:
        """Move the clock on by a random time in [low_ms, high_ms]."""
        self.t += self.rng.randint(low_ms, high_ms)

    def wait_days(self, low: float, high: float) -> None:
        """Move the clock on by a random number of days."""
        self.wait(int(low * DAY_MS), int(high * DAY_MS))

    def add(self, kind: EventKind, **fields: Any) -> None:
        """An event at the current time; a few seconds pass."""
        self.raw.append((self.t, kind, fields))
        self.wait(2_000, 20_000)

    def visit(self, path: str, first: bool = False) -> None:
        """A page view; the first visit of a lead may carry UTM parameters."""
        fields: dict[str, Any] = {"url": BASE_URL + path}
        if first:
            fields["anonymous_id"] = f"anon-{self.rng.getrandbits(48):012x}"
            if self.rng.random() < 0.6:
                source = self.rng.choice(sorted(UTM_SOURCES))
                medium, campaign, referrer = UTM_SOURCES[source]
                fields.update(utm_source=source, utm_medium=medium, utm_campaign=campaign)
                if referrer:
                    fields["referrer"] = referrer
        self.add(EventKind.WEB_VISIT, **fields)

    def session(self, paths: list[str], first: bool = False) -> None:
        """Several page views, half a minute to a few minutes apart."""
        for i, path in enumerate(paths):
            self.visit(path, first=first and i == 0)
            self.wait(30_000, 4 * MINUTE_MS)

    def email(self, action: str, campaign: str | None = None, url: str | None = None) -> None:
        """An e-mail open or click (a click carries the clicked URL)."""
        fields: dict[str, Any] = {"action": action, "campaign_id": campaign or self.rng.choice(CAMPAIGNS)}
        if action == "click":
            fields["url"] = BASE_URL + (url or f"/blog/{self.rng.choice(BLOG)}")
        self.add(EventKind.EMAIL_EVENT, **fields)

    def download(self, asset_type: str) -> None:
        """A gated content download."""
        asset_id, title = ASSETS[asset_type]
        self.add(EventKind.CONTENT_DOWNLOAD, asset_id=asset_id, asset_type=asset_type, title=title)

    def webinar(self, webinar_type: str, status: str) -> None:
        """A webinar registration or attendance."""
        fields: dict[str, Any] = {"webinar_id": WEBINARS[webinar_type], "status": status, "webinar_type": webinar_type}
        if status == "attended":
            fields["minutes_attended"] = self.rng.randint(20, 55)
        self.add(EventKind.WEBINAR_EVENT, **fields)

    def profile(self, **fields: Any) -> None:
        """A profile update (a form fill or enrichment); ``None`` fields are left out."""
        self.add(EventKind.LEAD_PROFILE, **{k: v for k, v in fields.items() if v is not None})

    def events(self) -> list[TimedEvent]:
        """The events sorted by time, with ids deterministic from the lead and the position."""
        ordered = sorted(self.raw, key=lambda item: item[0])
        return [
            TimedEvent(
                kind,
                self.lead_id,
                {"event_id": f"{self.lead_id}-{i}", "lead_id": self.lead_id, "occurred_at": at, **fields},
            )
            for i, (at, kind, fields) in enumerate(ordered)
        ]


# -- small pickers --------------------------------------------------------------------------------


def _blog(rng: random.Random) -> str:
    return f"/blog/{rng.choice(BLOG)}"


def _product(rng: random.Random) -> str:
    choice = rng.random()
    if choice < 0.4:
        return "/product"
    if choice < 0.8:
        return f"/features/{rng.choice(FEATURES)}"
    return f"/integrations/{rng.choice(INTEGRATIONS)}"


def _email_address(rng: random.Random, domain: str) -> str:
    return f"user{rng.randrange(10_000, 1_000_000)}@{domain}"


def _company_domain(rng: random.Random) -> str:
    return f"{rng.choice(COMPANY_STEMS)}-{rng.randrange(1, 1000)}.example"


# -- personas --------------------------------------------------------------------------------------


def _champion_profile(b: _Builder) -> None:
    rng = b.rng
    seniority, title = rng.choice(
        [
            ("director", "Director of Engineering"),
            ("director", "Director of Data Platform"),
            ("director", "Director of IT"),
            ("vp", "VP Engineering"),
            ("vp", "VP of Operations"),
            ("c_level", "CTO"),
            ("c_level", "Chief Data Officer"),
        ]
    )
    b.profile(
        job_title=title,
        seniority=seniority,
        company_size=rng.randint(200, 4999) if rng.random() < 0.4 + 0.6 * b.fit else rng.randint(20, 199),
        industry=rng.choice(("software", "fintech")) if rng.random() < 0.4 + 0.6 * b.fit else "manufacturing",
        country=rng.choice(SERVED_COUNTRIES),
        email=_email_address(rng, _company_domain(rng)),
    )


def _champion(b: _Builder) -> None:
    """Escalating engagement over 1-3 weeks, then silence; one in seven stalls early."""
    rng = b.rng
    b.session([_blog(rng) for _ in range(rng.randint(1, 2))], first=True)
    b.wait_days(0.5, 3)
    b.session([_product(rng) for _ in range(rng.randint(2, 3))])
    if rng.random() < 0.4 * (1 - b.intent):  # stalls: read about the product, never came back
        return
    b.wait_days(1, 3)
    _champion_profile(b)
    b.download(rng.choice(("guide", "whitepaper")))
    b.wait_days(0.5, 3)
    b.session(["/pricing", f"/case-studies/{rng.choice(CASE_STUDIES)}", f"/docs/{rng.choice(DOCS)}"])
    if rng.random() < 0.6:
        b.wait(HOUR_MS, 2 * DAY_MS)
        b.email("click", "cmp-product-update", "/product")
    if rng.random() < 0.3 + 0.7 * b.intent:
        b.wait_days(1, 4)
        b.session(["/pricing", f"/docs/{rng.choice(DOCS)}", f"/docs/{rng.choice(DOCS)}"])
    if rng.random() < 0.2 + 0.8 * b.intent:
        b.download("api_docs")
    webinar_type = rng.choice(("demo", "product"))
    b.webinar(webinar_type, "registered")
    for _ in range(round(rng.random() * 3 * b.intent)):
        b.wait(6 * HOUR_MS, 2 * DAY_MS)
        b.session(["/pricing", _product(rng)])
    b.wait_days(1, 5)
    if rng.random() < 0.3 + 0.7 * b.intent:
        b.webinar(webinar_type, "attended")
    if rng.random() < 0.5 * b.intent:
        b.wait(HOUR_MS, DAY_MS)
        b.session(["/demo"])


def _evaluator(b: _Builder) -> None:
    """A medium fit comparing products over 1-4 weeks."""
    rng = b.rng
    b.session([_blog(rng), _product(rng)], first=True)
    b.wait_days(1, 5)
    seniority = rng.choice(("manager", "manager", "individual_contributor"))
    title = rng.choice(("Engineering Manager", "Platform Engineer", "Data Analyst", "Operations Manager"))
    b.profile(
        job_title=title,
        seniority=seniority,
        company_size=rng.randint(50, 500),
        industry=rng.choice(TARGET_INDUSTRIES if rng.random() < 0.3 + 0.6 * b.fit else OTHER_INDUSTRIES),
        country=rng.choice(SERVED_COUNTRIES if rng.random() < 0.6 + 0.4 * b.fit else OTHER_COUNTRIES),
        email=_email_address(rng, _company_domain(rng)),
    )
    b.download(rng.choice(("datasheet", "case_study", "ebook")))
    for _ in range(1 + (rng.random() < b.intent)):
        b.wait_days(1, 6)
        b.session(["/pricing", _product(rng), f"/case-studies/{rng.choice(CASE_STUDIES)}"])
    for _ in range(rng.randint(1, 3)):
        b.wait_days(0.5, 5)
        b.email("open")
        if rng.random() < 0.6:
            b.wait(MINUTE_MS, HOUR_MS)
            b.email("click", url=f"/case-studies/{rng.choice(CASE_STUDIES)}")
    if rng.random() < 0.2 + 0.6 * b.intent:
        b.wait_days(0.5, 4)
        b.download("whitepaper")
    if rng.random() < 0.6 * b.intent:
        b.wait_days(1, 5)
        b.webinar("educational", "registered")
        if rng.random() < 0.7:
            b.wait_days(2, 7)
            b.webinar("educational", "attended")
    if rng.random() < 0.6 * b.intent:
        b.wait_days(0.5, 3)
        b.session([f"/docs/{rng.choice(DOCS)}", _product(rng)])


def _random_profile(b: _Builder) -> None:
    rng = b.rng
    b.profile(
        job_title=rng.choice(("Software Engineer", "Marketing Manager", "Consultant", "Data Scientist", "Analyst")),
        seniority=rng.choice(("individual_contributor", "manager", "director", None)),
        company_size=rng.choice((rng.randint(1, 19), rng.randint(20, 199), rng.randint(200, 20_000), None)),
        industry=rng.choice(TARGET_INDUSTRIES + OTHER_INDUSTRIES),
        country=rng.choice(SERVED_COUNTRIES + OTHER_COUNTRIES),
        email=_email_address(rng, rng.choice((_company_domain(rng), *FREE_MAIL))),
    )


def _researcher(b: _Builder) -> None:
    """Blog posts and newsletter opens over weeks; rarely more."""
    rng = b.rng
    b.session([_blog(rng) for _ in range(rng.randint(1, 2))], first=True)
    if rng.random() < 0.6:
        b.wait(MINUTE_MS, HOUR_MS)
        _random_profile(b)  # signed up for the newsletter
    for _ in range(rng.randint(2, 9)):
        b.wait_days(4, 10)
        if rng.random() < 0.6:
            b.email("open", "cmp-monthly-newsletter")
            b.wait(MINUTE_MS, 2 * HOUR_MS)
        b.session([_blog(rng) for _ in range(rng.randint(1, 3))])
    if rng.random() < 0.3:
        b.wait_days(1, 7)
        b.download("ebook")
    if rng.random() < 0.8 * b.intent:  # curious about the product, no project yet
        b.wait_days(1, 7)
        b.session(["/pricing", _product(rng), _product(rng)])


def _student(b: _Builder) -> None:
    """Downloads everything, attends educational webinars; a free-mail student."""
    rng = b.rng
    b.session([_blog(rng), f"/docs/{rng.choice(DOCS)}"], first=True)
    b.wait(MINUTE_MS, DAY_MS)
    b.profile(
        job_title=rng.choice(("Student", "Computer Science Student", "PhD Student", "Graduate Student")),
        seniority=rng.choice(("intern", None)),
        industry="education",
        country=rng.choice(SERVED_COUNTRIES + OTHER_COUNTRIES),
        email=_email_address(rng, rng.choice(FREE_MAIL)),
    )
    for asset in rng.sample(sorted(ASSETS), rng.randint(3, 6)):
        b.wait_days(0.2, 4)
        b.download(asset)
        if rng.random() < 0.5:
            b.session([f"/docs/{rng.choice(DOCS)}" for _ in range(rng.randint(1, 4))])
    for _ in range(rng.randint(1, 2)):
        b.wait_days(1, 7)
        b.webinar("educational", "registered")
        b.wait_days(1, 5)
        b.webinar("educational", "attended")
    if rng.random() < 0.5:
        b.session(["/pricing", _product(rng)])


def _job_seeker(b: _Builder) -> None:
    """Careers and job pages and a few blog posts."""
    rng = b.rng
    b.session(["/careers", f"/jobs/{rng.choice(JOBS)}"], first=True)
    if rng.random() < 0.4:
        b.wait(MINUTE_MS, HOUR_MS)
        _random_profile(b)
    for _ in range(rng.randint(1, 3)):
        b.wait_days(0.5, 6)
        b.session([_blog(rng), f"/jobs/{rng.choice(JOBS)}"])
    if rng.random() < 0.3:
        b.session(["/product", "/careers"])


def _lurker(b: _Builder) -> None:
    """One to three anonymous page views."""
    rng = b.rng
    pages = ["/", _blog(rng), _product(rng), "/pricing", f"/case-studies/{rng.choice(CASE_STUDIES)}"]
    b.session(rng.sample(pages, rng.randint(1, 3)), first=True)


PERSONAS: dict[str, Callable[[_Builder], None]] = {
    "champion": _champion,
    "evaluator": _evaluator,
    "researcher": _researcher,
    "student": _student,
    "job_seeker": _job_seeker,
    "lurker": _lurker,
}


# -- public API ---------------------------------------------------------------------------------------


def journey(rng: random.Random, lead_id: str, start_ms: int) -> Journey:
    """A journey of one lead starting at ``start_ms``, its persona drawn by weight from ``rng``,
    its hidden fit and intent from the persona, and its sales outcomes from those."""
    names = list(PERSONA_WEIGHTS)
    persona = rng.choices(names, weights=[PERSONA_WEIGHTS[n] for n in names])[0]
    (fit_a, fit_b), (intent_a, intent_b) = HIDDEN[persona]
    fit, intent = rng.betavariate(fit_a, fit_b), rng.betavariate(intent_a, intent_b)
    builder = _Builder(rng, lead_id, start_ms, fit, intent)
    PERSONAS[persona](builder)
    events = builder.events()
    contactable = any(e.kind is EventKind.LEAD_PROFILE for e in events)
    outcomes = sales_outcomes(rng, lead_id, fit, intent, events[-1].occurred_at) if contactable else []
    return Journey(lead_id, persona, events, fit, intent, outcomes)


def sales_outcomes(rng: random.Random, lead_id: str, fit: float, intent: float, after_ms: int) -> list[TimedEvent]:
    """What sales would say about a lead handed over by ``after_ms``: rejected; or accepted then
    rejected after discovery; or accepted, sql, then won or lost. Drawn from :data:`OUTCOME_MODEL`."""
    outcomes: list[TimedEvent] = []
    t = after_ms

    def say(outcome: str, low_days: float, high_days: float, **extra: Any) -> None:
        nonlocal t
        t += rng.randint(int(low_days * DAY_MS), int(high_days * DAY_MS))
        payload = {"event_id": f"{lead_id}-o{len(outcomes)}", "lead_id": lead_id, "occurred_at": t, "outcome": outcome}
        outcomes.append(TimedEvent(EventKind.SALES_FEEDBACK, lead_id, {**payload, **extra}))

    if rng.random() >= OUTCOME_MODEL["accepted"].probability(fit, intent):
        say("rejected", 0.5, 3, reason="not a fit")
        return outcomes
    say("accepted", 0.5, 3)
    if rng.random() >= OUTCOME_MODEL["sql"].probability(fit, intent):
        say("rejected", 2, 10, reason="no project after discovery")
        return outcomes
    say("sql", 3, 14)
    say("won" if rng.random() < OUTCOME_MODEL["won"].probability(fit, intent) else "lost", 20, 90)
    return outcomes


def lead_id_for(number: int, salt: int = 0) -> str:
    """A lead id like ``lead-0f3a2c``; distinct for the first 2**24 numbers of one salt."""
    return f"lead-{(number * 0x9E3779B1 + salt) % (1 << 24):06x}"


def history(seed: int, leads: int, start_ms: int, spread_ms: int) -> list[Journey]:
    """``leads`` journeys starting at random times in ``[start_ms, start_ms + spread_ms)``."""
    rng = random.Random(seed)
    salt = rng.getrandbits(24)
    starts = sorted(start_ms + rng.randrange(max(spread_ms, 1)) for _ in range(leads))
    return [journey(rng, lead_id_for(i, salt), at) for i, at in enumerate(starts)]
