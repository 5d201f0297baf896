"""The stage machine: which sales feedback moves a lead from which stage to which.

Marketing moves a lead between ``lead``, ``nurture`` and ``mql`` (by score and decay); once sales
owns it (``sal``, ``sql``) only sales feedback moves it; ``customer`` is terminal. Any outcome
not in the table for the lead's stage is an impossible transition and is dead-lettered.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from scoring.rules import Rules
from scoring.state import LeadState, Stage

# outcome -> {from stage: to stage}
TRANSITIONS: Mapping[str, Mapping[Stage, Stage]] = MappingProxyType(
    {
        "accepted": {Stage.MQL: Stage.SAL},
        "rejected": {Stage.MQL: Stage.NURTURE, Stage.SAL: Stage.NURTURE},
        "sql": {Stage.MQL: Stage.SQL, Stage.SAL: Stage.SQL},  # from mql: acceptance is implied
        "won": {Stage.SQL: Stage.CUSTOMER},
        "lost": {Stage.SQL: Stage.NURTURE},
    }
)

# The reason a nurture event gives for an outcome that returns the lead to nurture.
NURTURE_REASONS: Mapping[str, str] = MappingProxyType({"rejected": "sales_rejected", "lost": "lost"})

# Stages that decay may return to nurture: only an MQL. Sales-owned leads stay where sales put them.
DECAYING: Final = frozenset({Stage.MQL})
# Stages from which a high enough score is a new MQL crossing.
QUALIFIABLE: Final = frozenset({Stage.LEAD, Stage.NURTURE})


def next_stage(stage: Stage, outcome: str) -> Stage | None:
    """The stage that ``outcome`` moves a lead in ``stage`` to, or ``None`` if it cannot."""
    return TRANSITIONS.get(outcome, {}).get(stage)


def valid_from(outcome: str) -> tuple[Stage, ...]:
    """The stages from which ``outcome`` is a valid transition."""
    return tuple(TRANSITIONS.get(outcome, {}))


@dataclass(frozen=True, slots=True)
class Refusal:
    """Sales feedback that the lead's stage does not allow: it becomes a dead letter."""

    detail: str


def apply_outcome(state: LeadState, outcome: str, occurred_at: int, rules: Rules) -> Refusal | None:
    """Move ``state`` by a sales outcome: stage, stage timestamps and engagement discount.

    Returns why it cannot (the state is then untouched): the outcome is not valid from the
    lead's stage, or it occurred before the lead entered that stage (stale feedback).
    """
    before = state.stage
    after = next_stage(before, outcome)
    if after is None:
        allowed = ", ".join(stage.value for stage in valid_from(outcome))
        return Refusal(
            f"'{outcome}' is not a valid transition for a lead in stage {before.value} (valid from: {allowed})"
        )
    entered = {Stage.MQL: state.mql_at, Stage.SAL: state.sal_at, Stage.SQL: state.sql_at}.get(before)
    if entered is not None and occurred_at < entered:
        return Refusal(f"'{outcome}' occurred before the lead entered its current stage {before.value}")
    state.stage = after
    state.due_at = None  # only an MQL has a due time
    if after is Stage.SAL or (after is Stage.SQL and state.sal_at is None):
        state.sal_at = occurred_at  # "sql" straight from "mql" implies acceptance
    if after is Stage.SQL:
        state.sql_at = occurred_at
    elif after is Stage.CUSTOMER:
        state.won_at = occurred_at
    elif after is Stage.NURTURE:
        factor = rules.lost_engagement_factor if outcome == "lost" else rules.rejected_engagement_factor
        discount(state, occurred_at, factor)
    return None


def discount(state: LeadState, at_ms: int, factor: float) -> None:
    """Multiply the engagement counted so far by ``factor`` (0 resets it) and remember the reset,
    so that a late event that occurred before ``at_ms`` is discounted alike."""
    if factor == 1.0:
        return
    for rule_id in state.values:
        state.values[rule_id] *= factor
    state.resets.append((at_ms, factor))


def reset_factor(state: LeadState, at_ms: int) -> float:
    """The share that the resets after ``at_ms`` leave of an event that occurred at ``at_ms``."""
    factor = 1.0
    for reset_at, reset_by in state.resets:
        if at_ms < reset_at:
            factor *= reset_by
    return factor
