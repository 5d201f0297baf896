"""The scorer: rule features, decay, hysteresis, duplicates and out-of-order events."""

import itertools
import math
import random

import orjson
import pytest

from scoring.engine import Scorer, reaches
from scoring.outputs import MqlEvent
from scoring.rules import Rules, parse_rules
from scoring.state import LeadState, Stage, decode_state, encode_state
from tests.journeys import (
    DAY_MS,
    T0,
    download,
    email,
    good_fit_profile,
    profile,
    qualifying_journey,
    visit,
    webinar,
)

NOW = T0 + 400 * DAY_MS


def run(scorer: Scorer, records: list, now: int = NOW, states: dict | None = None):  # type: ignore[no-untyped-def,type-arg]
    states = {} if states is None else states
    result = scorer.process_batch(records, states, now)
    states.update(result.states)
    return result, states


def test_qualifying_journey_crosses_once_with_breakdown_that_adds_up(scorer: Scorer) -> None:
    result, states = run(scorer, qualifying_journey("lead-1", T0))
    assert result.scored == 5
    assert not result.dead_letters
    assert len(result.mql) == 1
    mql = result.mql[0]
    assert mql.crossing == 1
    assert mql.triggering_event_id == "lead-1-w1"
    assert mql.score.fit == 32
    assert mql.score.score >= 75
    assert math.isclose(sum(r.points for r in mql.score.breakdown), mql.score.score, abs_tol=0.01)
    rules = {row.rule: row for row in mql.score.breakdown}
    assert rules["pricing_page"].count == 3
    assert rules["demo_webinar_attended"].points > 9.9
    assert states["lead-1"].stage is Stage.MQL


def test_event_ids_are_deterministic_per_crossing(scorer: Scorer) -> None:
    first, _ = run(scorer, qualifying_journey("lead-1", T0))
    again, _ = run(scorer, qualifying_journey("lead-1", T0))
    other, _ = run(scorer, qualifying_journey("lead-2", T0))
    assert first.mql[0].event_id == again.mql[0].event_id
    assert first.mql[0].event_id != other.mql[0].event_id


def test_staying_above_threshold_sends_no_second_mql(scorer: Scorer) -> None:
    _, states = run(scorer, qualifying_journey("lead-1", T0))
    more, _ = run(scorer, [visit("lead-1", "x1", T0 + 10_000, "/demo")], states=states)
    assert more.mql == []
    assert more.scored == 1


def test_engagement_alone_never_qualifies_a_poor_fit(scorer: Scorer) -> None:
    """A student on a free-mail domain who downloads everything stays below the threshold."""
    lead = "student"
    records = [profile(lead, "p", T0, job_title="Student", email="someone@gmail.com")]
    records += [download(lead, f"d{i}", T0 + i * 1000, "api_docs") for i in range(1, 20)]
    records += [visit(lead, f"v{i}", T0 + 30_000 + i, "/pricing") for i in range(10)]
    records += [webinar(lead, f"w{i}", T0 + 60_000 + i, "attended") for i in range(3)]
    result, states = run(scorer, records)
    assert result.mql == []
    score = scorer.score_at(states[lead], T0 + 70_000)
    assert score.fit == -30  # -15 student, -15 free mail
    assert score.engagement == 65  # capped
    assert any(row.rule == "engagement_cap" for row in score.breakdown)


def test_good_fit_without_engagement_does_not_qualify(scorer: Scorer) -> None:
    result, states = run(scorer, [good_fit_profile("l", "p", T0)])
    assert result.mql == []
    assert scorer.score_at(states["l"], T0).score == 32


def test_high_intent_pages_outweigh_blog_posts(scorer: Scorer) -> None:
    _, pricing = run(scorer, [visit("a", "1", T0, "/pricing")])
    _, blog = run(scorer, [visit("b", "1", T0, "/blog/some-post")])
    assert scorer.score_at(pricing["a"], T0).score == 11  # page view + pricing
    assert scorer.score_at(blog["b"], T0).score == 1


def test_negative_points_for_careers_pages(scorer: Scorer) -> None:
    _, states = run(scorer, [visit("a", "1", T0, "/pricing"), visit("a", "2", T0 + 1, "/careers/backend")])
    score = scorer.score_at(states["a"], T0 + 1)
    rows = {r.rule: r.points for r in score.breakdown}
    assert rows["careers_page"] == -10
    assert score.score == 2  # 1 + 10 + 1 - 10


def test_engagement_floor_keeps_score_from_going_negative(scorer: Scorer) -> None:
    _, states = run(scorer, [visit("a", "1", T0, "/careers"), visit("a", "2", T0 + 1, "/jobs")])
    score = scorer.score_at(states["a"], T0 + 1)
    assert score.engagement == 0
    assert math.isclose(sum(r.points for r in score.breakdown), score.score, abs_tol=0.01)


def test_cap_counts_at_most_n_per_window(scorer: Scorer) -> None:
    visits = [visit("a", f"v{i}", T0 + i * 60_000, "/pricing") for i in range(5)]
    result, states = run(scorer, visits)
    assert states["a"].counts["pricing_page"] == 3
    assert result.scored == 5  # capped events are still scored (their page views count)
    # A week later, the next window counts again.
    run(scorer, [visit("a", "late", T0 + 7 * DAY_MS + 1, "/pricing")], states=states)
    assert states["a"].counts["pricing_page"] == 4


def test_email_rules_use_their_own_half_life(scorer: Scorer, default_rules: Rules) -> None:
    _, states = run(scorer, [email("a", "e1", T0, "click")])
    assert scorer.score_at(states["a"], T0 + 14 * DAY_MS).score == 2  # 4 halved after 14 days


def test_half_life_halves_exactly(scorer: Scorer) -> None:
    _, states = run(scorer, [visit("a", "1", T0, "/demo")])  # 16 points
    state = states["a"]
    assert scorer.score_at(state, T0).engagement == 16
    assert scorer.score_at(state, T0 + 30 * DAY_MS).engagement == 8
    assert scorer.score_at(state, T0 + 60 * DAY_MS).engagement == 4


def test_fit_does_not_decay(scorer: Scorer) -> None:
    _, states = run(scorer, [good_fit_profile("a", "p", T0)])
    assert scorer.score_at(states["a"], T0 + 3650 * DAY_MS).fit == 32


def test_decay_returns_mql_to_nurture_at_the_exact_crossing_time(scorer: Scorer) -> None:
    _, states = run(scorer, qualifying_journey("a", T0))
    state = states["a"]
    due = state.due_at
    assert due is not None
    assert state.ref_ms == state.last_event_at
    engagement = sum(state.values.values())  # unrounded, at the lead's last event
    # The closed form t0 + H * log2(E0 / limit), where the reported (0.01) score drops below 40.
    expected = state.last_event_at + 30 * DAY_MS * math.log2(engagement / (39.995 - 32))
    assert abs(due - expected) <= 1
    assert scorer.expire_due([state], due - 1).nurture == []
    tick = scorer.expire_due([state], due + DAY_MS)
    assert len(tick.nurture) == 1
    nurture = tick.nurture[0]
    assert nurture.at == due
    assert nurture.reason == "decay"
    assert nurture.crossing == 1
    assert nurture.score.score < 40
    assert state.stage is Stage.NURTURE
    assert scorer.expire_due([state], due + 2 * DAY_MS).nurture == []  # exactly one


def test_hysteresis_between_thresholds_keeps_mql(scorer: Scorer) -> None:
    _, states = run(scorer, qualifying_journey("a", T0))
    state = states["a"]
    assert state.due_at is not None
    # Halfway to the due time the score is below 75 but above 40: still an MQL.
    midway = (state.last_event_at + state.due_at) // 2
    assert 40 <= scorer.score_at(state, midway).score < 75
    assert scorer.expire_due([state], midway).nurture == []
    assert state.stage is Stage.MQL


def test_requalifying_after_nurture_is_a_new_crossing(scorer: Scorer) -> None:
    _, states = run(scorer, qualifying_journey("a", T0))
    later = states["a"].due_at + DAY_MS
    journey = qualifying_journey("a", later, tag="-again")[1:]  # profile already known
    result, _ = run(scorer, journey, states=states)
    # The first event settles the overdue decay, then the journey crosses again.
    assert [n.reason for n in result.nurture] == ["decay"]
    assert [m.crossing for m in result.mql] == [2]
    first = scorer.process_batch(qualifying_journey("b", T0), {}, NOW).mql[0]
    assert result.mql[0].event_id != first.event_id


def test_negative_signal_can_end_qualification(default_rules: Rules) -> None:
    text = (
        "[thresholds]\nmql = 20\nnurture = 10\n[fit]\nmax = 5\n[engagement]\nmax = 50\n"
        '[[engagement_rules]]\nid = "demo"\nevent = "web_visit"\nurl = "/demo"\npoints = 25\n'
        '[[engagement_rules]]\nid = "jobs"\nevent = "web_visit"\nurl = "/jobs"\npoints = -20\n'
    )
    scorer = Scorer(parse_rules(text))
    result, states = run(scorer, [visit("a", "1", T0, "/demo"), visit("a", "2", T0 + 1, "/jobs")])
    assert len(result.mql) == 1
    assert [n.reason for n in result.nurture] == ["negative_signal"]
    assert states["a"].stage is Stage.NURTURE


def test_duplicate_event_ids_count_once(scorer: Scorer) -> None:
    records = [visit("a", "same", T0, "/pricing"), visit("a", "same", T0 + 5, "/pricing")]
    result, states = run(scorer, records)
    assert result.scored == 1
    assert result.duplicates == 1
    assert scorer.score_at(states["a"], T0 + 5).score == 11


def test_redelivered_crossing_is_not_sent_again(scorer: Scorer) -> None:
    journey = qualifying_journey("a", T0)
    _, states = run(scorer, journey)
    again, _ = run(scorer, journey, states=states)
    assert again.mql == []
    assert again.duplicates == len(journey)


@pytest.mark.parametrize("seed", range(5))
def test_out_of_order_events_give_the_same_score(scorer: Scorer, seed: int) -> None:
    lead = "a"
    records = [good_fit_profile(lead, "p", T0)]
    paths = ["/pricing", "/blog/x", "/demo", "/careers", "/docs/api", "/pricing", "/product/a"]
    for i in range(40):
        records.append(visit(lead, f"v{i}", T0 + i * 3_600_000, paths[i % len(paths)]))
        records.append(email(lead, f"e{i}", T0 + i * 3_600_000 + 7, "click" if i % 3 else "open"))
    shuffled = records[:]
    random.Random(seed).shuffle(shuffled)
    _, ordered = run(scorer, records)
    _, mixed = run(scorer, shuffled)
    at = T0 + 45 * 3_600_000
    a, b = scorer.score_at(ordered[lead], at), scorer.score_at(mixed[lead], at)
    assert a.score == b.score
    assert {r.rule: (r.points, r.count) for r in a.breakdown} == {r.rule: (r.points, r.count) for r in b.breakdown}


def test_profile_updates_are_last_writer_wins_by_event_time(scorer: Scorer) -> None:
    newer = profile("a", "p2", T0 + 10, seniority="vp")
    older = profile("a", "p1", T0, seniority="intern")
    _, states = run(scorer, [newer, older])
    assert states["a"].profile["seniority"] == "vp"


def test_email_address_is_reduced_to_its_domain(scorer: Scorer) -> None:
    _, states = run(scorer, [profile("a", "p", T0, email="Jane.Doe@Example.ORG")])
    assert states["a"].profile == {"email_domain": "example.org"}
    assert b"Jane" not in encode_state(states["a"])


def test_events_too_late_or_in_the_future_are_dead_lettered(scorer: Scorer) -> None:
    records = [
        visit("a", "1", T0 + 370 * DAY_MS, "/pricing"),
        visit("a", "2", T0, "/pricing"),  # 370 days older than the lead's newest event
        visit("a", "3", NOW + 2 * 3_600_000, "/pricing"),  # two hours in the future
    ]
    result, _ = run(scorer, records)
    assert [d.reason for d in result.dead_letters] == ["too_late", "timestamp_out_of_range"]
    assert [d.offset for d in result.dead_letters] == [0, 0]
    assert result.scored == 1


def test_duplicates_memory_is_bounded(default_rules: Rules) -> None:
    text = "[engagement]\nmax_tracked_events = 10\n" + (
        '[[engagement_rules]]\nid = "any"\nevent = "web_visit"\nurl = "/*"\npoints = 1\n'
    )
    scorer = Scorer(parse_rules(text))
    _, states = run(scorer, [visit("a", f"v{i}", T0 + i, "/x") for i in range(30)])
    state = states["a"]
    assert len(state.seen) <= 10
    late, _ = run(scorer, [visit("a", "v0", T0, "/x")], states=states)
    assert [d.reason for d in late.dead_letters] == ["too_late"]  # cannot prove it is new


def test_state_round_trips_through_its_encoding(scorer: Scorer) -> None:
    _, states = run(scorer, qualifying_journey("a", T0))
    state = states["a"]
    copy = decode_state(encode_state(state))
    assert copy == state
    assert scorer.score_at(copy, NOW) == scorer.score_at(state, NOW)


def test_state_with_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown lead state format"):
        decode_state(b'{"f": 99}')


def test_batch_spanning_many_leads_matches_one_event_at_a_time(scorer: Scorer) -> None:
    records = list(itertools.chain.from_iterable(qualifying_journey(f"l{i}", T0 + i) for i in range(20)))
    random.Random(1).shuffle(records)
    batch, batch_states = run(scorer, records)
    single_states: dict[str, LeadState] = {}
    single: list[MqlEvent] = []
    for rec in records:
        result, single_states = run(scorer, [rec], states=single_states)
        single.extend(result.mql)
    assert sorted(m.event_id for m in batch.mql) == sorted(m.event_id for m in single)
    assert batch_states == single_states


def test_an_mql_that_decays_between_two_events_of_one_batch_settles_as_one_event_at_a_time_does(
    scorer: Scorer,
) -> None:
    # The scorer computes a batch's due times lazily (at the lead's next event only if its score
    # has fallen by then, else at the batch's end): the outputs must not tell the difference.
    _, alone = run(scorer, qualifying_journey("a", T0))
    due = alone["a"].due_at
    assert due is not None
    last = alone["a"].last_event_at
    assert last is not None
    midway = (last + due) // 2  # still an MQL then: the blog visit keeps it one
    records = [
        *qualifying_journey("a", T0),
        visit("a", "a-mid", midway, "/blog/x"),
        visit("a", "a-late", due + 60 * DAY_MS, "/blog/y"),  # long after its (new) due time
        *qualifying_journey("b", T0 + 5),
    ]
    batch, batch_states = run(scorer, records)
    single_states: dict[str, LeadState] = {}
    single_nurture = []
    for rec in records:
        result, single_states = run(scorer, [rec], states=single_states)
        single_nurture.extend(result.nurture)

    assert [(n.lead_id, n.reason) for n in batch.nurture] == [("a", "decay")]
    assert batch.nurture == single_nurture
    assert batch_states == single_states
    assert batch_states["a"].stage is Stage.NURTURE
    assert batch_states["b"].stage is Stage.MQL
    assert batch_states["b"].due_at == scorer.due_at(batch_states["b"], batch_states["b"].last_event_at)


def test_forgetting_old_event_ids_keeps_a_window_that_can_still_be_counted_in() -> None:
    # A lead past max_tracked_events forgets its oldest event ids. The cap window of the day it is
    # in still takes events, so it must not be forgotten with them, or the day's cap counts anew.
    text = "[engagement]\nmax_tracked_events = 12\n" + (
        '[[engagement_rules]]\nid = "any"\nevent = "web_visit"\nurl = "/*"\npoints = 1\n'
        'cap = { count = 3, window = "1d" }\n'
    )
    scorer = Scorer(parse_rules(text))
    day = T0 - T0 % DAY_MS
    _, states = run(scorer, [visit("a", f"v{i}", day + i * 60_000, "/x") for i in range(40)])
    assert states["a"].counts["any"] == 3
    # The same result one event at a time (the forgetting then happens at other points).
    single: dict[str, LeadState] = {}
    for i in range(40):
        _, single = run(scorer, [visit("a", f"v{i}", day + i * 60_000, "/x")], states=single)
    assert single["a"].counts["any"] == 3


def _capped_rules(count: int, window: str, max_tracked: int = 1000) -> Rules:
    return parse_rules(
        f"[engagement]\nmax_tracked_events = {max_tracked}\n"
        '[[engagement_rules]]\nid = "any"\nevent = "web_visit"\nurl = "/*"\npoints = 1\n'
        f'cap = {{ count = {count}, window = "{window}" }}\n'
    )


def test_a_late_event_evicts_only_from_its_own_cap_window() -> None:
    # The counted events of a rule are kept in one sorted list across its windows: a late event
    # compares against, and evicts from, the window it falls in, not a neighbouring one.
    scorer = Scorer(_capped_rules(2, "1d"))
    day = T0 - T0 % DAY_MS
    hour = 3_600_000
    on_time = [day + 10 * hour, day + 11 * hour, day + DAY_MS + 1 * hour, day + DAY_MS + 2 * hour]
    _, states = run(scorer, [visit("a", f"v{i}", at, "/x") for i, at in enumerate(on_time)])
    _, states = run(scorer, [visit("a", "late", day + 8 * hour, "/x")], states=states)
    state = states["a"]
    assert state.cap_counted["any"] == [day + 8 * hour, day + 10 * hour, day + DAY_MS + hour, day + DAY_MS + 2 * hour]
    assert state.counts["any"] == 4
    # An event after the second day's two is held back by that day's cap alone.
    result, states = run(scorer, [visit("a", "after", day + DAY_MS + 3 * hour, "/x")], states=states)
    assert (result.capped, states["a"].counts["any"]) == (1, 4)
    # The same outcome in any arrival order (the windows are fixed).
    events = [visit("a", f"v{i}", at, "/x") for i, at in enumerate(on_time)]
    _, shuffled = run(scorer, [visit("a", "late", day + 8 * hour, "/x"), *events[::-1]])
    assert shuffled["a"].cap_counted == state.cap_counted
    assert scorer.score_at(shuffled["a"], NOW) == scorer.score_at(state, NOW)


def test_forgetting_drops_the_counted_events_of_closed_cap_windows_only() -> None:
    scorer = Scorer(_capped_rules(3, "1d", max_tracked=8))
    day = T0 - T0 % DAY_MS
    # Two events a day for ten days: past 8 tracked ids, the oldest are forgotten, and with them
    # the counted events of the days that closed at or before the floor.
    visits = [visit("a", f"v{d}-{i}", day + d * DAY_MS + i * 60_000, "/x") for d in range(10) for i in range(2)]
    _, states = run(scorer, visits)
    state = states["a"]
    assert state.seen_floor >= 0
    kept = state.cap_counted["any"]
    assert kept
    assert all(at // DAY_MS * DAY_MS + DAY_MS - 1 > state.seen_floor for at in kept)
    times = [day + d * DAY_MS + i * 60_000 for d in range(10) for i in range(2)]  # all counted: 2 < cap 3
    assert kept == [at for at in times if at // DAY_MS * DAY_MS + DAY_MS - 1 > state.seen_floor]
    assert len(kept) < len(times)


def test_a_format_2_state_reads_its_cap_windows_as_one_sorted_list_per_rule() -> None:
    state = LeadState("a", cap_counted={"any": [5, 7, 90_000_000]})
    raw = orjson.loads(encode_state(state))
    del raw["k"]
    raw["f"] = 2
    raw["w"] = {"any@1": [90_000_000], "any@0": [5, 7], "other@3": [3]}
    decoded = decode_state(orjson.dumps(raw))
    assert decoded.cap_counted == {"any": [5, 7, 90_000_000], "other": [3]}
    assert decode_state(encode_state(decoded)) == decoded


def test_a_profile_change_reaches_the_fit_and_the_encoded_state(scorer: Scorer) -> None:
    # The fit is kept on the state between events; a profile event that changes an attribute must
    # renew it, one that changes nothing (older) must not matter.
    _, states = run(scorer, [good_fit_profile("a", "p1", T0), visit("a", "v1", T0 + 1, "/docs")])
    state = states["a"]
    assert scorer.score_at(state, T0 + 1).fit == 32
    encode_state(state)  # keeps the encoded profile
    _, states = run(scorer, [profile("a", "p2", T0 + 2, seniority="intern")], states=states)
    state = states["a"]
    fit_now = scorer.score_at(state, T0 + 2).fit
    assert fit_now < 32
    assert scorer.reported_score(state, T0 + 2) == scorer.score_at(state, T0 + 2).score  # decisions use the memo
    assert decode_state(encode_state(state)).profile == state.profile
    assert decode_state(encode_state(state)).profile["seniority"] == "intern"
    _, states = run(scorer, [profile("a", "p0", T0 - 5, seniority="vp")], states=states)  # older: ignored
    assert decode_state(encode_state(states["a"])) == states["a"]
    assert scorer.score_at(states["a"], T0 + 3).fit == fit_now
    assert scorer.reported_score(states["a"], T0 + 3) == scorer.score_at(states["a"], T0 + 3).score


@pytest.mark.parametrize("threshold", [0.0, 50.0, 49.995, 100.01, -5.0, 12.345])
def test_reaches_decides_as_the_rounded_score_does(threshold: float) -> None:
    """The decision skips ``round`` far from the threshold and agrees with it everywhere."""
    rng = random.Random(threshold)
    near = [threshold + k * 0.0001 for k in range(-300, 301)]
    far = [threshold + rng.uniform(-1000, 1000) for _ in range(2000)]
    edges = [math.nextafter(threshold + d, math.inf) for d in (-0.01, -0.005, 0.0, 0.005, 0.01)]
    edges += [math.nextafter(threshold + d, -math.inf) for d in (-0.01, -0.005, 0.0, 0.005, 0.01)]
    for score in near + far + edges:
        assert reaches(score, threshold) == (round(score, 2) >= threshold), score
