"""The rules file: parsed from TOML, validated with precise errors, compiled for fast matching.

A rules file has a ``[thresholds]`` table (``mql``, ``nurture``), ``[fit]`` and ``[engagement]``
limits, an optional ``[feedback]`` table (what a sales rejection or a lost deal does to
engagement), ``[[fit_rules]]`` on profile attributes and ``[[engagement_rules]]`` on events. Every
error names the file, the rule and the field, so that a broken file never starts a worker.
"""

import fnmatch
import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from scoring.errors import RulesError
from scoring.events import EVENT_FIELDS, SCORED_KINDS, EventKind
from scoring.timeutil import parse_duration_ms

FIT_ATTRIBUTES = ("seniority", "company_size", "industry", "country", "email_domain", "job_title")
DEFAULT_GROUP = "default"
_WORD_SPLIT: Final = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True, slots=True)
class Cap:
    """At most ``count`` events of a rule count per fixed window of ``window_ms``."""

    count: int
    window_ms: int


@dataclass(frozen=True, slots=True)
class FitRule:
    """Points for a profile attribute that matches a set, a range or a substring."""

    id: str
    attribute: str
    points: float
    one_of: frozenset[str] | None = None
    minimum: float | None = None
    maximum: float | None = None
    contains: tuple[str, ...] | None = None
    description: str = ""

    def matches(self, value: str | int | None) -> bool:
        """Whether the attribute value satisfies this rule."""
        if value is None:
            return False
        if self.one_of is not None:
            return str(value).lower() in self.one_of
        if self.contains is not None:
            words = f" {' '.join(_WORD_SPLIT.split(str(value).lower()))} "
            return any(f" {part} " in words for part in self.contains)
        if isinstance(value, str):
            return False
        low = self.minimum if self.minimum is not None else float("-inf")
        high = self.maximum if self.maximum is not None else float("inf")
        return low <= value <= high


@dataclass(frozen=True, slots=True)
class EngagementRule:
    """Points for an event of one kind whose fields satisfy every condition."""

    id: str
    kind: EventKind
    points: float
    group: str
    half_life_ms: int
    url: re.Pattern[str] | None = None
    when: tuple[tuple[str, frozenset[str]], ...] = ()
    cap: Cap | None = None
    description: str = ""

    def matches(self, attrs: Mapping[str, Any]) -> bool:
        """Whether an event's attributes satisfy every condition of this rule."""
        if self.url is not None:
            path = attrs.get("path")
            if path is None or self.url.match(path) is None:
                return False
        for name, allowed in self.when:
            value = attrs.get(name)
            if value is None or str(value).lower() not in allowed:
                return False
        return True


@dataclass(frozen=True, slots=True)
class Rules:
    """A validated, compiled rules file."""

    version: str
    mql_threshold: float
    nurture_threshold: float
    fit_min: float
    fit_max: float
    engagement_min: float
    engagement_max: float
    late_window_ms: int
    max_tracked_events: int
    max_future_skew_ms: int
    fit_rules: tuple[FitRule, ...]
    engagement_rules: tuple[EngagementRule, ...]
    # What sales feedback does to engagement: multiplied by this factor on rejection / lost deal.
    rejected_engagement_factor: float = 0.0
    lost_engagement_factor: float = 0.5
    # Dicts, not Mappings: compiled, a look-up in them is a direct dict look-up (the scorer makes
    # several per event), not a generic ``in`` or method call. Not changed once built.
    by_kind: dict[EventKind, tuple[EngagementRule, ...]] = field(default_factory=dict)
    by_id: dict[str, EngagementRule] = field(default_factory=dict)


class _Reader:
    """Reads typed fields from a TOML table and raises errors that say where."""

    def __init__(self, source: str, where: str, table: Mapping[str, Any]) -> None:
        self.source = source
        self.where = where
        self.table = table

    def fail(self, name: str, message: str) -> RulesError:
        return RulesError(f"{self.source}: {self.where}: field '{name}': {message}")

    def has(self, name: str) -> bool:
        return name in self.table

    def number(self, name: str, default: float | None = None) -> float:
        value = self.table.get(name, default)
        if value is None:
            raise self.fail(name, "is required")
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(name, f"expected a number, got {value!r}")
        return float(value)

    def integer(self, name: str, default: int | None = None, minimum: int = 1) -> int:
        value = self.table.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(name, f"expected an integer, got {value!r}")
        if value < minimum:
            raise self.fail(name, f"must be at least {minimum}, got {value}")
        return value

    def text(self, name: str, default: str | None = None) -> str:
        value = self.table.get(name, default)
        if value is None:
            raise self.fail(name, "is required")
        if not isinstance(value, str) or not value.strip():
            raise self.fail(name, f"expected a non-empty string, got {value!r}")
        return value

    def duration(self, name: str, default: str) -> int:
        try:
            return parse_duration_ms(self.text(name, default))
        except ValueError as exc:
            raise self.fail(name, str(exc)) from None

    def strings(self, name: str) -> tuple[str, ...]:
        value = self.table.get(name)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not value:
            raise self.fail(name, f"expected a string or a non-empty list of strings, got {value!r}")
        if not all(isinstance(item, str) and item for item in value):
            raise self.fail(name, f"expected only non-empty strings, got {value!r}")
        return tuple(value)

    def reject_unknown(self, allowed: set[str]) -> None:
        for name in self.table:
            if name not in allowed:
                raise self.fail(name, f"unknown field (allowed: {', '.join(sorted(allowed))})")


def _url_pattern(reader: _Reader, name: str) -> re.Pattern[str]:
    patterns = reader.strings(name)
    for pattern in patterns:
        if not pattern.startswith("/") and not pattern.startswith("*"):
            raise reader.fail(name, f"URL patterns match the path and start with '/': {pattern!r}")
    return re.compile("|".join(f"(?:{fnmatch.translate(p.lower())})" for p in patterns))


def _fit_rule(source: str, index: int, table: Any) -> FitRule:
    if not isinstance(table, dict):
        raise RulesError(f"{source}: fit_rules[{index}]: expected a table")
    rule_id = table.get("id")
    reader = _Reader(source, f"fit rule '{rule_id}' (fit_rules[{index}])", table)
    reader.text("id")
    reader.reject_unknown({"id", "attribute", "points", "in", "min", "max", "contains", "description"})
    attribute = reader.text("attribute")
    if attribute not in FIT_ATTRIBUTES:
        raise reader.fail("attribute", f"unknown attribute {attribute!r} (known: {', '.join(FIT_ATTRIBUTES)})")
    conditions = [name for name in ("in", "contains") if reader.has(name)]
    if reader.has("min") or reader.has("max"):
        conditions.append("min/max")
    if len(conditions) != 1:
        raise reader.fail("in", "give exactly one condition: 'in', 'contains', or 'min'/'max'")
    one_of = frozenset(s.lower() for s in reader.strings("in")) if reader.has("in") else None
    contains = None
    if reader.has("contains"):  # whole words: "cto" must not match "director"
        contains = tuple(" ".join(_WORD_SPLIT.split(s.lower())).strip() for s in reader.strings("contains"))
    minimum = reader.number("min") if reader.has("min") else None
    maximum = reader.number("max") if reader.has("max") else None
    if minimum is not None and maximum is not None and minimum > maximum:
        raise reader.fail("min", f"min {minimum} is greater than max {maximum}")
    if conditions == ["min/max"] and attribute != "company_size":
        raise reader.fail("min", "a range applies only to the numeric attribute 'company_size'")
    return FitRule(
        id=str(rule_id),
        attribute=attribute,
        points=reader.number("points"),
        one_of=one_of,
        minimum=minimum,
        maximum=maximum,
        contains=contains,
        description=str(table.get("description", "")),
    )


def _engagement_rule(source: str, index: int, table: Any, half_lives: Mapping[str, int]) -> EngagementRule:
    if not isinstance(table, dict):
        raise RulesError(f"{source}: engagement_rules[{index}]: expected a table")
    rule_id = table.get("id")
    reader = _Reader(source, f"engagement rule '{rule_id}' (engagement_rules[{index}])", table)
    reader.text("id")
    reader.reject_unknown({"id", "event", "points", "url", "when", "cap", "group", "description"})
    event = reader.text("event")
    kinds = {kind.value: kind for kind in SCORED_KINDS}
    if event not in kinds:
        raise reader.fail("event", f"unknown event {event!r} (known: {', '.join(kinds)})")
    kind = kinds[event]
    url = None
    if reader.has("url"):
        if "url" not in EVENT_FIELDS[kind]:
            raise reader.fail("url", f"{event} events have no url")
        url = _url_pattern(reader, "url")
    when: list[tuple[str, frozenset[str]]] = []
    conditions = table.get("when", {})
    if not isinstance(conditions, dict):
        raise reader.fail("when", "expected a table of field = value or [values]")
    when_reader = _Reader(source, reader.where, {f"when.{k}": v for k, v in conditions.items()})
    for name in conditions:
        if name not in EVENT_FIELDS[kind] or name == "url":
            raise reader.fail(
                f"when.{name}",
                f"{event} events have no such field (known: {', '.join(EVENT_FIELDS[kind])})",
            )
        values = when_reader.strings(f"when.{name}")
        when.append((name, frozenset(v.lower() for v in values)))
    cap = None
    if "cap" in table:
        if not isinstance(table["cap"], dict):
            raise reader.fail("cap", 'expected a table {count = N, window = "7d"}')
        cap_reader = _Reader(source, f"{reader.where} cap", table["cap"])
        cap_reader.reject_unknown({"count", "window"})
        cap = Cap(cap_reader.integer("count"), cap_reader.duration("window", ""))
    group = reader.text("group", DEFAULT_GROUP)
    if group not in half_lives:
        raise reader.fail("group", f"no half-life for group {group!r} in [engagement.half_lives]")
    return EngagementRule(
        id=str(rule_id),
        kind=kind,
        points=reader.number("points"),
        group=group,
        half_life_ms=half_lives[group],
        url=url,
        when=tuple(when),
        cap=cap,
        description=str(table.get("description", "")),
    )


def _table(source: str, document: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = document.get(name, {})
    if not isinstance(value, dict):
        raise RulesError(f"{source}: [{name}]: expected a table")
    return value


def _factor(reader: _Reader, name: str, default: float) -> float:
    value = reader.number(name, default)
    if not 0 <= value <= 1:
        raise reader.fail(name, f"must be between 0 (reset) and 1 (keep), got {value:g}")
    return value


def parse_rules(text: str, source: str = "<rules>") -> Rules:
    """Parse and validate a TOML rules document; ``source`` names it in error messages."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"{source}: not valid TOML: {exc}") from None
    known = {"name", "version", "thresholds", "fit", "engagement", "feedback", "fit_rules", "engagement_rules"}
    for name in document:
        if name not in known:
            raise RulesError(f"{source}: unknown top-level key {name!r} (known: {', '.join(sorted(known))})")

    thresholds = _Reader(source, "[thresholds]", _table(source, document, "thresholds"))
    thresholds.reject_unknown({"mql", "nurture"})
    mql = thresholds.number("mql", 75)
    nurture = thresholds.number("nurture", 40)
    if not 0 < nurture < mql:
        raise thresholds.fail("nurture", f"must be above 0 and below mql ({mql}), got {nurture}")

    fit = _Reader(source, "[fit]", _table(source, document, "fit"))
    fit.reject_unknown({"min", "max"})
    fit_min, fit_max = fit.number("min", -30), fit.number("max", 35)
    if fit_max >= nurture:
        raise fit.fail(
            "max",
            f"must stay below the nurture threshold ({nurture}), or fit alone would keep "
            f"an inactive lead qualified forever; got {fit_max}",
        )

    engagement = _Reader(source, "[engagement]", _table(source, document, "engagement"))
    engagement.reject_unknown(
        {"min", "max", "half_life", "half_lives", "late_window", "max_tracked_events", "max_future_skew"}
    )
    half_lives = {DEFAULT_GROUP: engagement.duration("half_life", "30d")}
    groups = engagement.table.get("half_lives", {})
    if not isinstance(groups, dict):
        raise engagement.fail("half_lives", "expected a table of group = duration")
    group_reader = _Reader(source, "[engagement.half_lives]", groups)
    for group in groups:
        half_lives[group] = group_reader.duration(group, "")

    fit_rules = document.get("fit_rules", [])
    engagement_rules = document.get("engagement_rules", [])
    if not isinstance(fit_rules, list) or not isinstance(engagement_rules, list):
        raise RulesError(f"{source}: fit_rules and engagement_rules must be arrays of tables")
    compiled_fit = tuple(_fit_rule(source, i, t) for i, t in enumerate(fit_rules))
    compiled_engagement = tuple(_engagement_rule(source, i, t, half_lives) for i, t in enumerate(engagement_rules))
    seen: set[str] = set()
    for rule_id in [r.id for r in compiled_fit] + [r.id for r in compiled_engagement]:
        if rule_id in seen:
            raise RulesError(f"{source}: rule id {rule_id!r} is used twice")
        seen.add(rule_id)

    engagement_max = engagement.number("max", 65)
    if fit_max + engagement_max < mql:
        raise engagement.fail(
            "max", f"fit max ({fit_max}) plus engagement max ({engagement_max}) cannot reach mql ({mql})"
        )
    feedback = _Reader(source, "[feedback]", _table(source, document, "feedback"))
    feedback.reject_unknown({"rejected_engagement_factor", "lost_engagement_factor"})
    rejected_factor = _factor(feedback, "rejected_engagement_factor", 0.0)
    lost_factor = _factor(feedback, "lost_engagement_factor", 0.5)

    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    name = document.get("version") or document.get("name") or "rules"
    by_kind = {kind: tuple(r for r in compiled_engagement if r.kind is kind) for kind in SCORED_KINDS}
    return Rules(
        version=f"{name}+{digest}",
        mql_threshold=mql,
        nurture_threshold=nurture,
        fit_min=fit_min,
        fit_max=fit_max,
        engagement_min=engagement.number("min", 0),
        engagement_max=engagement_max,
        late_window_ms=engagement.duration("late_window", "365d"),
        max_tracked_events=engagement.integer("max_tracked_events", 1000),
        max_future_skew_ms=engagement.duration("max_future_skew", "1h"),
        fit_rules=compiled_fit,
        engagement_rules=compiled_engagement,
        rejected_engagement_factor=rejected_factor,
        lost_engagement_factor=lost_factor,
        by_kind=by_kind,
        by_id={r.id: r for r in compiled_engagement},
    )
