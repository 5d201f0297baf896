"""A lead's state as kept in the lead table, and its compact JSON encoding."""

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

import orjson

# Format 2 adds the sales stages, their timestamps, the first-touch source, the rules version of
# the MQL crossing and the engagement resets. Format 1 states decode with those left empty.
# Format 3 keeps the capped events per rule ("k"), not per "rule@window" ("w"): far fewer objects.
STATE_FORMAT: Final = 3
_READABLE_FORMATS: Final = (1, 2, 3)


class Stage(StrEnum):
    """Lifecycle stages, in funnel order (see ``scoring/stages.py`` for the moves between them).

    ``lead`` and ``nurture`` belong to marketing and are not qualified; ``mql`` is handed to
    sales and decays back to nurture; ``sal`` and ``sql`` belong to sales, and only sales
    feedback moves them; ``customer`` is terminal.
    """

    LEAD = "lead"
    MQL = "mql"
    NURTURE = "nurture"
    SAL = "sal"
    SQL = "sql"
    CUSTOMER = "customer"


_STAGES: Final = {stage.value: stage for stage in Stage}  # a dict lookup is far cheaper than Stage(value)
_STAGE_VALUES: Final = {stage: stage.value for stage in Stage}  # and than ``stage.value``, a property call


@dataclass(slots=True, init=False)
class LeadState:
    """Everything the scorer knows about one lead.

    Engagement is kept per rule as its decayed value at ``ref_ms``; the score at any instant is
    computed from it, never rewritten by a batch job.

    The constructor is written out (``init=False``): compiled, it is native code, while the one
    ``dataclass`` generates stays interpreted Python (7% of the scoring core's time, measured).
    """

    lead_id: str
    profile: dict[str, str | int] = field(default_factory=dict)
    profile_at: dict[str, int] = field(default_factory=dict)
    ref_ms: int = 0
    values: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    # Capped rule id -> occurred_at of its counted events in the cap windows still open, sorted
    # (the rule's fixed windows are ``occurred_at // window``; format 2 kept one list per window).
    cap_counted: dict[str, list[int]] = field(default_factory=dict)
    # event id -> occurred_at, for the duplicates check within the late window.
    seen: dict[str, int] = field(default_factory=dict)
    seen_floor: int = -1
    first_event_at: int | None = None
    last_event_at: int | None = None
    stage: Stage = Stage.LEAD
    crossings: int = 0
    mql_at: int | None = None
    due_at: int | None = None
    trigger_event_id: str | None = None
    # The input partition of the lead's events, kept so the due index can be rebuilt after recovery.
    partition: int = -1
    # When sales moved the lead of the current (latest) MQL crossing on; reset by a new crossing.
    sal_at: int | None = None
    sql_at: int | None = None
    won_at: int | None = None
    # The rules version under which the current (latest) MQL crossing happened.
    mql_rules_version: str | None = None
    # First touch: utm_source, else the referrer's domain, else "" (direct), of the earliest web
    # visit by occurred_at; None before any web visit.
    source: str | None = None
    source_at: int | None = None
    # Engagement resets by sales feedback, (occurred_at, factor), kept within the late window so
    # that a late event older than a reset is discounted like the events counted before it.
    resets: list[tuple[int, float]] = field(default_factory=list)
    # The scorer's memo of the fit: (rules, fit). Not encoded, not compared. The scorer clears it
    # whenever it changes ``profile`` (the only writer of a state's profile), and fit is computed
    # again for other rules.
    fit_memo: tuple[Any, float] | None = field(default=None, compare=False, repr=False)

    # The dataclass's fields, in their order, as the constructor it would generate takes them.
    def __init__(
        self,
        lead_id: str,
        profile: dict[str, str | int] | None = None,
        profile_at: dict[str, int] | None = None,
        ref_ms: int = 0,
        values: dict[str, float] | None = None,
        counts: dict[str, int] | None = None,
        cap_counted: dict[str, list[int]] | None = None,
        seen: dict[str, int] | None = None,
        seen_floor: int = -1,
        first_event_at: int | None = None,
        last_event_at: int | None = None,
        stage: Stage = Stage.LEAD,
        crossings: int = 0,
        mql_at: int | None = None,
        due_at: int | None = None,
        trigger_event_id: str | None = None,
        partition: int = -1,
        sal_at: int | None = None,
        sql_at: int | None = None,
        won_at: int | None = None,
        mql_rules_version: str | None = None,
        source: str | None = None,
        source_at: int | None = None,
        resets: list[tuple[int, float]] | None = None,
        fit_memo: tuple[Any, float] | None = None,
    ) -> None:
        self.lead_id = lead_id
        self.profile = {} if profile is None else profile
        self.profile_at = {} if profile_at is None else profile_at
        self.ref_ms = ref_ms
        self.values = {} if values is None else values
        self.counts = {} if counts is None else counts
        self.cap_counted = {} if cap_counted is None else cap_counted
        self.seen = {} if seen is None else seen
        self.seen_floor = seen_floor
        self.first_event_at = first_event_at
        self.last_event_at = last_event_at
        self.stage = stage
        self.crossings = crossings
        self.mql_at = mql_at
        self.due_at = due_at
        self.trigger_event_id = trigger_event_id
        self.partition = partition
        self.sal_at = sal_at
        self.sql_at = sql_at
        self.won_at = won_at
        self.mql_rules_version = mql_rules_version
        self.source = source
        self.source_at = source_at
        self.resets = [] if resets is None else resets
        self.fit_memo = fit_memo


def encode_state(state: LeadState) -> bytes:
    """Encode a state as compact JSON for the lead table."""
    return orjson.dumps(
        {
            "f": STATE_FORMAT,
            "id": state.lead_id,
            "p": state.profile,
            "pa": state.profile_at,
            "r": state.ref_ms,
            "v": state.values,
            "c": state.counts,
            "k": state.cap_counted,
            "s": state.seen,
            "sf": state.seen_floor,
            "fe": state.first_event_at,
            "le": state.last_event_at,
            "st": _STAGE_VALUES[state.stage],
            "x": state.crossings,
            "m": state.mql_at,
            "d": state.due_at,
            "t": state.trigger_event_id,
            "pt": state.partition,
            "sa": state.sal_at,
            "sq": state.sql_at,
            "wo": state.won_at,
            "mv": state.mql_rules_version,
            "so": state.source,
            "soa": state.source_at,
            "rs": state.resets,
        }
    )


def decode_state(data: bytes) -> LeadState:
    """Decode a state written by :func:`encode_state` (this format or the previous one)."""
    raw: dict[str, Any] = orjson.loads(data)
    if raw.get("f") not in _READABLE_FORMATS:
        raise ValueError(f"unknown lead state format {raw.get('f')!r}")
    return LeadState(
        lead_id=raw["id"],
        profile=raw["p"],
        profile_at=raw["pa"],
        ref_ms=raw["r"],
        values=raw["v"],
        counts=raw["c"],
        cap_counted=raw["k"] if "k" in raw else _counted_by_rule(raw["w"]),
        seen=raw["s"],
        seen_floor=raw["sf"],
        first_event_at=raw["fe"],
        last_event_at=raw["le"],
        stage=_STAGES[raw["st"]],
        crossings=raw["x"],
        mql_at=raw["m"],
        due_at=raw["d"],
        trigger_event_id=raw["t"],
        partition=raw["pt"],
        sal_at=raw.get("sa"),
        sql_at=raw.get("sq"),
        won_at=raw.get("wo"),
        mql_rules_version=raw.get("mv"),
        source=raw.get("so"),
        source_at=raw.get("soa"),
        resets=[(int(at), float(factor)) for at, factor in raw.get("rs", [])],
    )


def _counted_by_rule(windows: dict[str, list[int]]) -> dict[str, list[int]]:
    """Format 2's "rule@window" -> counted lists, merged per rule and sorted."""
    by_rule: dict[str, list[int]] = {}
    for window, counted in windows.items():
        by_rule.setdefault(window.rpartition("@")[0] or window, []).extend(counted)
    for counted in by_rule.values():
        counted.sort()
    return by_rule


def decode_stage(data: bytes) -> tuple[str, int, Stage, int | None]:
    """A state's lead id, partition, stage and due time, without building the rest of it (the due
    index's rebuild reads every state of the table)."""
    raw: dict[str, Any] = orjson.loads(data)
    if raw.get("f") not in _READABLE_FORMATS:
        raise ValueError(f"unknown lead state format {raw.get('f')!r}")
    due: int | None = raw["d"]
    return raw["id"], raw["pt"], _STAGES[raw["st"]], due
