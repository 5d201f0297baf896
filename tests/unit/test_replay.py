"""Replay: deterministic dry-run scoring of a history, and the difference between two rules files."""

import random
from pathlib import Path

import orjson
import pytest

from scoring.engine import InputRecord, Scorer
from scoring.events import EventKind
from scoring.outputs import MqlEvent, NurtureEvent
from scoring.replay import ReplayResult, compare, in_time_order, replay
from scoring.rules import Rules, parse_rules
from streams.history import event_line, parse_record, read_jsonl, write_jsonl
from streams.replay import render, run_replay
from streams.synthetic import Journey, history
from tests.conftest import DEFAULT_RULES
from tests.journeys import DAY_MS, T0, qualifying_journey, visit

DEFAULT_TEXT = DEFAULT_RULES.read_text()


def with_threshold(mql: int) -> Rules:
    return parse_rules(DEFAULT_TEXT.replace("mql = 75", f"mql = {mql}"), f"mql-{mql}.toml")


def records_of(journeys: list[Journey], outcomes: bool = True) -> list[InputRecord]:
    events = [e for j in journeys for e in j.events] + ([e for j in journeys for e in j.outcomes] if outcomes else [])
    return [parse_record(event_line(e), "test", i) for i, e in enumerate(events)]


@pytest.fixture(scope="module")
def journeys() -> list[Journey]:
    return history(7, 400, T0, 30 * DAY_MS)


def payloads(result: ReplayResult) -> list[bytes]:
    events: list[MqlEvent | NurtureEvent] = [*result.mql, *result.nurture, *result.settled]
    return [orjson.dumps(e.to_payload()) for e in events]


def test_replay_is_deterministic_whatever_the_input_order(default_rules: Rules, journeys: list[Journey]) -> None:
    records = records_of(journeys)
    first = replay(Scorer(default_rules), records)
    shuffled = records[:]
    random.Random(3).shuffle(shuffled)
    again = replay(Scorer(default_rules), shuffled)
    assert first.mql  # the history qualifies leads, returns some to nurture, and has feedback
    assert {n.reason for n in first.nurture} >= {"sales_rejected"}
    assert payloads(first) == payloads(replay(Scorer(default_rules), records))
    assert sorted(payloads(first)) == sorted(payloads(again))
    assert first.states == again.states


def test_replay_scores_like_the_engine_fed_in_time_order(default_rules: Rules, journeys: list[Journey]) -> None:
    """Time order and the clock at each event's time: what a worker does with on-time events."""
    records = records_of(journeys)
    result = replay(Scorer(default_rules), records)
    ordered = sorted(records, key=lambda r: (orjson.loads(r.value or b"{}")["occurred_at"], r.offset))
    live = Scorer(default_rules)
    states: dict = {}  # type: ignore[type-arg]
    mql = []
    for rec in ordered:
        batch = live.process_batch([rec], states, orjson.loads(rec.value or b"{}")["occurred_at"])
        states.update(batch.states)
        mql.extend(batch.mql)
    assert [m.to_payload() for m in mql] == [m.to_payload() for m in result.mql]


def test_records_that_cannot_be_decoded_are_dead_letters_not_ordered() -> None:
    good = visit("a", "1", T0, "/pricing")
    broken = InputRecord(EventKind.WEB_VISIT, "web_visit", 0, 1, b"a", b"{not json")
    unknown = InputRecord(None, "tweets", 0, 2, b"a", b"{}")
    ordered, letters = in_time_order([broken, good, unknown])
    assert [r for _, r in ordered] == [good]
    assert [d.reason for d in letters] == ["invalid_json", "unknown_topic"]


def test_ties_keep_their_input_order() -> None:
    a, b = visit("a", "1", T0, "/x"), visit("b", "1", T0, "/y")
    assert [r for _, r in in_time_order([b, a])[0]] == [b, a]


def test_decay_is_settled_at_the_end(default_rules: Rules) -> None:
    records = qualifying_journey("a", T0)
    at_last_event = replay(Scorer(default_rules), records)
    assert at_last_event.settled == []
    assert at_last_event.until_ms == T0 + 4_000
    later = replay(Scorer(default_rules), records, until_ms=T0 + 200 * DAY_MS)
    assert [(n.reason, n.crossing) for n in later.settled] == [("decay", 1)]


def test_peaks_are_the_ascents_of_the_reported_score(default_rules: Rules) -> None:
    records = [*qualifying_journey("a", T0), visit("a", "later", T0 + 60 * DAY_MS, "/blog/x")]
    result = replay(Scorer(default_rules), records, track_peaks=True)
    ascents = result.ascents["a"]
    assert [score for _, score in ascents] == sorted(score for _, score in ascents)
    assert ascents[-1] == (T0 + 4_000, result.peak("a"))
    assert result.peak("a") == result.mql[0].score.score
    assert result.peak("nobody") == 0


def test_compare_lists_leads_only_under_one_rules_file_and_moved_crossings(journeys: list[Journey]) -> None:
    records = records_of(journeys, outcomes=False)
    strict = replay(Scorer(with_threshold(85)), records)
    default = replay(Scorer(with_threshold(75)), records)
    loose = replay(Scorer(with_threshold(60)), records)
    down = compare(loose, default)
    assert down.only_candidate
    assert not down.only_baseline
    assert set(down.only_candidate) == set(loose.crossing_times()) - set(default.crossing_times())
    assert all(new[0] <= old[0] for old, new in down.changed.values())
    up = compare(strict, default)
    assert up.only_baseline
    assert not up.only_candidate
    same = compare(default, replay(Scorer(with_threshold(75)), records))
    assert (same.only_candidate, same.only_baseline, dict(same.changed)) == ((), (), {})
    assert same.same == len(default.crossing_times())


def test_the_report_and_the_events_file(journeys: list[Journey], tmp_path: Path) -> None:
    path = tmp_path / "history.jsonl"
    events = [e for j in journeys for e in j.events]
    assert write_jsonl(path, events) == len(events)
    records = read_jsonl([path])
    output = tmp_path / "out.jsonl"
    text = run_replay(records, with_threshold(60), with_threshold(75), output=output, limit=3)
    assert f"history: {len(events):,} records of {len(journeys):,} leads" in text
    assert "leads that qualify only under the candidate: " in text
    assert "... and " in text
    lines = [orjson.loads(line) for line in output.read_bytes().splitlines()]
    assert {line["stage"] for line in lines} == {"mql", "nurture"}
    times = [line.get("crossed_at") or line["at"] for line in lines]
    assert times == sorted(times)
    same = run_replay(records, with_threshold(75), with_threshold(75))
    assert "the candidate and baseline rules are the same file" in same
    alone = render(replay(Scorer(with_threshold(75)), records), None, None, 5)
    assert "baseline" not in alone


def test_a_history_file_with_an_unknown_type_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"type": "web_visit", "lead_id": "a"}\n\n{"type": "tweet"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:3: unknown type 'tweet'"):
        read_jsonl([path])


def test_a_history_line_keeps_its_bytes_as_the_record_value() -> None:
    line = b'{"type":"sales_feedback","event_id":"f","lead_id":"a","occurred_at":1,"outcome":"won"}\n'
    rec = parse_record(line, "x", 4)
    assert rec == InputRecord(EventKind.SALES_FEEDBACK, "sales_feedback", 0, 4, b"a", line.strip())
