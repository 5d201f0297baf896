"""Dry-run scoring of a history: what a rules file would have done, deterministically.

Records are decoded, ordered by ``occurred_at`` (ties keep their input order) and scored one at a
time with the clock at each event's own time, exactly as a live worker scores events that arrive
on time; then decay is settled at the end. Nothing here touches live state. An erased lead's
events that occurred at or before its erasure are dropped from the start, as a worker drops them
once the erasure is known: a replay never qualifies a lead from a history it was asked to forget.
"""

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from scoring.engine import Erased, InputRecord, Scorer
from scoring.errors import InvalidEvent
from scoring.events import EventKind, decode_event
from scoring.outputs import DeadLetter, MqlEvent, NurtureEvent
from scoring.state import LeadState

# (at, score): a lead's reported score reached a new maximum at that instant.
Ascent = tuple[int, float]


@dataclass(slots=True)
class ReplayResult:
    """What one rules file made of a history."""

    rules_version: str
    records: int = 0
    mql: list[MqlEvent] = field(default_factory=list)
    nurture: list[NurtureEvent] = field(default_factory=list)  # during the history
    settled: list[NurtureEvent] = field(default_factory=list)  # decay settled at the end
    dead_letters: list[DeadLetter] = field(default_factory=list)
    duplicates: int = 0
    erased_dropped: int = 0  # events of erased leads from before their erasure: never scored
    states: dict[str, LeadState] = field(default_factory=dict)
    # Per lead, each new maximum of its score after an event (only with ``track_peaks``).
    ascents: dict[str, list[Ascent]] = field(default_factory=dict)
    first_ms: int | None = None
    last_ms: int | None = None
    until_ms: int | None = None

    def crossing_times(self) -> dict[str, tuple[int, ...]]:
        """Per lead that qualified, the instants of its MQL crossings."""
        times: dict[str, list[int]] = {}
        for event in self.mql:
            times.setdefault(event.lead_id, []).append(event.crossed_at)
        return {lead: tuple(at) for lead, at in times.items()}

    def peak(self, lead_id: str) -> float:
        """The highest score the lead reached after any of its events (0 if none was scored)."""
        ascents = self.ascents.get(lead_id)
        return ascents[-1][1] if ascents else 0.0


def in_time_order(records: Iterable[InputRecord]) -> tuple[list[tuple[int, InputRecord]], list[DeadLetter]]:
    """The decodable records as (occurred_at, record) in time order, stable for ties; and the
    dead letters of the records that cannot be decoded (they have no time to order by)."""
    timed: list[tuple[int, int, InputRecord]] = []
    letters: list[DeadLetter] = []
    for index, record in enumerate(records):
        try:
            if record.kind is None:
                raise InvalidEvent("unknown_topic", f"no event kind for topic {record.topic!r}")
            occurred = decode_event(record.kind, record.key, record.value).occurred_at
        except InvalidEvent as exc:
            letters.append(
                DeadLetter(
                    exc.reason, exc.detail, record.topic, record.partition, record.offset, record.key, record.value
                )
            )
            continue
        timed.append((occurred, index, record))
    timed.sort(key=lambda item: (item[0], item[1]))
    return [(occurred, record) for occurred, _, record in timed], letters


def erasures(records: Iterable[InputRecord]) -> dict[str, Erased]:
    """The erasure requests of a history: lead_id -> the latest requested_at (no crossings: a
    replay drops an erased lead's history from the start)."""
    erased: dict[str, Erased] = {}
    for record in records:
        if record.kind is EventKind.ERASURE:
            try:
                event = decode_event(record.kind, record.key, record.value)
            except InvalidEvent:
                continue  # not an erasure: the scoring pass dead-letters this record with its reason
            previous = erased.get(event.lead_id)
            erased[event.lead_id] = Erased(max(event.occurred_at, previous.at if previous else 0), 0)
    return erased


def replay(
    scorer: Scorer,
    records: Sequence[InputRecord],
    until_ms: int | None = None,
    track_peaks: bool = False,
    progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Score ``records`` in time order with the clock at each event's time, then settle decay
    at ``until_ms`` (default: the last event's time). ``progress`` is called with the number of
    records done every 1,000 records and at the end."""
    result = ReplayResult(rules_version=scorer.rules.version, records=len(records))
    ordered, result.dead_letters = in_time_order(records)
    erased = erasures(record for _, record in ordered)  # an erased lead's history is never replayed
    states = result.states
    for done, (occurred, record) in enumerate(ordered, 1):
        batch = scorer.process_batch([record], states, occurred, erased)
        for lead_id in batch.deleted:
            states.pop(lead_id, None)
        states.update(batch.states)
        result.erased_dropped += batch.erased_dropped
        result.mql.extend(batch.mql)
        result.nurture.extend(batch.nurture)
        result.dead_letters.extend(batch.dead_letters)
        result.duplicates += batch.duplicates
        if track_peaks and batch.scored:
            _track(scorer, result.ascents, batch.states)
        if progress is not None and done % 1000 == 0:
            progress(done)
    if ordered:
        result.first_ms, result.last_ms = ordered[0][0], ordered[-1][0]
    result.until_ms = until_ms if until_ms is not None else result.last_ms
    if result.until_ms is not None:
        settled = scorer.expire_due(list(states.values()), result.until_ms)
        result.settled = settled.nurture
    if progress is not None:
        progress(len(ordered))
    return result


def _track(scorer: Scorer, ascents: dict[str, list[Ascent]], changed: Mapping[str, LeadState]) -> None:
    for lead_id, state in changed.items():
        if state.last_event_at is None:
            continue
        score = scorer.reported_score(state, state.last_event_at)
        lead = ascents.setdefault(lead_id, [])
        if not lead or score > lead[-1][1]:
            lead.append((state.last_event_at, score))


@dataclass(frozen=True, slots=True)
class ReplayDiff:
    """How a candidate's MQLs differ from a baseline's on the same history."""

    only_candidate: tuple[str, ...]
    only_baseline: tuple[str, ...]
    # lead -> (baseline crossing times, candidate crossing times), for leads that qualify under both
    changed: Mapping[str, tuple[tuple[int, ...], tuple[int, ...]]]
    same: int


def compare(candidate: ReplayResult, baseline: ReplayResult) -> ReplayDiff:
    """Leads that qualify under only one of the rules, and leads whose crossing times changed."""
    new, old = candidate.crossing_times(), baseline.crossing_times()
    both = sorted(set(new) & set(old))
    changed = {lead: (old[lead], new[lead]) for lead in both if old[lead] != new[lead]}
    return ReplayDiff(
        only_candidate=tuple(sorted(set(new) - set(old))),
        only_baseline=tuple(sorted(set(old) - set(new))),
        changed=changed,
        same=len(both) - len(changed),
    )
