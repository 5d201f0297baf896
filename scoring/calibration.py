"""Threshold calibration against sales outcomes: volume and conversion at each MQL threshold.

Each lead's history is scored once, keeping its peak score: under a threshold ``T`` the lead
becomes an MQL if and only if its peak reaches ``T``. That is exact, not an approximation of
rescoring: a crossing is decided after each event on the score as reported, and the first event
after which the score reaches ``T`` is a crossing whatever the hysteresis and decay did before
(a lead that is not an MQL crosses; one that is already an MQL crossed earlier). Decay and the
nurture threshold change how many times a lead crosses, never whether it crosses at least once.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from scoring.events import Event, EventKind
from scoring.replay import Ascent

DEFAULT_BAND = (0.2, 0.4)


@dataclass(frozen=True, slots=True)
class Outcomes:
    """Which leads sales qualified (an ``sql``, or a deal ``won`` or ``lost``) and which it won."""

    converted: frozenset[str]
    won: frozenset[str]


def outcomes_from(events: Iterable[Event]) -> Outcomes:
    """The outcomes of decoded sales feedback events (other kinds are ignored)."""
    converted: set[str] = set()
    won: set[str] = set()
    for event in events:
        if event.kind is not EventKind.SALES_FEEDBACK:
            continue
        outcome = event.attrs["outcome"]
        if outcome in ("sql", "won", "lost"):
            converted.add(event.lead_id)
        if outcome == "won":
            won.add(event.lead_id)
    return Outcomes(frozenset(converted), frozenset(won))


@dataclass(frozen=True, slots=True)
class ThresholdRow:
    """What one MQL threshold would have given on the history."""

    threshold: float
    mqls: int
    sqls: int
    won: int
    conversion: float | None  # MQL -> SQL; None without MQLs
    won_share: float | None  # share of all won deals whose lead would have been an MQL
    in_band: bool


@dataclass(frozen=True, slots=True)
class Calibration:
    """The rows for every threshold tried, and the recommendation."""

    rows: tuple[ThresholdRow, ...]
    band: tuple[float, float]
    leads: int
    converted: int
    won: int
    recommended: ThresholdRow | None  # in the band with the most MQLs; None if no row is
    closest: ThresholdRow | None  # the row nearest the band when none is in it


def threshold_range(start: float, stop: float, step: float) -> list[float]:
    """``start``, ``start + step``, ... up to ``stop`` inclusive."""
    if step <= 0 or stop < start:
        raise ValueError("thresholds: need start <= stop and a positive step")
    count = int((stop - start) / step + 1e-9) + 1
    return [round(start + i * step, 6) for i in range(count)]


def mql_at(ascents: Sequence[Ascent], threshold: float) -> int | None:
    """When a lead with these score ascents first becomes an MQL at ``threshold``, if ever."""
    for at, score in ascents:
        if score >= threshold:
            return at
    return None


def calibrate(
    peaks: Mapping[str, float],
    outcomes: Outcomes,
    thresholds: Sequence[float],
    band: tuple[float, float] = DEFAULT_BAND,
) -> Calibration:
    """Volume, MQL->SQL conversion and won deals captured at each threshold, from each lead's
    peak score; recommends the threshold in ``band`` (conversion, inclusive) with the most MQLs."""
    low, high = band
    if not 0 <= low <= high <= 1:
        raise ValueError(f"target band must be 0 <= low <= high <= 1, got {low:g},{high:g}")
    won_total = len(outcomes.won & peaks.keys())  # a won lead absent from the history cannot be captured
    rows = []
    for threshold in thresholds:
        leads = [lead for lead, peak in peaks.items() if peak >= threshold]
        sqls = sum(1 for lead in leads if lead in outcomes.converted)
        won = sum(1 for lead in leads if lead in outcomes.won)
        conversion = sqls / len(leads) if leads else None
        rows.append(
            ThresholdRow(
                threshold=threshold,
                mqls=len(leads),
                sqls=sqls,
                won=won,
                conversion=conversion,
                won_share=won / won_total if won_total else None,
                in_band=conversion is not None and low <= conversion <= high,
            )
        )
    in_band = [row for row in rows if row.in_band]
    recommended = max(in_band, key=lambda row: (row.mqls, -row.threshold)) if in_band else None
    closest = None
    if recommended is None:
        scored = [row for row in rows if row.conversion is not None]
        if scored:
            closest = min(scored, key=lambda row: (_distance(row.conversion or 0.0, band), -row.mqls))
    return Calibration(
        rows=tuple(rows),
        band=band,
        leads=len(peaks),
        converted=len(outcomes.converted & peaks.keys()),
        won=won_total,
        recommended=recommended,
        closest=closest,
    )


def _distance(value: float, band: tuple[float, float]) -> float:
    low, high = band
    return low - value if value < low else max(value - high, 0.0)
