"""Funnel figures from lead states: leads per stage, conversion MQL -> SAL -> SQL -> won, by the
rules version of the MQL crossing and by first-touch source, and the median time MQL -> SQL.

Each lead counts once, with the progress of its latest MQL crossing (a new crossing starts its
stage timestamps afresh). Rates are ``None`` when their denominator is zero.
"""

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from scoring.sources import normalise_source
from scoring.state import LeadState, Stage

DAY_MS = 86_400_000
UNKNOWN_VERSION = "unknown"  # a crossing recorded before rules versions were kept


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


@dataclass(slots=True)
class Cohort:
    """A group of leads: how many there are and how far their latest MQL crossing went."""

    leads: int = 0
    mql: int = 0
    sal: int = 0
    sql: int = 0
    won: int = 0
    mql_to_sql_ms: list[int] = field(default_factory=list)

    def add(self, state: LeadState) -> None:
        """Count one lead."""
        self.leads += 1
        if state.mql_at is None:
            return
        self.mql += 1
        self.sal += state.sal_at is not None
        self.won += state.won_at is not None
        if state.sql_at is not None:
            self.sql += 1
            self.mql_to_sql_ms.append(state.sql_at - state.mql_at)

    @property
    def mql_to_sal(self) -> float | None:
        """Share of MQLs that sales accepted."""
        return _rate(self.sal, self.mql)

    @property
    def mql_to_sql(self) -> float | None:
        """Share of MQLs that sales qualified."""
        return _rate(self.sql, self.mql)

    @property
    def sql_to_won(self) -> float | None:
        """Share of SQLs that became customers."""
        return _rate(self.won, self.sql)

    @property
    def median_mql_to_sql_ms(self) -> float | None:
        """The median time from MQL crossing to SQL, in milliseconds."""
        return statistics.median(self.mql_to_sql_ms) if self.mql_to_sql_ms else None

    def to_payload(self) -> dict[str, Any]:
        """The cohort as JSON-ready data."""
        median = self.median_mql_to_sql_ms

        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 4)

        return {
            "leads": self.leads,
            "mql": self.mql,
            "sal": self.sal,
            "sql": self.sql,
            "won": self.won,
            "mql_to_sal": rounded(self.mql_to_sal),
            "mql_to_sql": rounded(self.mql_to_sql),
            "sql_to_won": rounded(self.sql_to_won),
            "median_mql_to_sql_ms": median,
            "median_mql_to_sql_days": rounded(None if median is None else median / DAY_MS),
        }


@dataclass(slots=True)
class Funnel:
    """The funnel of a set of leads."""

    stages: dict[str, int] = field(default_factory=lambda: {stage.value: 0 for stage in Stage})
    overall: Cohort = field(default_factory=Cohort)
    by_rules_version: dict[str, Cohort] = field(default_factory=dict)
    by_source: dict[str, Cohort] = field(default_factory=dict)

    def to_payload(self) -> dict[str, Any]:
        """The funnel as JSON-ready data, groups sorted by name."""
        return {
            "leads": self.overall.leads,
            "stages": dict(self.stages),
            "overall": self.overall.to_payload(),
            "by_rules_version": {k: v.to_payload() for k, v in sorted(self.by_rules_version.items())},
            "by_source": {k: v.to_payload() for k, v in sorted(self.by_source.items())},
        }


def funnel(states: Iterable[LeadState]) -> Funnel:
    """The funnel of ``states``: leads per stage, and conversion overall, by the rules version
    of each lead's MQL crossing (leads that crossed) and by normalised first-touch source."""
    result = Funnel()
    for state in states:
        result.stages[state.stage.value] += 1
        result.overall.add(state)
        result.by_source.setdefault(normalise_source(state.source), Cohort()).add(state)
        if state.mql_at is not None:
            version = state.mql_rules_version or UNKNOWN_VERSION
            result.by_rules_version.setdefault(version, Cohort()).add(state)
    return result
