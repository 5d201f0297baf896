"""``leadscore replay``: a candidate rules file's MQLs on a history, and how they differ from the
baseline rules'. Offline: the history comes from files or is read from the topics without a
consumer group, and nothing is sent anywhere."""

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import orjson

from scoring.engine import InputRecord, Scorer
from scoring.replay import ReplayDiff, ReplayResult, compare, replay
from scoring.rules import Rules, parse_rules
from scoring.timeutil import format_rfc3339, parse_rfc3339_ms

DAY_MS = 86_400_000


def load_rules(path: Path) -> Rules:
    """Parse a rules file (RulesError names the problem, OSError if it cannot be read)."""
    return parse_rules(path.read_text(encoding="utf-8"), str(path))


def parse_instant(text: str) -> int:
    """Epoch milliseconds, or an RFC 3339 timestamp with a zone."""
    return int(text) if text.isdigit() else parse_rfc3339_ms(text)


def write_events(path: Path, result: ReplayResult) -> int:
    """Write the MQL and nurture events a replay produced, as JSON lines in time order, exactly
    as a worker would have sent them (each has its ``stage``); returns how many."""
    timed = [(e.crossed_at, e.to_payload()) for e in result.mql]
    timed += [(e.at, e.to_payload()) for e in (*result.nurture, *result.settled)]
    timed.sort(key=lambda item: item[0])
    path.write_bytes(b"".join(orjson.dumps(payload) + b"\n" for _, payload in timed))
    return len(timed)


def _when(ms: int | None) -> str:
    return "-" if ms is None else format_rfc3339(ms).replace(".000Z", "Z")


def _summary(result: ReplayResult) -> list[tuple[str, str]]:
    letters = Counter(letter.reason for letter in result.dead_letters)
    reasons = ", ".join(f"{reason} {count:,}" for reason, count in sorted(letters.items()))
    return [
        ("rules", result.rules_version),
        ("leads that became MQLs", f"{len(result.crossing_times()):,}"),
        ("MQL crossings", f"{len(result.mql):,}"),
        ("returns to nurture", f"{len(result.nurture):,} + {len(result.settled):,} settled at the end"),
        ("dead letters", f"{len(result.dead_letters):,}" + (f" ({reasons})" if reasons else "")),
    ]


def _first_mql(result: ReplayResult) -> dict[str, tuple[int, float]]:
    first: dict[str, tuple[int, float]] = {}
    for event in result.mql:
        first.setdefault(event.lead_id, (event.crossed_at, event.score.score))
    return first


def _listing(title: str, leads: Sequence[str], result: ReplayResult, limit: int) -> list[str]:
    lines = [f"{title}: {len(leads):,}"]
    first = _first_mql(result)
    for lead in leads[:limit]:
        at, score = first[lead]
        lines.append(f"  {lead:<24} first MQL {_when(at)}  score {score:.2f}")
    if len(leads) > limit:
        lines.append(f"  ... and {len(leads) - limit:,} more")
    return lines


def render(candidate: ReplayResult, baseline: ReplayResult | None, diff: ReplayDiff | None, limit: int) -> str:
    """The replay report as text."""
    leads = len({*candidate.states, *(baseline.states if baseline else ())})
    lines = [
        f"history: {candidate.records:,} records of {leads:,} leads, {_when(candidate.first_ms)} to "
        f"{_when(candidate.last_ms)}; decay settled at {_when(candidate.until_ms)}",
        "",
    ]
    columns = [_summary(candidate)] + ([_summary(baseline)] if baseline else [])
    lines.append(f"{'':<26}{'candidate':<44}" + ("baseline" if baseline else ""))
    for i, (label, value) in enumerate(columns[0]):
        other = columns[1][i][1] if baseline else ""
        lines.append(f"{label:<26}{value:<44}{other}".rstrip())
    if baseline is None or diff is None:
        return "\n".join(lines)
    lines.append("")
    if candidate.rules_version == baseline.rules_version:
        lines.append("the candidate and baseline rules are the same file: no difference")
        return "\n".join(lines)
    lines += _listing("leads that qualify only under the candidate", diff.only_candidate, candidate, limit)
    lines += _listing("leads that qualify only under the baseline", diff.only_baseline, baseline, limit)
    lines.append(f"leads whose crossing times changed: {len(diff.changed):,} ({diff.same:,} unchanged)")
    for lead, (old, new) in list(diff.changed.items())[:limit]:
        shift = (new[0] - old[0]) / DAY_MS
        extra = f", crossings {len(old)} -> {len(new)}" if len(old) != len(new) else ""
        lines.append(f"  {lead:<24} first MQL {_when(old[0])} -> {_when(new[0])} ({shift:+.1f} d{extra})")
    if len(diff.changed) > limit:
        lines.append(f"  ... and {len(diff.changed) - limit:,} more")
    return "\n".join(lines)


def run_replay(
    records: Sequence[InputRecord],
    candidate: Rules,
    baseline: Rules | None,
    until_ms: int | None = None,
    output: Path | None = None,
    limit: int = 20,
) -> str:
    """Replay ``records`` under the candidate (and the baseline) rules; write the candidate's
    events to ``output`` if given; return the report."""
    new = replay(Scorer(candidate), records, until_ms)
    old = None
    if baseline is not None:
        same = baseline.version == candidate.version
        old = new if same else replay(Scorer(baseline), records, until_ms)
    if output is not None:
        write_events(output, new)
    return render(new, old, compare(new, old) if old is not None else None, limit)
