"""Erasure in the pure core: the state goes, the marker stays, earlier events never count again."""

import orjson
import pytest

from scoring.engine import Erased, InputRecord, Scorer
from scoring.events import EventKind, decode_event
from scoring.replay import erasures, replay
from scoring.state import LeadState
from tests.journeys import DAY_MS, T0, qualifying_journey, visit


def erase(lead: str, at: int | str, event_id: str = "erase-1", offset: int = 0) -> InputRecord:
    value = orjson.dumps({"event_id": event_id, "lead_id": lead, "requested_at": at})
    return InputRecord(EventKind.ERASURE, "lead-erasures", 0, offset, lead.encode(), value)


def run(
    scorer: Scorer, records: list[InputRecord], erased: dict[str, Erased] | None = None
) -> tuple[dict[str, LeadState], dict[str, Erased], int, int]:
    """Score records one at a time the way a worker would: (states, markers, MQLs, dropped)."""
    states: dict[str, LeadState] = {}
    markers = dict(erased or {})
    mql = dropped = 0
    for item in records:
        result = scorer.process_batch([item], states, T0 + 400 * DAY_MS, markers)
        for lead in result.deleted:
            states.pop(lead, None)
        states.update(result.states)
        markers.update(result.erased)
        mql += len(result.mql)
        dropped += result.erased_dropped
        assert not result.dead_letters, result.dead_letters
    return states, markers, mql, dropped


def test_erasure_decodes_requested_at_as_its_time() -> None:
    event = decode_event(EventKind.ERASURE, b"L1", erase("L1", "2026-01-01T00:00:00Z").value)
    assert (event.lead_id, event.occurred_at, event.event_id) == ("L1", T0, "erase-1")


def test_erasure_without_requested_at_is_a_dead_letter(scorer: Scorer) -> None:
    value = orjson.dumps({"event_id": "e", "lead_id": "L1"})
    result = scorer.process_batch([InputRecord(EventKind.ERASURE, "t", 0, 0, b"L1", value)], {}, T0)
    assert [(d.reason, d.detail) for d in result.dead_letters] == [("missing_field", "field 'requested_at' is missing")]
    assert not result.erased


def test_erasure_in_the_future_is_a_dead_letter(scorer: Scorer) -> None:
    result = scorer.process_batch([erase("L1", T0 + DAY_MS)], {}, T0)
    assert [d.reason for d in result.dead_letters] == ["timestamp_out_of_range"]
    assert not result.deleted


def test_erasing_an_mql_deletes_its_state_and_keeps_a_marker(scorer: Scorer) -> None:
    journey = qualifying_journey("L1", T0)
    states, _, mql, _ = run(scorer, journey)
    assert mql == 1
    at = T0 + DAY_MS
    result = scorer.process_batch([erase("L1", at)], states, at)
    assert result.deleted == {"L1"}
    assert result.erased == {"L1": Erased(at, 1)}
    assert result.states == {}
    assert not result.mql
    assert not result.nurture


def test_replaying_an_erased_history_never_qualifies_and_counts_each_drop(scorer: Scorer) -> None:
    journey = qualifying_journey("L1", T0)
    states, markers, mql, _ = run(scorer, [*journey, erase("L1", T0 + DAY_MS)])
    assert mql == 1  # before the erasure, once
    assert states == {}
    states, markers, mql, dropped = run(scorer, journey, markers)  # the same history, sent again
    assert (mql, dropped, states) == (0, len(journey), {})


def test_events_after_the_erasure_start_a_fresh_lead(scorer: Scorer) -> None:
    erased_at = T0 + DAY_MS
    after = qualifying_journey("L1", erased_at + 1, tag="new")
    states, _, mql, dropped = run(scorer, [erase("L1", erased_at), *after])
    assert (mql, dropped) == (1, 0)
    assert states["L1"].crossings == 1  # a new lead: its crossings count from one again
    assert states["L1"].first_event_at == erased_at + 1


def test_an_event_at_the_erasure_instant_is_dropped(scorer: Scorer) -> None:
    states, _, _, dropped = run(scorer, [erase("L1", T0), visit("L1", "v", T0, "/pricing")])
    assert (states, dropped) == ({}, 1)


def test_in_one_batch_an_erasure_hides_the_earlier_state_from_later_events(scorer: Scorer) -> None:
    journey = qualifying_journey("L1", T0)
    states, _, _, _ = run(scorer, journey)
    later = visit("L1", "late-visit", T0 + 2 * DAY_MS, "/pricing")
    result = scorer.process_batch([erase("L1", T0 + DAY_MS), later], states, T0 + 3 * DAY_MS)
    assert result.deleted == {"L1"}
    fresh = result.states["L1"]
    assert fresh.profile == {}  # not the erased lead's profile
    assert list(fresh.seen) == ["late-visit"]


def test_a_repeated_erasure_keeps_the_latest_time(scorer: Scorer) -> None:
    result = scorer.process_batch([erase("L1", T0 + DAY_MS)], {}, T0 + 2 * DAY_MS, {"L1": Erased(T0 + 5, 2)})
    assert result.erased == {"L1": Erased(T0 + DAY_MS, 2)}
    result = scorer.process_batch([erase("L1", T0)], {}, T0 + 2 * DAY_MS, {"L1": Erased(T0 + DAY_MS, 2)})
    assert result.erased == {"L1": Erased(T0 + DAY_MS, 2)}


@pytest.mark.parametrize("erase_first", [True, False])
def test_replay_honours_erasures_whatever_their_position(scorer: Scorer, erase_first: bool) -> None:
    journey = qualifying_journey("L1", T0)
    other = qualifying_journey("L2", T0)
    request = erase("L1", T0 + DAY_MS)
    records = [request, *journey, *other] if erase_first else [*journey, *other, request]
    assert erasures(records) == {"L1": Erased(T0 + DAY_MS, 0)}
    result = replay(scorer, records)
    assert [m.lead_id for m in result.mql] == ["L2"]
    assert result.erased_dropped == len(journey)
    assert "L1" not in result.states


def test_a_lead_started_afresh_never_reuses_an_erased_crossing_id(scorer: Scorer) -> None:
    before = qualifying_journey("L1", T0)
    states: dict[str, LeadState] = {}
    ids = []
    for item in before:
        result = scorer.process_batch([item], states, T0 + DAY_MS)
        states.update(result.states)
        ids += [m.event_id for m in result.mql]
    erased = scorer.process_batch([erase("L1", T0 + DAY_MS)], states, T0 + DAY_MS).erased
    fresh: dict[str, LeadState] = {}
    for item in qualifying_journey("L1", T0 + 2 * DAY_MS, tag="new"):
        result = scorer.process_batch([item], fresh, T0 + 3 * DAY_MS, erased)
        fresh.update(result.states)
        ids += [m.event_id for m in result.mql]
    assert len(ids) == 2
    assert len(set(ids)) == 2  # a router de-duplicating on event_id still sees the new crossing
    assert fresh["L1"].crossings == 2
