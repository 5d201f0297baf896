"""Calibration: the arithmetic on a hand-made example, "crossed T" equals "peak >= T" against the
engine itself, and calibrate recovers the generator's known good threshold band."""

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from scoring.calibration import Outcomes, calibrate, mql_at, outcomes_from, threshold_range
from scoring.engine import InputRecord, Scorer
from scoring.events import EventKind, decode_event
from scoring.replay import replay
from scoring.rules import parse_rules
from streams.cli import main
from streams.history import event_line, parse_record
from streams.synthetic import Journey, history
from tests.conftest import DEFAULT_RULES
from tests.journeys import DAY_MS, T0

DEFAULT_TEXT = DEFAULT_RULES.read_text()
LEADS = 5_000
SEED = 11
SPREAD_MS = 90 * DAY_MS
THRESHOLDS = list(range(40, 101, 10))


# -- the arithmetic ---------------------------------------------------------------------------------------

PEAKS = {"a": 95.0, "b": 85.0, "c": 75.0, "d": 65.0, "e": 55.0, "f": 45.0, "g": 45.0, "h": 45.0}
OUTCOMES = Outcomes(converted=frozenset({"a", "c", "e", "stranger"}), won=frozenset({"a", "e", "stranger"}))


def test_each_threshold_by_hand() -> None:
    result = calibrate(PEAKS, OUTCOMES, [40, 50, 60, 70, 80, 90, 100], (0.2, 0.4))
    rows = [(r.threshold, r.mqls, r.sqls, r.won, r.conversion, r.won_share, r.in_band) for r in result.rows]
    assert rows == [
        (40, 8, 3, 2, 3 / 8, 1.0, True),
        (50, 5, 3, 2, 3 / 5, 1.0, False),
        (60, 4, 2, 1, 2 / 4, 0.5, False),
        (70, 3, 2, 1, 2 / 3, 0.5, False),
        (80, 2, 1, 1, 1 / 2, 0.5, False),
        (90, 1, 1, 1, 1.0, 0.5, False),
        (100, 0, 0, 0, None, 0.0, False),
    ]
    assert (result.leads, result.converted, result.won) == (8, 3, 2)  # the stranger has no history
    assert result.recommended is not None
    assert result.recommended.threshold == 40
    assert result.closest is None


def test_a_peak_equal_to_the_threshold_is_an_mql() -> None:
    (row,) = calibrate({"a": 75.0, "b": 74.99}, Outcomes(frozenset({"a"}), frozenset()), [75]).rows
    assert (row.mqls, row.sqls, row.conversion, row.won_share) == (1, 1, 1.0, None)


def test_the_recommendation_is_the_in_band_threshold_with_the_most_volume() -> None:
    result = calibrate(PEAKS, OUTCOMES, [40, 50, 60, 70, 80, 90], (0.45, 0.55))
    assert [r.threshold for r in result.rows if r.in_band] == [60, 80]
    assert result.recommended is not None
    assert result.recommended.threshold == 60


def test_without_a_threshold_in_the_band_the_nearest_is_named() -> None:
    result = calibrate(PEAKS, OUTCOMES, [50, 60, 70], (0.1, 0.2))
    assert result.recommended is None
    assert result.closest is not None
    assert result.closest.threshold == 60  # 50% is nearer 20% than 60% and 67%


@pytest.mark.parametrize("band", [(0.5, 0.2), (-0.1, 0.2), (0.2, 1.5)])
def test_the_band_is_validated(band: tuple[float, float]) -> None:
    with pytest.raises(ValueError, match="target band"):
        calibrate(PEAKS, OUTCOMES, [50], band)


def test_threshold_range() -> None:
    assert threshold_range(40, 120, 5)[:3] == [40, 45, 50]
    assert threshold_range(40, 120, 5)[-1] == 120
    assert len(threshold_range(40, 120, 5)) == 17
    assert threshold_range(0.1, 0.3, 0.1) == [0.1, 0.2, 0.3]
    with pytest.raises(ValueError, match="positive step"):
        threshold_range(40, 30, 5)


def test_mql_at_is_the_first_ascent_reaching_the_threshold() -> None:
    ascents = [(10, 30.0), (20, 74.99), (30, 75.0), (40, 90.0)]
    assert [mql_at(ascents, t) for t in (20, 75, 80, 95)] == [10, 30, 40, None]


def test_outcomes_count_sql_won_and_lost_as_converted() -> None:
    def fb(lead: str, eid: str, outcome: str) -> InputRecord:
        return parse_record(
            event_line_dict({"event_id": eid, "lead_id": lead, "occurred_at": 1, "outcome": outcome}), "t", 0
        )

    records = [fb("a", "1", "accepted"), fb("a", "2", "sql"), fb("b", "3", "won"), fb("c", "4", "lost")]
    records += [fb("d", "5", "rejected")]
    events = [decode_event(EventKind.SALES_FEEDBACK, r.key, r.value) for r in records]
    assert outcomes_from(events) == Outcomes(frozenset({"a", "b", "c"}), frozenset({"b"}))


def event_line_dict(payload: dict[str, object]) -> bytes:
    import orjson

    return orjson.dumps({"type": "sales_feedback", **payload})


# -- against the engine, on a synthetic history with ground truth --------------------------------------------


@dataclass
class BruteForce:
    """The synthetic history, and per threshold the leads the engine itself makes MQLs (with the
    time of their first crossing), from rules whose only change is that threshold."""

    journeys: list[Journey]
    records: list[InputRecord]
    first_crossing: dict[int, dict[str, int]]

    def conversion(self, threshold: int) -> float:
        """MQL -> SQL at ``threshold`` from the generator's ground truth."""
        converted = {j.lead_id for j in self.journeys if j.converted}
        mqls = self.first_crossing[threshold]
        return len(converted & mqls.keys()) / len(mqls)


def rules_with_threshold(threshold: int) -> Scorer:
    nurture = min(40, threshold - 3)  # the nurture threshold must stay below the MQL threshold
    text = DEFAULT_TEXT.replace("mql = 75", f"mql = {threshold}").replace("nurture = 40", f"nurture = {nurture}")
    return Scorer(parse_rules(text, f"mql-{threshold}.toml"))


@pytest.fixture(scope="module")
def brute_force() -> BruteForce:
    journeys = history(SEED, LEADS, T0, SPREAD_MS)
    events = sorted((e for j in journeys for e in j.events), key=lambda e: e.occurred_at)
    records = [parse_record(event_line(e), "synthetic", i) for i, e in enumerate(events)]
    first: dict[int, dict[str, int]] = {}
    for threshold in THRESHOLDS:
        result = rules_with_threshold(threshold).process_batch(records, {}, 10**14 - 1)
        crossings: dict[str, int] = {}
        for mql in result.mql:
            crossings.setdefault(mql.lead_id, mql.crossed_at)
        first[threshold] = crossings
    return BruteForce(journeys, records, first)


def test_crossing_a_threshold_is_exactly_reaching_it_at_the_peak(
    brute_force: BruteForce, default_rules: object
) -> None:
    """Rescoring with each threshold and taking the peak once give the same MQLs at the same times."""
    result = replay(Scorer(parse_rules(DEFAULT_TEXT)), brute_force.records, track_peaks=True)
    peaks = {lead: result.peak(lead) for lead in result.states}
    truth = Outcomes(frozenset(j.lead_id for j in brute_force.journeys if j.converted), frozenset())
    rows = calibrate(peaks, truth, THRESHOLDS).rows
    for threshold, row in zip(THRESHOLDS, rows, strict=True):
        by_peak = {lead: mql_at(result.ascents.get(lead, []), threshold) for lead in result.states}
        by_peak = {lead: at for lead, at in by_peak.items() if at is not None}
        assert by_peak == brute_force.first_crossing[threshold], threshold
        assert row.mqls == len(brute_force.first_crossing[threshold])
        assert row.conversion == brute_force.conversion(threshold)
    assert len(brute_force.first_crossing[40]) > 2 * len(brute_force.first_crossing[90]) > 0


def test_calibrate_recovers_the_generators_known_good_threshold_band(brute_force: BruteForce, tmp_path: Path) -> None:
    band = {t for t in THRESHOLDS if 0.2 <= brute_force.conversion(t) <= 0.4}
    assert band, {t: brute_force.conversion(t) for t in THRESHOLDS}
    assert min(THRESHOLDS) not in band  # the generator's good band is inside the range tried
    best = min(band)  # the most volume: volume never grows with the threshold

    runner = CliRunner()
    events, outcomes, report = tmp_path / "events.jsonl", tmp_path / "outcomes.jsonl", tmp_path / "report"
    made = runner.invoke(
        main,
        [
            "synth",
            "--leads",
            str(LEADS),
            "--seed",
            str(SEED),
            "--start",
            str(T0),
            "--spread-days",
            "90",
            "--events",
            str(events),
            "--outcomes",
            str(outcomes),
        ],
    )
    assert made.exit_code == 0, made.output
    run = runner.invoke(
        main,
        [
            "calibrate",
            "--events",
            str(events),
            "--outcomes",
            str(outcomes),
            "--thresholds",
            "40:100:10",
            "--target-band",
            "0.2,0.4",
            "--report",
            str(report),
            "--quiet",
        ],
    )
    assert run.exit_code == 0, run.output
    recommended = re.search(r"^recommended threshold (\d+):", run.output, re.MULTILINE)
    assert recommended is not None, run.output
    assert int(recommended.group(1)) in band
    assert int(recommended.group(1)) == best
    markdown = (report / "calibration.md").read_text()
    assert f"**Recommended: threshold {best}:" in markdown
    assert "![calibration chart](calibration.png)" in markdown
    assert (report / "calibration.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
