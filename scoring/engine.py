"""The scorer: applies batches of events to lead states and decides MQL and nurture crossings.

Pure: records and states in; new states, MQL events, nurture events and dead letters out. The
per-event agent and the batch path share it unchanged.
"""

import math
from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from scoring.decay import decay_factor, time_to_fall
from scoring.errors import InvalidEvent
from scoring.events import SCORED_KINDS, Event, EventKind, decode_event
from scoring.outputs import BreakdownRow, DeadLetter, MqlEvent, NurtureEvent, Score, Transition
from scoring.rules import EngagementRule, Rules
from scoring.sources import first_touch
from scoring.stages import DECAYING, NURTURE_REASONS, QUALIFIABLE, Refusal, apply_outcome, reset_factor
from scoring.state import LeadState, Stage

_FIT_MEMO_SIZE: Final = 4096
_MATCH_MEMO_SIZE: Final = 16384
_LN2: Final = math.log(2)
_KIND_NAMES: Final = {kind: kind.value for kind in EventKind}  # ``kind.value`` is a property call
_SCORED: Final = frozenset(SCORED_KINDS)
# Final: compiled, a call through a static reference, not a look-up of the module's attribute.
_bisect_left: Final = bisect_left
_insort: Final = insort


@dataclass(slots=True, init=False)
class InputRecord:
    """One raw record of an inbound topic; ``kind`` is ``None`` for a topic we do not know. Not
    changed once built. ``timestamp`` is the record's own time (ms since the epoch, -1 unknown),
    which orders the records of several topics; scoring reads the event's ``occurred_at`` instead.

    A slotted class with its constructor written out (``init=False``): compiled, building one and
    reading its fields are native code (a named tuple's ``__new__`` runs as interpreted Python, and
    each of its field reads is a generic attribute look-up; one is built per inbound record).
    """

    kind: EventKind | None
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int

    def __init__(
        self,
        kind: EventKind | None,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        timestamp: int = -1,
    ) -> None:
        self.kind = kind
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.key = key
        self.value = value
        self.timestamp = timestamp


class Erased(NamedTuple):
    """An erased lead's marker: no personal data, only when, and how many MQL crossings it had
    (a lead that starts afresh numbers its crossings on from there, so its deterministic MQL and
    nurture event ids never repeat an erased crossing's id)."""

    at: int
    crossings: int


@dataclass(slots=True)
class BatchResult:
    """What a batch produced. ``states`` holds only the states that changed."""

    states: dict[str, LeadState] = field(default_factory=dict)
    mql: list[MqlEvent] = field(default_factory=list)
    nurture: list[NurtureEvent] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    scored: int = 0
    duplicates: int = 0
    capped: int = 0
    events_by_kind: dict[str, int] = field(default_factory=dict)
    # Every stage change, for the funnel counters; and the sales feedback applied, by outcome.
    transitions: list[Transition] = field(default_factory=list)
    feedback: dict[str, int] = field(default_factory=dict)
    # Anonymous web visits, not scored: the agents pass them to the identity topic. And the
    # (email_hash, lead_id, occurred_at) of each profile event that carried an e-mail address.
    anonymous: list[InputRecord] = field(default_factory=list)
    email_links: list[tuple[str, str, int]] = field(default_factory=list)
    # Erasures: the leads whose state is to be deleted (a tombstone; a lead in ``states`` too was
    # erased and then started afresh), the markers to keep, and the events dropped because they
    # occurred at or before their lead's erasure.
    deleted: set[str] = field(default_factory=set)
    erased: dict[str, "Erased"] = field(default_factory=dict)
    erased_dropped: int = 0


def _transition(state: LeadState, from_stage: Stage, at: int, version: str) -> Transition:
    return Transition(state.lead_id, from_stage.value, state.stage.value, at, state.mql_rules_version or version)


def _fields_read(rules: Iterable[EngagementRule]) -> tuple[str, ...]:
    """The event attributes that :meth:`EngagementRule.matches` reads for these rules."""
    names: dict[str, None] = {}
    for rule in rules:
        if rule.url is not None:
            names["path"] = None
        for name, _ in rule.when:
            names[name] = None
    return tuple(names)


def reaches(score: float, threshold: float) -> bool:
    """``round(score, 2) >= threshold``: decisions are taken on the score as reported. Rounds only
    within 0.01 of the threshold (``round`` to digits costs a decimal conversion; one decision is
    taken per event), which cannot change the answer: rounding moves a score by at most 0.005."""
    if score >= threshold + 0.01:
        return True
    if score < threshold - 0.01:
        return False
    return round(score, 2) >= threshold


def _round_rows(rows: list[BreakdownRow], total: float) -> tuple[BreakdownRow, ...]:
    """Round rows to 0.01 so that they add up exactly to the rounded total."""
    rounded = [BreakdownRow(r.rule, r.kind, round(r.points, 2), r.count) for r in rows]
    residual = round(round(total, 2) - sum(r.points for r in rounded), 2)
    if residual and rounded:
        i = max(range(len(rounded)), key=lambda j: abs(rounded[j].points))
        row = rounded[i]
        rounded[i] = BreakdownRow(row.rule, row.kind, round(row.points + residual, 2), row.count)
    return tuple(rounded)


class Scorer:
    """Scores leads with one rules file."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        # Fit, memoised in two steps: per attribute, value -> the bit mask of the fit rules it
        # matches; then the mask of all attributes -> fit (a handful of masks ever occur).
        attributes = dict.fromkeys(rule.attribute for rule in rules.fit_rules)
        self._fit_masks: tuple[tuple[str, dict[str | int, int]], ...] = tuple((name, {}) for name in attributes)
        self._fit_of_mask: dict[int, float] = {}
        # Per kind, the event attributes its engagement rules read; and what matched, by them.
        self._match_fields: dict[EventKind, tuple[str, ...]] = {
            kind: _fields_read(kind_rules) for kind, kind_rules in rules.by_kind.items()
        }
        self._match_memo: dict[tuple[object, ...], tuple[EngagementRule, ...]] = {}

    # -- the score at an instant -------------------------------------------------------------

    def _fit_rows(self, state: LeadState) -> list[BreakdownRow]:
        return [
            BreakdownRow(rule.id, "fit", rule.points, 1)
            for rule in self.rules.fit_rules
            if rule.matches(state.profile.get(rule.attribute))
        ]

    def _engagement_total(self, state: LeadState, at_ms: int) -> float:
        by_id = self.rules.by_id
        values = state.values
        total = 0.0
        if at_ms == state.ref_ms:  # the common case right after an event: nothing has decayed
            # A loop, not sum(): compiled, it adds unboxed floats (sum() adds float objects). The
            # values of rules no longer in the rules file (a state older than its rules) are left out.
            for rule_id, value in values.items():
                if rule_id in by_id:
                    total += value
            return total
        elapsed = at_ms - state.ref_ms
        for rule_id, value in values.items():
            rule = by_id.get(rule_id)
            if rule is not None:
                # decay_factor, inlined (math.pow, not ``**``: a native call when compiled, see there)
                total += value * math.pow(2.0, -elapsed / rule.half_life_ms)
        return total

    def _fit_total(self, state: LeadState) -> float:
        # Fit depends only on the profile, which changes rarely: kept on the state until a profile
        # event changes it (_apply), else built from memoised per-attribute matches.
        memo = state.fit_memo
        if memo is not None and memo[0] is self.rules:
            return memo[1]
        profile = state.profile
        mask = 0
        for attribute, masks in self._fit_masks:
            value = profile.get(attribute)
            if value is not None:
                found = masks.get(value)
                if found is None:
                    found = self._value_mask(attribute, value, masks)
                mask |= found
        fit = self._fit_of_mask.get(mask)
        if fit is None:
            fit = self._fit_of_mask[mask] = self._mask_fit(mask)
        state.fit_memo = (self.rules, fit)
        return fit

    def _value_mask(self, attribute: str, value: str | int, masks: dict[str | int, int]) -> int:
        """The bit mask (bit i for ``fit_rules[i]``) of the fit rules on ``attribute`` that ``value`` matches."""
        mask = 0
        for i, rule in enumerate(self.rules.fit_rules):
            if rule.attribute == attribute and rule.matches(value):
                mask |= 1 << i
        if len(masks) >= _FIT_MEMO_SIZE:
            masks.clear()
        masks[value] = mask
        return mask

    def _mask_fit(self, mask: int) -> float:
        """The fit of the rules in ``mask``: their points summed in rule order, then clamped."""
        rules = self.rules
        raw = sum((rule.points for i, rule in enumerate(rules.fit_rules) if mask >> i & 1), 0.0)
        return min(max(raw, rules.fit_min), rules.fit_max)

    def _total(self, state: LeadState, at_ms: int) -> float:
        rules = self.rules
        engagement = self._engagement_total(state, at_ms)
        return self._fit_total(state) + min(max(engagement, rules.engagement_min), rules.engagement_max)

    def reported_score(self, state: LeadState, at_ms: int) -> float:
        """The score at ``at_ms`` as reported and decided on (rounded to 0.01), without a breakdown."""
        return round(self._total(state, at_ms), 2)

    def score_at(self, state: LeadState, at_ms: int) -> Score:
        """The lead's score at ``at_ms`` with a breakdown whose rows add up to it."""
        rules = self.rules
        rows = self._fit_rows(state)
        fit_raw = sum((row.points for row in rows), 0.0)  # a float (0.0, not 0) without fit rows too
        fit = min(max(fit_raw, rules.fit_min), rules.fit_max)
        if fit != fit_raw:
            name = "fit_cap" if fit_raw > fit else "fit_floor"
            rows.append(BreakdownRow(name, "adjustment", fit - fit_raw, 0))
        engagement_raw = 0.0
        for rule_id, value in state.values.items():
            rule = rules.by_id.get(rule_id)
            if rule is None:
                continue
            points = value * decay_factor(at_ms - state.ref_ms, rule.half_life_ms)
            engagement_raw += points
            rows.append(BreakdownRow(rule_id, "engagement", points, state.counts.get(rule_id, 0)))
        engagement = min(max(engagement_raw, rules.engagement_min), rules.engagement_max)
        if engagement != engagement_raw:
            name = "engagement_cap" if engagement_raw > engagement else "engagement_floor"
            rows.append(BreakdownRow(name, "adjustment", engagement - engagement_raw, 0))
        total = fit + engagement
        return Score(
            score=round(total, 2),
            fit=round(fit, 2),
            engagement=round(engagement, 2),
            breakdown=_round_rows(rows, total),
        )

    # -- decay to nurture -----------------------------------------------------------------------

    def due_at(self, state: LeadState, after_ms: int) -> int | None:
        """The first instant after ``after_ms`` at which a qualified lead's decayed score falls
        below the nurture threshold, or ``None`` if it never does."""
        rules = self.rules
        # Decisions are taken on the score as reported, rounded to 0.01.
        limit = rules.nurture_threshold - 0.005 - self._fit_total(state)
        if limit > rules.engagement_max:
            return after_ms
        if limit <= rules.engagement_min:
            return None
        in_use = {rules.by_id[r].half_life_ms for r, v in state.values.items() if v and r in rules.by_id}
        if len(in_use) <= 1:
            value = self._engagement_total(state, after_ms)
            wait = time_to_fall(value, limit, in_use.pop()) if in_use else 0.0
            if wait is None:
                return None
            candidate = after_ms + math.ceil(wait)
        elif all(v >= 0 for v in state.values.values()):
            # Several half-lives: a sum of decaying exponentials, convex and decreasing, so
            # Newton's method from the left converges to the crossing from below in a few steps.
            candidate = self._newton_crossing(state, after_ms, limit)
        else:
            longest = max(r.half_life_ms for r in rules.engagement_rules)
            low, high = after_ms, after_ms + 64 * longest
            if self._engagement_total(state, high) >= limit:
                return None
            while high - low > 1:
                middle = (low + high) // 2
                if self._engagement_total(state, middle) < limit:
                    high = middle
                else:
                    low = middle
            candidate = high
        while reaches(self._total(state, candidate), rules.nurture_threshold):
            candidate += 1  # the closed form lands on the boundary; step past float rounding
        return candidate

    def _newton_crossing(self, state: LeadState, after_ms: int, limit: float) -> int:
        """The first millisecond at which the engagement falls below ``limit`` (all values >= 0)."""
        by_id = self.rules.by_id
        terms = [(value, by_id[rule_id].half_life_ms) for rule_id, value in state.values.items() if rule_id in by_id]
        t = float(after_ms)
        for _ in range(60):
            elapsed = t - state.ref_ms
            decayed = [v * math.pow(2.0, -elapsed / h) for v, h in terms]  # decay_factor, once per term
            level = sum(decayed)
            if level < limit:
                break
            slope = -sum([d * _LN2 / h for d, (_, h) in zip(decayed, terms, strict=True)])
            step = (level - limit) / -slope if slope < 0 else 0.0
            if step < 0.5:
                break
            t += step
        return math.ceil(t)

    def settle(self, state: LeadState, now_ms: int) -> NurtureEvent | None:
        """Return a qualified lead to nurture if its decayed score fell below the nurture
        threshold by ``now_ms``; the event carries the exact instant it fell."""
        if state.stage not in DECAYING or state.due_at is None or state.due_at > now_ms:
            return None
        at = state.due_at
        if reaches(self._total(state, at), self.rules.nurture_threshold):
            state.due_at = self.due_at(state, at)  # not monotone (negative points): look again
            return self.settle(state, now_ms)
        state.stage = Stage.NURTURE
        state.due_at = None
        return self._nurture(state, at, "decay")

    # -- applying events --------------------------------------------------------------------------

    def _rebase(self, state: LeadState, to_ms: int) -> None:
        by_id = self.rules.by_id
        elapsed = to_ms - state.ref_ms
        values = state.values
        unknown: list[str] = []
        for rule_id, value in values.items():  # values change in place, keys only after the loop
            rule = by_id.get(rule_id)
            if rule is None:
                unknown.append(rule_id)
            else:
                values[rule_id] = value * math.pow(2.0, -elapsed / rule.half_life_ms)  # decay_factor, inlined
        for rule_id in unknown:
            del values[rule_id]
        state.ref_ms = to_ms

    def _matching(self, kind: EventKind, attrs: dict[str, Any]) -> tuple[EngagementRule, ...]:
        """The engagement rules of ``kind`` that an event's attributes match, memoised by the
        attributes the rules read (pages and campaigns repeat)."""
        fields = self._match_fields[kind]
        if len(fields) == 1:  # the common case: one attribute read, no list built for the key
            key: tuple[object, ...] = (kind, attrs.get(fields[0]))
        else:
            key = (kind, *[attrs.get(name) for name in fields])
        found = self._match_memo.get(key)
        if found is None:
            found = tuple(rule for rule in self.rules.by_kind[kind] if rule.matches(attrs))
            if len(self._match_memo) >= _MATCH_MEMO_SIZE:
                self._match_memo.clear()
            self._match_memo[key] = found
        return found

    def _count(self, state: LeadState, rule: EngagementRule, at_ms: int) -> bool:
        """Add one event of ``rule`` at ``at_ms``; return False if the rule's cap held it back.

        A cap counts the earliest N events of each fixed window, so that the score does not
        depend on the order in which events arrive.
        """
        rule_id = rule.id
        contribution = rule.points * math.pow(2.0, -(state.ref_ms - at_ms) / rule.half_life_ms)  # decay_factor
        if state.resets:  # else the reset factor is 1.0
            contribution *= reset_factor(state, at_ms)
        cap = rule.cap
        counts = state.counts
        if cap is not None:
            counted = state.cap_counted.get(rule_id)
            if counted is None:
                counted = state.cap_counted[rule_id] = []
            window_ms = cap.window_ms
            start = at_ms - at_ms % window_ms  # the fixed window of at_ms: [start, start + window_ms)
            end = _bisect_left(counted, start + window_ms)
            if end - _bisect_left(counted, start) >= cap.count:
                if at_ms >= counted[end - 1]:
                    return False
                evicted = counted.pop(end - 1)
                contribution -= (
                    rule.points * decay_factor(state.ref_ms - evicted, rule.half_life_ms) * reset_factor(state, evicted)
                )
                counts[rule_id] -= 1
            _insort(counted, at_ms)
        values = state.values
        values[rule_id] = values.get(rule_id, 0.0) + contribution
        counts[rule_id] = counts.get(rule_id, 0) + 1
        return True

    def _forget_old(self, state: LeadState) -> None:
        """Keep the duplicates memory within the late window and its size limit."""
        rules = self.rules
        assert state.last_event_at is not None
        horizon = state.last_event_at - rules.late_window_ms
        if state.resets:  # no event older than the horizon is counted any more: nothing to discount
            state.resets = [(at, f) for at, f in state.resets if at > max(horizon, state.seen_floor)]
        if len(state.seen) <= rules.max_tracked_events:
            return
        keep = sorted(state.seen.items(), key=lambda item: item[1])
        excess = max(len(keep) - rules.max_tracked_events * 3 // 4, 0)
        cut = max(keep[excess - 1][1] if excess else horizon, horizon)
        state.seen = {eid: at for eid, at in keep if at > cut}
        state.seen_floor = floor = max(state.seen_floor, cut)
        # A counted event is forgotten once its cap window has closed (every event at or before the
        # floor is refused); one whose window still takes events is kept, or the cap would count
        # anew within it.
        by_id = self.rules.by_id
        for rule_id, counted in list(state.cap_counted.items()):
            rule = by_id.get(rule_id)
            cap = None if rule is None else rule.cap
            if cap is None:  # a rule no longer capped: kept whole until all of it is at or before the floor
                kept = bool(counted) and counted[-1] > floor
            else:  # the window of t has closed when it ends at or before the floor, that is t < cut
                del counted[: _bisect_left(counted, (floor + 1) // cap.window_ms * cap.window_ms)]
                kept = bool(counted)
            if not kept:
                del state.cap_counted[rule_id]

    def _apply(
        self, state: LeadState, event: Event, now_ms: int, outputs: list[object], pending: dict[str, int]
    ) -> int:
        """Apply one event to its lead's state; return the number of engagement rules counted.

        Appends what it caused to ``outputs``: MQL and nurture events, stage transitions, and a
        refusal for sales feedback the lead's stage does not allow. Raises :class:`InvalidEvent`
        for an event that is too far in the future or too late to be counted exactly once.

        ``pending`` holds the batch's MQLs whose due time is still to be computed, with the
        instant to compute it from (see :meth:`_schedule`).
        """
        rules = self.rules
        occurred = event.occurred_at
        if occurred > now_ms + rules.max_future_skew_ms:
            raise InvalidEvent("timestamp_out_of_range", "occurred_at is in the future")
        last = state.last_event_at
        if occurred <= state.seen_floor or (last is not None and occurred < last - rules.late_window_ms):
            raise InvalidEvent("too_late", "occurred_at is older than the late window of this lead's latest event")
        at = occurred if last is None or occurred > last else last
        lead_id = state.lead_id
        # A pending MQL's score only decreases: it has fallen by ``at`` exactly when its due time
        # is at or before ``at``, so the due time is computed only then (or at the batch's end).
        if pending and lead_id in pending and not reaches(self._total(state, at), rules.nurture_threshold):
            state.due_at = self.due_at(state, pending.pop(lead_id))
        due = state.due_at
        if due is not None and due <= at:  # else settle has nothing to do
            self._settle_into(state, at, outputs)
        kind = event.kind
        feedback = kind is EventKind.SALES_FEEDBACK
        if feedback:
            refusal = self._feedback(state, event, at, outputs)
            if refusal is not None:
                outputs.append(refusal)  # the state keeps no trace of a refused event
                return 0

        state.seen[event.event_id] = occurred
        state.last_event_at = at
        counted = 0
        if kind is EventKind.LEAD_PROFILE:
            profile, profile_at = state.profile, state.profile_at
            for name, value in event.attrs.items():
                if profile_at.get(name, -1) <= occurred:
                    profile[name] = value
                    profile_at[name] = occurred
                    state.fit_memo = None  # the fit is computed again from the new profile
        elif kind in _SCORED:
            if at > state.ref_ms:
                self._rebase(state, at)
            attrs = event.attrs
            for rule in self._matching(kind, attrs):
                counted += self._count(state, rule, occurred)
            if kind is EventKind.WEB_VISIT and (state.source_at is None or occurred < state.source_at):
                state.source, state.source_at = first_touch(attrs), occurred
        if not feedback:
            first = state.first_event_at
            if first is None or occurred < first:
                state.first_event_at = occurred
        if state.resets or len(state.seen) > rules.max_tracked_events:  # else nothing to forget
            self._forget_old(state)
        if not feedback:  # sales feedback never qualifies a lead by itself
            self._decide(state, event, at, outputs)
        self._schedule(state, at, pending)
        return counted

    def _schedule(self, state: LeadState, at: int, pending: dict[str, int]) -> None:
        """Set an MQL's due time after an event at ``at``, or leave it pending until the batch's
        end (or its lead's next event that finds it due) when its score only decreases from
        there: a batch holds several events of a lead, and the due time of all but the last
        would be computed for nothing."""
        # ``in`` and ``del``, not ``pop(key, None)``: compiled, a direct dict operation, not a method call.
        if state.stage not in DECAYING:
            if state.lead_id in pending:
                del pending[state.lead_id]
            return
        for value in state.values.values():
            if value < 0:  # not monotone: the check by the score at the next event would not do
                if state.lead_id in pending:
                    del pending[state.lead_id]
                state.due_at = self.due_at(state, at)
                return
        state.due_at = None  # until computed: no stale due time is read meanwhile
        pending[state.lead_id] = at

    def _settle_into(self, state: LeadState, at: int, outputs: list[object]) -> None:
        nurtured = self.settle(state, at)
        if nurtured is not None:
            outputs.append(nurtured)
            outputs.append(_transition(state, Stage.MQL, nurtured.at, self.rules.version))

    def _decide(self, state: LeadState, event: Event, at: int, outputs: list[object]) -> None:
        """Cross to MQL, or back to nurture on a negative signal, on the score as reported."""
        rules = self.rules
        engagement = self._engagement_total(state, at)  # self._total, inlined
        total = self._fit_total(state) + min(max(engagement, rules.engagement_min), rules.engagement_max)
        before = state.stage
        if before in QUALIFIABLE and reaches(total, rules.mql_threshold):
            state.stage = Stage.MQL
            state.crossings += 1
            state.mql_at = at
            state.sal_at = state.sql_at = state.won_at = None
            state.mql_rules_version = rules.version
            state.trigger_event_id = event.event_id
            outputs.append(
                MqlEvent(
                    lead_id=state.lead_id,
                    crossing=state.crossings,
                    score=self.score_at(state, at),
                    threshold=rules.mql_threshold,
                    crossed_at=at,
                    triggering_event_id=event.event_id,
                    rules_version=rules.version,
                )
            )
        elif before is Stage.MQL and not reaches(total, rules.nurture_threshold):
            state.stage = Stage.NURTURE
            state.due_at = None
            outputs.append(self._nurture(state, at, "negative_signal"))
        else:
            return
        outputs.append(_transition(state, before, at, rules.version))

    def _nurture(self, state: LeadState, at: int, reason: str) -> NurtureEvent:
        return NurtureEvent(
            lead_id=state.lead_id,
            crossing=state.crossings,
            score=self.score_at(state, at),
            threshold=self.rules.nurture_threshold,
            at=at,
            reason=reason,
            rules_version=self.rules.version,
        )

    # -- sales feedback ---------------------------------------------------------------------------

    def _feedback(self, state: LeadState, event: Event, at: int, outputs: list[object]) -> Refusal | None:
        """Move the lead along the stage machine, or return why its stage does not allow it."""
        outcome = str(event.attrs["outcome"])
        before = state.stage
        refusal = apply_outcome(state, outcome, event.occurred_at, self.rules)
        if refusal is not None:
            return refusal
        if state.stage is Stage.NURTURE:
            outputs.append(self._nurture(state, at, NURTURE_REASONS[outcome]))
        outputs.append(_transition(state, before, event.occurred_at, self.rules.version))
        return None

    # -- batches ------------------------------------------------------------------------------------

    def process_batch(
        self,
        records: Iterable[InputRecord],
        states: Mapping[str, LeadState],
        now_ms: int,
        erased: Mapping[str, Erased] | None = None,
    ) -> BatchResult:
        """Score a batch of records (in offset order) against their leads' states.

        ``states`` holds the known states of the batch's leads; a lead absent from it is new.
        ``erased`` holds the erasure markers of the batch's leads.
        Every record ends either scored, a counted duplicate, a dead letter with its reason, an
        erasure applied, a counted drop (an erased lead's event from before its erasure), or (an
        anonymous web visit) in ``anonymous`` for the identity agent.
        """
        result = BatchResult()
        changed = result.states
        marks = result.erased
        deleted = result.deleted
        anonymous = result.anonymous
        dead_letters = result.dead_letters
        events_by_kind = result.events_by_kind
        known_marks = erased or {}
        # Most batches hold no erased lead: their events then skip the look-up (a generic method
        # call on a Mapping, when compiled).
        any_known_marks = bool(known_marks)
        outputs: list[object] = []
        pending: dict[str, int] = {}
        scored = duplicates = capped = 0
        for record in records:
            kind = record.kind
            try:
                if kind is None:
                    raise InvalidEvent("unknown_topic", f"no event kind for topic {record.topic!r}")
                event = decode_event(kind, record.key, record.value)
                lead_id = event.lead_id
                if not lead_id:  # anonymous: no lead yet, the identity agent holds it until one is known
                    anonymous.append(record)
                    continue
                mark = marks.get(lead_id) or (known_marks.get(lead_id) if any_known_marks else None)
                state = changed.get(lead_id)
                if state is None and lead_id not in deleted:
                    state = states.get(lead_id)
                if kind is EventKind.ERASURE:
                    self._erase(result, event, mark, state, now_ms)
                    pending.pop(lead_id, None)
                    continue
                if mark is not None and event.occurred_at <= mark.at:
                    result.erased_dropped += 1  # not dead-lettered: that topic would keep the data
                    continue
                if state is None:
                    state = LeadState(lead_id=lead_id, crossings=mark.crossings if mark else 0)
                if event.event_id in state.seen:
                    duplicates += 1
                    continue
                if outputs:
                    outputs = []
                # Called as a method, not through a bound method kept in a local: compiled, a direct call.
                counted = self._apply(state, event, now_ms, outputs, pending)
            except InvalidEvent as exc:
                dead_letters.append(_dead_letter(record, exc.reason, exc.detail))
                continue
            except Exception as error:  # a bug must not lose the record: dead-letter it
                # Not ``exc`` again: compiled, a name bound by two handlers keeps the first one's type.
                detail = f"{type(error).__name__}: {str(error)[:200]}"
                dead_letters.append(_dead_letter(record, "scoring_error", detail))
                continue
            if outputs:
                refused = [o for o in outputs if isinstance(o, Refusal)]
                if refused:
                    dead_letters.append(_dead_letter(record, "invalid_transition", refused[0].detail))
                    if len(outputs) > 1:  # the decay settled before the refusal still happened
                        changed[lead_id] = state
                        _collect(result, outputs)
                    continue
            changed[lead_id] = state
            scored += 1
            name = _KIND_NAMES[kind]
            events_by_kind[name] = events_by_kind.get(name, 0) + 1
            if counted == 0 and kind in _SCORED:
                capped += 1
            elif kind is EventKind.SALES_FEEDBACK:
                outcome = str(event.attrs["outcome"])
                result.feedback[outcome] = result.feedback.get(outcome, 0) + 1
            if event.email_hash is not None:
                result.email_links.append((event.email_hash, lead_id, event.occurred_at))
            if outputs:
                _collect(result, outputs)
        for lead_id, after in pending.items():
            state = changed[lead_id]
            state.due_at = self.due_at(state, after)
        result.scored = scored
        result.duplicates = duplicates
        result.capped = capped
        return result

    def _erase(
        self, result: BatchResult, event: Event, mark: Erased | None, state: LeadState | None, now_ms: int
    ) -> None:
        """Delete the lead's state and keep (or move later) its erasure marker."""
        if event.occurred_at > now_ms + self.rules.max_future_skew_ms:
            raise InvalidEvent("timestamp_out_of_range", "requested_at is in the future")
        result.states.pop(event.lead_id, None)
        result.deleted.add(event.lead_id)
        at = max(event.occurred_at, mark.at if mark else 0)
        crossings = max(state.crossings if state else 0, mark.crossings if mark else 0)
        result.erased[event.lead_id] = Erased(at, crossings)

    def expire_due(self, states: Iterable[LeadState], now_ms: int) -> BatchResult:
        """Return to nurture the qualified leads whose decayed score fell by ``now_ms``."""
        result = BatchResult()
        for state in states:
            outputs: list[object] = []
            self._settle_into(state, now_ms, outputs)
            if outputs:
                _collect(result, outputs)
                result.states[state.lead_id] = state
            elif state.stage in DECAYING and state.due_at is not None and state.due_at > now_ms:
                result.states[state.lead_id] = state  # re-scheduled after a non-monotone look
        return result


def _dead_letter(record: InputRecord, reason: str, detail: str) -> DeadLetter:
    return DeadLetter(reason, detail, record.topic, record.partition, record.offset, record.key, record.value)


def _collect(result: BatchResult, outputs: list[object]) -> None:
    for output in outputs:
        if isinstance(output, MqlEvent):
            result.mql.append(output)
        elif isinstance(output, NurtureEvent):
            result.nurture.append(output)
        elif isinstance(output, Transition):
            result.transitions.append(output)
