"""The reliability suite's figures: one entry per scenario in ``results/last-run.json``.

Each scenario calls :func:`record` once its invariants held; ``python -m tests.reliability.report``
prints the table the README's "Reliability" section shows.
"""

import fcntl
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

RESULTS = Path(__file__).resolve().parent / "results" / "last-run.json"
COLUMNS = (
    ("scenario", "scenario"),
    ("faults", "faults injected"),
    ("sent", "events sent"),
    ("lost", "lost"),
    ("duplicated_ids", "duplicated ids"),
    ("redeliveries", "redeliveries"),
    ("dead_lettered", "dead-lettered"),
    ("at", "run at (UTC)"),
    ("notes", "notes"),
)


def record(
    scenario: str,
    *,
    faults: int,
    sent: int,
    lost: int,
    duplicated_ids: int,
    redeliveries: int,
    dead_lettered: int,
    notes: str = "",
    path: Path = RESULTS,
) -> None:
    """Merge one scenario's figures (with the current UTC time) into the results file, replacing
    that scenario's previous entry; safe against concurrent writers (a lock and an atomic rename)."""
    counts = {
        "faults": faults,
        "sent": sent,
        "lost": lost,
        "duplicated_ids": duplicated_ids,
        "redeliveries": redeliveries,
        "dead_lettered": dead_lettered,
    }
    bad = {name: value for name, value in counts.items() if not isinstance(value, int) or value < 0}
    if bad:
        raise ValueError(f"figures must be non-negative integers: {bad}")
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"scenario": scenario, **counts, "notes": notes, "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    with (path.parent / (path.name + ".lock")).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = load(path)
        results[scenario] = entry
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_bytes(orjson.dumps(dict(sorted(results.items())), option=orjson.OPT_INDENT_2) + b"\n")
        tmp.replace(path)


def load(path: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """The recorded entries by scenario (empty when nothing was recorded)."""
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object of scenarios")
    return data


def table(results: dict[str, dict[str, Any]]) -> str:
    """The entries as a markdown table, one row per scenario, with a total row of the counts."""
    lines = [
        "| " + " | ".join(title for _, title in COLUMNS) + " |",
        "| " + " | ".join("---" if key in ("scenario", "at", "notes") else "---:" for key, _ in COLUMNS) + " |",
    ]
    for name in sorted(results):
        entry = results[name]
        cells = [_cell(entry.get(key, "")) for key, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    if results:
        totals = ["**total**"] + [_cell(sum(int(e.get(key, 0)) for e in results.values())) for key, _ in COLUMNS[1:7]]
        lines.append("| " + " | ".join([*totals, "", ""]) + " |")
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else RESULTS
    results = load(path)
    if not results:
        print(f"no results in {path}: run the reliability tier first", file=sys.stderr)
        return 1
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
