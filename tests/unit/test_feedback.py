"""Sales feedback: the stage machine, every valid and invalid transition, engagement resets, and
what decay may and may not do to a lead that sales owns."""

import math
from typing import Any

import pytest

from scoring.engine import BatchResult, InputRecord, Scorer
from scoring.errors import RulesError
from scoring.events import FEEDBACK_OUTCOMES, EventKind
from scoring.outputs import derived_event_id
from scoring.rules import Rules, parse_rules
from scoring.stages import TRANSITIONS
from scoring.state import LeadState, Stage, decode_state, encode_state
from tests.conftest import DEFAULT_RULES
from tests.journeys import DAY_MS, T0, download, good_fit_profile, qualifying_journey, record, visit

NOW = T0 + 400 * DAY_MS
LEAD = "lead-1"
QUALIFIED_AT = T0 + 4_000  # the last event of qualifying_journey, whose score is 85 (fit 32)


def feedback(lead: str, eid: str, at: int, outcome: str, **fields: Any) -> InputRecord:
    return record(EventKind.SALES_FEEDBACK, lead, eid, at, outcome=outcome, **fields)


def run(scorer: Scorer, records: list[InputRecord], states: dict[str, LeadState], now: int = NOW) -> BatchResult:
    result = scorer.process_batch(records, states, now)
    states.update(result.states)
    return result


# Feedback that brings a qualified lead to each stage, one hour apart after it qualified.
PATHS: dict[Stage, list[str]] = {
    Stage.MQL: [],
    Stage.SAL: ["accepted"],
    Stage.SQL: ["accepted", "sql"],
    Stage.CUSTOMER: ["accepted", "sql", "won"],
    Stage.NURTURE: ["rejected"],
}
HOUR = 3_600_000
DEFAULT_TEXT = DEFAULT_RULES.read_text()


def with_feedback(table: str) -> Scorer:
    """The default rules with a [feedback] table."""
    return Scorer(parse_rules(f"{DEFAULT_TEXT}\n[feedback]\n{table}\n"))


def lead_in(scorer: Scorer, stage: Stage) -> tuple[dict[str, LeadState], int]:
    """A lead in ``stage`` and the time of its last feedback."""
    states: dict[str, LeadState] = {}
    if stage is Stage.LEAD:
        run(scorer, [good_fit_profile(LEAD, "p", T0), visit(LEAD, "v", T0 + 1, "/pricing")], states)
        return states, T0 + 1
    run(scorer, qualifying_journey(LEAD, T0), states)
    at = QUALIFIED_AT
    for i, outcome in enumerate(PATHS[stage]):
        at += HOUR
        result = run(scorer, [feedback(LEAD, f"f{i}", at, outcome)], states)
        assert result.dead_letters == [], result.dead_letters
    assert states[LEAD].stage is stage
    return states, at


# -- the table -------------------------------------------------------------------------------------

VALID = sorted((outcome, start, end) for outcome, moves in TRANSITIONS.items() for start, end in moves.items())
INVALID = sorted(
    (outcome, stage) for outcome in FEEDBACK_OUTCOMES for stage in Stage if stage not in TRANSITIONS[outcome]
)


def test_the_table_covers_every_outcome_and_matches_the_documented_machine() -> None:
    assert set(TRANSITIONS) == set(FEEDBACK_OUTCOMES)
    assert {(o, s.value, e.value) for o, s, e in VALID} == {
        ("accepted", "mql", "sal"),
        ("rejected", "mql", "nurture"),
        ("rejected", "sal", "nurture"),
        ("sql", "mql", "sql"),
        ("sql", "sal", "sql"),
        ("won", "sql", "customer"),
        ("lost", "sql", "nurture"),
    }
    assert len(VALID) + len(INVALID) == len(FEEDBACK_OUTCOMES) * len(Stage)


@pytest.mark.parametrize(("outcome", "start", "end"), VALID, ids=lambda v: str(v))
def test_every_valid_transition(scorer: Scorer, outcome: str, start: Stage, end: Stage) -> None:
    states, at = lead_in(scorer, start)
    crossings = states[LEAD].crossings
    result = run(scorer, [feedback(LEAD, "x", at + HOUR, outcome)], states)
    state = states[LEAD]
    assert result.dead_letters == []
    assert result.scored == 1
    assert result.mql == []
    assert state.stage is end
    assert state.due_at is None
    assert state.crossings == crossings
    assert result.feedback == {outcome: 1}
    assert [(t.from_stage, t.to_stage) for t in result.transitions] == [(start.value, end.value)]
    reasons = [n.reason for n in result.nurture]
    assert reasons == ({"rejected": ["sales_rejected"], "lost": ["lost"]}.get(outcome, []))
    stamp = {Stage.SAL: state.sal_at, Stage.SQL: state.sql_at, Stage.CUSTOMER: state.won_at}.get(end)
    if stamp is not None:
        assert stamp == at + HOUR


@pytest.mark.parametrize(("outcome", "stage"), INVALID, ids=lambda v: str(v))
def test_every_invalid_transition_is_dead_lettered_and_changes_nothing(
    scorer: Scorer, outcome: str, stage: Stage
) -> None:
    states, at = lead_in(scorer, stage)
    before = encode_state(states[LEAD])
    rec = feedback(LEAD, "bad", at + HOUR, outcome)
    result = run(scorer, [rec], states)
    assert [(d.reason, d.topic, d.value) for d in result.dead_letters] == [("invalid_transition", rec.topic, rec.value)]
    assert f"stage {stage.value}" in result.dead_letters[0].detail
    assert result.scored == 0
    assert result.states == {}
    assert (result.mql, result.nurture, result.transitions, result.feedback) == ([], [], [], {})
    assert encode_state(states[LEAD]) == before


def test_accepted_twice_is_invalid_but_a_redelivery_is_a_duplicate(scorer: Scorer) -> None:
    states, at = lead_in(scorer, Stage.SAL)
    again = run(scorer, [feedback(LEAD, "f0", at + 5, "accepted")], states)
    assert (again.duplicates, again.dead_letters) == (1, [])
    second = run(scorer, [feedback(LEAD, "other", at + 5, "accepted")], states)
    assert [d.reason for d in second.dead_letters] == ["invalid_transition"]


def test_won_for_a_lead_that_was_never_an_mql_is_invalid_and_creates_no_state(scorer: Scorer) -> None:
    states: dict[str, LeadState] = {}
    result = run(scorer, [feedback("stranger", "w", T0, "won")], states)
    assert [d.reason for d in result.dead_letters] == ["invalid_transition"]
    assert "stage lead" in result.dead_letters[0].detail
    assert states == {}


def test_feedback_older_than_the_current_stage_is_invalid(scorer: Scorer) -> None:
    states, at = lead_in(scorer, Stage.SAL)
    stale = run(scorer, [feedback(LEAD, "old-sql", at - 1, "sql")], states)
    assert [d.reason for d in stale.dead_letters] == ["invalid_transition"]
    assert "before the lead entered its current stage sal" in stale.dead_letters[0].detail
    before_mql = run(scorer, [feedback("lead-2", "a", T0, "accepted")], {})  # unknown lead
    assert [d.reason for d in before_mql.dead_letters] == ["invalid_transition"]


def test_sql_straight_from_mql_implies_acceptance(scorer: Scorer) -> None:
    states, at = lead_in(scorer, Stage.MQL)
    run(scorer, [feedback(LEAD, "s", at + HOUR, "sql")], states)
    state = states[LEAD]
    assert state.stage is Stage.SQL
    assert state.sal_at == state.sql_at == at + HOUR


# -- engagement on rejection and lost deals ------------------------------------------------------------


def test_rejection_resets_engagement_and_sends_one_nurture_event(scorer: Scorer) -> None:
    states, at = lead_in(scorer, Stage.MQL)
    result = run(scorer, [feedback(LEAD, "r", at + HOUR, "rejected", reason="no budget")], states)
    (nurture,) = result.nurture
    assert nurture.reason == "sales_rejected"
    assert nurture.crossing == 1
    assert nurture.score.score == nurture.score.fit == 32  # rejected_engagement_factor = 0
    assert nurture.score.engagement == 0
    assert math.isclose(sum(r.points for r in nurture.score.breakdown), nurture.score.score, abs_tol=0.01)
    assert nurture.event_id == derived_event_id(LEAD, "nurture", 1)
    state = states[LEAD]
    assert scorer.score_at(state, at + 2 * HOUR).score == 32
    # Decay cannot send a second return to nurture for the same crossing.
    assert scorer.expire_due([state], at + 400 * DAY_MS).nurture == []


def test_lost_deal_discounts_engagement_by_the_rules_factor(scorer: Scorer) -> None:
    states, at = lead_in(scorer, Stage.SQL)
    state = states[LEAD]
    before = scorer.score_at(state, at + HOUR)
    result = run(scorer, [feedback(LEAD, "l", at + HOUR, "lost")], states)
    (nurture,) = result.nurture
    assert nurture.reason == "lost"
    assert nurture.score.fit == before.fit
    assert nurture.score.engagement == pytest.approx(before.engagement * 0.5, abs=0.01)
    assert state.stage is Stage.NURTURE
    assert state.sql_at is not None  # the funnel still knows it was an SQL


def test_factors_come_from_the_rules_file() -> None:
    scorer = with_feedback("rejected_engagement_factor = 0.25\nlost_engagement_factor = 1")
    states, at = lead_in(scorer, Stage.MQL)
    engagement = scorer.score_at(states[LEAD], at + HOUR).engagement
    (nurture,) = run(scorer, [feedback(LEAD, "r", at + HOUR, "rejected")], states).nurture
    assert nurture.score.engagement == pytest.approx(engagement * 0.25, abs=0.01)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("rejected_engagement_factor = 1.5", "field 'rejected_engagement_factor': must be between 0 (reset) and 1"),
        ("lost_engagement_factor = -0.1", "field 'lost_engagement_factor': must be between 0 (reset) and 1"),
        ("lost_engagement_factor = 'half'", "field 'lost_engagement_factor': expected a number"),
        ("keep = true", "[feedback]: field 'keep': unknown field"),
    ],
)
def test_feedback_factors_are_validated(table: str, message: str) -> None:
    with pytest.raises(RulesError, match=r"^rules\.toml: ") as error:
        parse_rules(f"[feedback]\n{table}\n", "rules.toml")
    assert message in str(error.value)


def test_default_factors(default_rules: Rules) -> None:
    assert (default_rules.rejected_engagement_factor, default_rules.lost_engagement_factor) == (0.0, 0.5)


def test_a_late_event_older_than_the_rejection_is_discounted_like_the_others(scorer: Scorer) -> None:
    """Arrival order does not matter: an event that happened before the rejection but arrives
    after it counts as if it had arrived before."""
    early = download(LEAD, "late-guide", QUALIFIED_AT + 10, "guide")
    after = visit(LEAD, "after", QUALIFIED_AT + 2 * HOUR, "/demo")
    rejected = feedback(LEAD, "r", QUALIFIED_AT + HOUR, "rejected")
    in_order: dict[str, LeadState] = {}
    run(scorer, [*qualifying_journey(LEAD, T0), early, rejected, after], in_order)
    late: dict[str, LeadState] = {}
    run(scorer, [*qualifying_journey(LEAD, T0), rejected, after, early], late)
    at = QUALIFIED_AT + 3 * HOUR
    a, b = scorer.score_at(late[LEAD], at), scorer.score_at(in_order[LEAD], at)
    assert a.score == b.score
    assert {r.rule: (r.points, r.count) for r in a.breakdown} == {r.rule: (r.points, r.count) for r in b.breakdown}
    assert scorer.score_at(late[LEAD], at).engagement == pytest.approx(16, abs=0.05)  # only the demo visit
    assert late[LEAD].counts["download_technical"] == 1  # counted, at no value


# -- decay, requalification and terminal customers ---------------------------------------------------------


@pytest.mark.parametrize("stage", [Stage.SAL, Stage.SQL])
def test_decay_never_returns_a_lead_sales_owns_to_nurture(scorer: Scorer, stage: Stage) -> None:
    states, at = lead_in(scorer, stage)
    state = states[LEAD]
    assert state.due_at is None
    assert scorer.expire_due([state], at + 1000 * DAY_MS).nurture == []
    result = run(scorer, [visit(LEAD, "much-later", at + 500 * DAY_MS, "/blog/x")], states)
    assert (result.nurture, result.mql) == ([], [])
    assert state.stage is stage
    assert scorer.score_at(state, at + 500 * DAY_MS).score < 40  # decayed, yet still sales'


def test_only_an_mql_decays_to_nurture(scorer: Scorer) -> None:
    states, _ = lead_in(scorer, Stage.MQL)
    state = states[LEAD]
    assert state.due_at is not None
    result = scorer.expire_due([state], state.due_at)
    assert [(n.reason, t.from_stage, t.to_stage) for n, t in zip(result.nurture, result.transitions, strict=True)] == [
        ("decay", "mql", "nurture")
    ]


def test_decay_due_before_the_feedback_is_settled_first(scorer: Scorer) -> None:
    """Sales accepting a lead after decay took it back is refused, but the decay it settles is kept."""
    states, _ = lead_in(scorer, Stage.MQL)
    due = states[LEAD].due_at
    assert due is not None
    result = run(scorer, [feedback(LEAD, "slow", due + DAY_MS, "accepted")], states)
    assert [n.reason for n in result.nurture] == ["decay"]
    assert [d.reason for d in result.dead_letters] == ["invalid_transition"]
    assert result.states[LEAD].stage is Stage.NURTURE


def test_a_rejected_lead_requalifies_as_a_new_crossing(scorer: Scorer) -> None:
    states, at = lead_in(scorer, Stage.NURTURE)
    old_nurture_id = derived_event_id(LEAD, "nurture", 1)
    later = at + 10 * DAY_MS
    result = run(scorer, qualifying_journey(LEAD, later, tag="-again")[1:], states)
    (mql,) = result.mql
    state = states[LEAD]
    assert mql.crossing == 2
    assert mql.event_id == derived_event_id(LEAD, "mql", 2) != derived_event_id(LEAD, "mql", 1)
    assert state.stage is Stage.MQL
    assert state.mql_at == mql.crossed_at
    assert (state.sal_at, state.sql_at, state.won_at) == (None, None, None)
    assert [(t.from_stage, t.to_stage) for t in result.transitions] == [("nurture", "mql")]
    # Its return to nurture will be the second crossing's, with another id.
    assert state.due_at is not None
    (back,) = scorer.expire_due([state], state.due_at).nurture
    assert back.event_id == derived_event_id(LEAD, "nurture", 2) != old_nurture_id


def test_feedback_never_qualifies_a_lead_by_itself() -> None:
    scorer = with_feedback("lost_engagement_factor = 1")
    states, at = lead_in(scorer, Stage.SQL)
    result = run(scorer, [feedback(LEAD, "l", at + 1, "lost")], states)
    assert result.nurture[0].score.score >= 75  # nothing discounted
    assert result.mql == []
    assert states[LEAD].stage is Stage.NURTURE
    again = run(scorer, [visit(LEAD, "v", at + 2, "/blog/x")], states)
    assert [m.crossing for m in again.mql] == [2]  # the next marketing event does


def test_a_customer_is_terminal_for_handoffs(scorer: Scorer) -> None:
    states, at = lead_in(scorer, Stage.CUSTOMER)
    fresh = qualifying_journey(LEAD, at + 300 * DAY_MS, tag="-renewal")[1:]
    result = run(scorer, fresh, states)
    assert result.mql == []
    assert states[LEAD].stage is Stage.CUSTOMER
    assert scorer.score_at(states[LEAD], at + 300 * DAY_MS + 4_000).score >= 75


# -- state, counters and listeners ------------------------------------------------------------------------


def test_the_crossing_records_its_rules_version_and_the_feedback_its_times(scorer: Scorer) -> None:
    states, at = lead_in(scorer, Stage.CUSTOMER)
    state = states[LEAD]
    assert state.mql_rules_version == scorer.rules.version
    assert state.mql_at == QUALIFIED_AT
    assert (state.sal_at, state.sql_at, state.won_at) == (QUALIFIED_AT + HOUR, QUALIFIED_AT + 2 * HOUR, at)
    assert decode_state(encode_state(state)) == state


def test_results_carry_their_transitions_and_feedback(scorer: Scorer) -> None:
    states: dict[str, LeadState] = {}
    results = [run(scorer, qualifying_journey(LEAD, T0), states)]
    at = QUALIFIED_AT
    for i, outcome in enumerate(PATHS[Stage.SQL]):
        at += HOUR
        results.append(run(scorer, [feedback(LEAD, f"f{i}", at, outcome)], states))
    moves = [(t.from_stage, t.to_stage, t.rules_version) for r in results for t in r.transitions]
    version = scorer.rules.version
    assert moves == [("lead", "mql", version), ("mql", "sal", version), ("sal", "sql", version)]
    assert [r.feedback for r in results if r.feedback] == [{"accepted": 1}, {"sql": 1}]
