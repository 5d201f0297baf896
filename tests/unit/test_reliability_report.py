"""The reliability suite's results file and table (tests/reliability/report.py)."""

from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.reliability.harness import Figures, record_figures
from tests.reliability.report import load, main, record, table


def test_record_merges_one_entry_per_scenario(tmp_path: Path) -> None:
    path = tmp_path / "results" / "last-run.json"
    figures: dict[str, Any] = {
        "faults": 10,
        "sent": 500,
        "lost": 0,
        "duplicated_ids": 0,
        "redeliveries": 3,
        "dead_lettered": 2,
    }
    record("kill -9", **figures, path=path)
    record("broker bounce", **{**figures, "faults": 1}, notes="one stop", path=path)
    record("kill -9", **{**figures, "sent": 900}, path=path)  # replaces the earlier kill -9 entry
    results = orjson.loads(path.read_bytes())
    assert sorted(results) == ["broker bounce", "kill -9"]
    assert results["kill -9"]["sent"] == 900
    assert results["broker bounce"]["notes"] == "one stop"
    assert results["kill -9"]["at"].endswith("Z")
    assert load(path) == results


def test_record_refuses_negative_figures(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lost"):
        record(
            "x", faults=1, sent=1, lost=-1, duplicated_ids=0, redeliveries=0, dead_lettered=0, path=tmp_path / "r.json"
        )


def test_table_has_a_row_per_scenario_and_totals(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    record("a", faults=2, sent=1000, lost=0, duplicated_ids=0, redeliveries=5, dead_lettered=1, path=path)
    record("b", faults=3, sent=2000, lost=0, duplicated_ids=0, redeliveries=0, dead_lettered=0, notes="x|y", path=path)
    lines = table(load(path)).splitlines()
    assert lines[0].startswith("| scenario | faults injected | events sent | lost |")
    assert lines[2].startswith("| a | 2 | 1,000 | 0 | 0 | 5 | 1 |")
    assert "x\\|y" in lines[3]
    assert lines[4].startswith("| **total** | 5 | 3,000 | 0 | 0 | 5 | 1 |")


def test_main_prints_the_table_or_fails_without_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.json"
    assert main([str(path)]) == 1
    record("a", faults=1, sent=1, lost=0, duplicated_ids=0, redeliveries=0, dead_lettered=0, path=path)
    assert main([str(path)]) == 0
    assert "| a | 1 | 1 |" in capsys.readouterr().out


def test_record_figures_takes_the_verify_figures_and_counts_missing_crossings_as_lost(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    figures = Figures(sent=700, lost=1, duplicated_ids=2, redeliveries=3, dead_lettered=4)
    figures.missing_crossings = [("lead-1", 1), ("lead-2", 1)]
    record_figures("kill -9", figures, faults=5, notes="n", path=path)
    entry = load(path)["kill -9"]
    assert {k: entry[k] for k in ("faults", "sent", "lost", "duplicated_ids", "redeliveries", "dead_lettered")} == {
        "faults": 5,
        "sent": 700,
        "lost": 3,
        "duplicated_ids": 2,
        "redeliveries": 3,
        "dead_lettered": 4,
    }
    assert entry["notes"] == "n"
