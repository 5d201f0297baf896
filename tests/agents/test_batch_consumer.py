"""How the batch consumer hands one poll to the scoring path (streams/faust_internals.py
``BatchConsumer._score_fetched``): grouped, concurrently, each group acked or rewound on its own.

The consumer's Faust and aiokafka parts are left out: only the bookkeeping the method touches
(Faust's ack structures, the read offsets, seeks) is set up. The real-broker scenarios are
tests/integration/test_batch_reliability.py and tests/reliability/.
"""

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

import pytest
from faust.transport.drivers.aiokafka import Consumer as FaustConsumer
from faust.types import TP

from streams.app import create_app
from streams.faust_internals import (
    STALL_CHECK_S,
    BatchConsumer,
    CleanAssignmentConsumer,
    HeldOffset,
    MembershipLost,
    OffsetsOnly,
    ReadAgain,
    _open_handovers_on_resume,
)
from streams.settings import settings_from_env

pytestmark = pytest.mark.agents
GENERATION = 3


def tp(topic: str, partition: int) -> TP:
    return TP(topic, partition)


def records(partition: int, first: int, count: int) -> list[Any]:
    return [SimpleNamespace(partition=partition, offset=first + i) for i in range(count)]


class FakeClient:
    """The parts of an aiokafka consumer the batch consumer's seeks use: one fetch state per
    assigned partition (replaced by a new assignment), its position, and ``seek``."""

    def __init__(self) -> None:
        self.states: dict[TP, SimpleNamespace] = {}
        self.sought: list[tuple[str, int, int]] = []
        self._subscription = SimpleNamespace(subscription=SimpleNamespace(assignment=None))

    def assign(self, *tps: TP) -> None:
        """A new assignment: fresh fetch states, no position until reset, nothing fetched yet."""
        self.states.clear()
        self.states.update({t: SimpleNamespace(_position=None, paused=False, highwater=None) for t in tps})
        assignment = SimpleNamespace(state_value=self.states.get, tps=set(tps))
        self._subscription.subscription.assignment = assignment

    def seek(self, t: TP, offset: int) -> None:
        self.states[t]._position = offset
        self.sought.append((t.topic, t.partition, offset))


def consumer(handler: Any, *tps: TP) -> Any:
    c: Any = BatchConsumer.__new__(BatchConsumer)
    c.app = SimpleNamespace(consumer_generation_id=GENERATION)
    c.flow_active = True
    c._in_batch = None
    c._seeking = None
    c._committed_offset = defaultdict(lambda: None)
    c._acked = defaultdict(list)
    c._acked_index = defaultdict(set)
    c._n_acked = 0
    c._read_offset = defaultdict(lambda: None)
    c.batch_handler = handler
    c.group_of = lambda t: t.partition
    c.client = FakeClient()
    c.client.assign(*tps)

    async def call_thread(fun: Any, *args: Any, **kwargs: Any) -> Any:
        return await fun(*args, **kwargs)

    c._thread = SimpleNamespace(_ensure_consumer=lambda: c.client, call_thread=call_thread)
    c.assignment = lambda: set(c.client.states)
    return c


def fetch(c: Any, batches: Sequence[tuple[TP, Sequence[Any]]]) -> None:
    """What a fetch leaves behind: each partition's position just past its batch, noted."""
    for t, batch in batches:
        c.client.states[t]._position = batch[-1].offset + 1
    c._fetched_at = {t: (c.client.states[t], c.client.states[t]._position) for t, _ in batches}


async def test_one_partition_numbers_batches_go_to_one_call_and_the_groups_run_concurrently() -> None:
    calls: list[list[tuple[str, int]]] = []
    both_started = asyncio.Event()

    async def handler(group: Sequence[tuple[Any, Sequence[Any]]], hold: bool) -> bool:
        calls.append([(t.topic, t.partition) for t, _ in group])
        if len(calls) == 2:
            both_started.set()
        await asyncio.wait_for(both_started.wait(), 2)  # a group run after the other never sees both
        return True

    visits0, emails0, visits1 = tp("visits", 0), tp("emails", 0), tp("visits", 1)
    c = consumer(handler, visits0, emails0, visits1)
    scored = [(visits0, records(0, 0, 3), None), (emails0, records(0, 10, 2), None), (visits1, records(1, 5, 4), 5)]
    fetch(c, [(t, b) for t, b, _ in scored])
    await c._score_fetched(scored, GENERATION)

    assert sorted(calls) == [[("visits", 0), ("emails", 0)], [("visits", 1)]]
    assert c._acked[visits0] == [0, 1, 2]
    assert c._acked[emails0] == [10, 11]
    assert c._acked[visits1] == [5, 6, 7, 8]
    assert (c._read_offset[visits0], c._read_offset[emails0], c._read_offset[visits1]) == (2, 11, 8)
    assert c.client.sought == []


async def test_a_group_that_lost_membership_is_rewound_and_the_others_are_acked() -> None:
    async def handler(group: Sequence[tuple[Any, Sequence[Any]]], hold: bool) -> bool:
        if group[0][0].partition == 1:
            raise MembershipLost("gone")
        return True

    visits0, visits1 = tp("visits", 0), tp("visits", 1)
    c = consumer(handler, visits0, visits1)
    fetch(c, [(visits0, records(0, 0, 2)), (visits1, records(1, 7, 3))])
    await c._score_fetched([(visits0, records(0, 0, 2), None), (visits1, records(1, 7, 3), 6)], GENERATION)

    assert c._acked[visits0] == [0, 1]
    assert c._acked[visits1] == []
    assert c.client.sought == [("visits", 1, 7)]  # read again from its first unscored record
    assert c._read_offset[visits1] == 7


async def test_an_unexpected_failure_is_raised_after_the_other_groups_are_acked() -> None:
    async def handler(group: Sequence[tuple[Any, Sequence[Any]]], hold: bool) -> bool:
        if group[0][0].partition == 0:
            raise RuntimeError("dead-letter topic refusing records")
        return True

    visits0, visits1 = tp("visits", 0), tp("visits", 1)
    c = consumer(handler, visits0, visits1)
    with pytest.raises(RuntimeError):
        await c._score_fetched([(visits0, records(0, 0, 2), None), (visits1, records(1, 0, 2), None)], GENERATION)
    assert c._acked[visits0] == []
    assert c._acked[visits1] == [0, 1]


async def test_nothing_is_acked_when_the_group_moved_on_meanwhile() -> None:
    c: Any = None
    visits0 = tp("visits", 0)

    async def handler(group: Sequence[tuple[Any, Sequence[Any]]], hold: bool) -> bool:
        c.app.consumer_generation_id = GENERATION + 1  # a rebalance completed while scoring
        c.client.assign(visits0)  # the same partition again, in a new assignment
        return True

    c = consumer(handler, visits0)
    fetch(c, [(visits0, records(0, 4, 3))])
    await c._score_fetched([(visits0, records(0, 4, 3), None)], GENERATION)
    assert c._acked[visits0] == []
    assert c.client.sought == []  # the new assignment reads from its committed offset


def behind(c: Any, t: TP, end: int) -> None:
    """The broker holds records of ``t`` up to ``end``, past its fetch position."""
    c.client.states[t].highwater = end


class Writes:
    """A handler that holds its writes back when offered (or not, per ``answers``), and a flush."""

    def __init__(self, *answers: bool | Exception) -> None:
        self.answers = list(answers)
        self.offered: list[bool] = []
        self.flushed: list[list[tuple[str, int, int]]] = []
        self.flush_fails: Exception | None = None

    async def handle(self, group: Sequence[tuple[Any, Sequence[Any]]], hold: bool) -> bool:
        self.offered.append(hold)
        answer = self.answers.pop(0) if self.answers else not hold
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def flush(self, batches: Sequence[tuple[Any, Sequence[Any]]]) -> None:
        self.flushed.append([(t.topic, t.partition, batch[0].offset) for t, batch in batches])
        if self.flush_fails is not None:
            raise self.flush_fails


def holding_consumer(writes: Writes, *tps: TP, hold_s: float = 5.0) -> Any:
    c = consumer(writes.handle, *tps)
    c.group_flush, c.hold_s = writes.flush, hold_s
    c.batch_topics = frozenset(t.topic for t in tps)
    return c


async def poll(c: Any, t: TP, first: int, count: int) -> None:
    batch = records(t.partition, first, count)
    fetch(c, [(t, batch)])
    await c._score_fetched([(t, batch, None)], GENERATION)


async def test_a_group_holding_its_writes_is_acked_with_the_batch_that_writes_them() -> None:
    visits0 = tp("visits", 0)
    writes = Writes(False, True)
    c = holding_consumer(writes, visits0)
    behind(c, visits0, 100_000)
    await poll(c, visits0, 0, 3)
    assert c._acked[visits0] == []  # held: its states are not in the table yet
    assert c._read_offset[visits0] == 2  # but scored: the next poll reads on
    await poll(c, visits0, 3, 2)
    assert writes.offered == [True, True]
    assert c._acked[visits0] == [0, 1, 2, 3, 4]
    assert c._unwritten == {}


async def test_held_batches_keep_their_records_offsets_only() -> None:
    visits0 = tp("visits", 0)
    writes = Writes(False, True)
    c = holding_consumer(writes, visits0)
    behind(c, visits0, 100_000)
    batch = [SimpleNamespace(partition=0, offset=offset, key=b"L1", value=b"x" * 500) for offset in (7, 8, 9)]
    fetch(c, [(visits0, batch)])
    await c._score_fetched([(visits0, batch, None)], GENERATION)
    [(held_tp, held)] = c._unwritten[0]
    assert held_tp == visits0
    assert [record.offset for record in held] == [7, 8, 9]
    assert (held[0].offset, held[-1].offset, len(held), [r.offset for r in held[1:]]) == (7, 9, 3, [8, 9])
    assert not any(hasattr(record, "value") or hasattr(record, "key") for record in held)
    await poll(c, visits0, 10, 2)
    assert c._acked[visits0] == [7, 8, 9, 10, 11]


async def test_holding_is_offered_only_while_the_group_catches_up_and_for_at_most_hold_s() -> None:
    visits0, emails0 = tp("visits", 0), tp("emails", 0)
    writes = Writes()
    c = holding_consumer(writes, visits0, emails0, hold_s=0.2)
    c.client.states[emails0]._position = 0
    behind(c, emails0, 100_000)  # the group's other topic is far behind: catching up
    await poll(c, visits0, 0, 3)  # visits fetched to its end
    await poll(c, visits0, 3, 3)
    await asyncio.sleep(0.25)
    await poll(c, visits0, 6, 3)  # held for longer than hold_s: written
    behind(c, emails0, 0)
    await poll(c, visits0, 9, 3)  # every partition of the group read to its end: written
    assert writes.offered == [True, True, False, False]
    assert c._acked[visits0] == list(range(12))
    assert holding_consumer(Writes(), visits0, hold_s=0)._may_hold(0) is False


async def test_live_traffic_a_few_records_behind_is_written_after_every_batch() -> None:
    visits0 = tp("visits", 0)
    writes = Writes()
    c = holding_consumer(writes, visits0)
    await poll(c, visits0, 0, 3)
    behind(c, visits0, 6 + c.hold_min_lag - 1)  # records keep arriving: the poll ends short of the end
    await poll(c, visits0, 3, 3)
    behind(c, visits0, 9 + c.hold_min_lag)  # a full hold_min_lag behind: catching up
    await poll(c, visits0, 6, 3)
    assert writes.offered == [False, False, True]


async def test_a_min_lag_of_zero_holds_live_traffic_too_for_at_most_hold_s() -> None:
    visits0 = tp("visits", 0)
    writes = Writes()
    c = holding_consumer(writes, visits0, hold_s=0.2)
    c.hold_min_lag = 0
    await poll(c, visits0, 0, 3)  # fetched to its end
    await poll(c, visits0, 3, 3)
    await asyncio.sleep(0.25)
    await poll(c, visits0, 6, 3)
    assert writes.offered == [True, True, False]
    assert c._acked[visits0] == list(range(9))


async def test_held_batches_are_read_again_from_the_first_held_record_when_the_handler_forgot_them() -> None:
    visits0 = tp("visits", 0)
    writes = Writes(False, False, ReadAgain("forgotten"))
    c = holding_consumer(writes, visits0)
    behind(c, visits0, 100_000)
    await poll(c, visits0, 10, 3)
    await poll(c, visits0, 13, 3)
    await poll(c, visits0, 16, 3)
    assert c._acked[visits0] == []
    assert c.client.sought == [("visits", 0, 10)]
    assert c._read_offset[visits0] == 10
    assert c._unwritten == {}


async def test_a_group_that_caught_up_is_flushed_and_acked_even_with_no_batch_of_its_own() -> None:
    visits0, visits1 = tp("visits", 0), tp("visits", 1)
    writes = Writes(False, False)
    c = holding_consumer(writes, visits0, visits1)
    behind(c, visits0, 100_000)
    behind(c, visits1, 100_000)
    await poll(c, visits0, 0, 2)
    await poll(c, visits1, 5, 2)
    behind(c, visits0, 2)  # partition 0's group read to its end: its writes are due; 1 still catches up
    await c._flush_unwritten(GENERATION)
    assert writes.flushed == [[("visits", 0, 0)]]
    assert (c._acked[visits0], c._acked[visits1]) == ([0, 1], [])
    await c._flush_unwritten(GENERATION, every=True)  # what a revocation (wait_empty) does
    assert writes.flushed[1:] == [[("visits", 1, 5)]]
    assert c._acked[visits1] == [5, 6]


async def test_held_batches_whose_flush_failed_are_read_again() -> None:
    visits0 = tp("visits", 0)
    writes = Writes(False, False)
    c = holding_consumer(writes, visits0)
    behind(c, visits0, 100_000)
    await poll(c, visits0, 0, 2)
    await poll(c, visits0, 2, 2)
    writes.flush_fails = ReadAgain("write failed")
    await c._flush_unwritten(GENERATION, every=True)
    assert writes.flushed == [[("visits", 0, 0), ("visits", 0, 2)]]
    assert c._acked[visits0] == []
    assert c.client.sought == [("visits", 0, 0)]


async def test_held_batches_are_read_again_even_after_polls_that_brought_their_partition_nothing() -> None:
    # The seek back is allowed only while nothing else moved the partition's position since its
    # last fetch, so that fetch's mark must outlive the polls without records of the partition.
    visits0, visits1 = tp("visits", 0), tp("visits", 1)
    writes = Writes(False, True)
    c = holding_consumer(writes, visits0, visits1)
    c.client._max_poll_records = 500
    c.client.assignment = lambda: set(c.client.states)
    c._held, c._unwritten, c._fetched_at = {}, {}, {}
    for t in (visits0, visits1):
        c.client.states[t]._position = 0
        behind(c, t, 100_000)
    polls = [{visits0: records(0, 0, 3)}, {visits1: records(1, 0, 2)}]

    async def fetch_records(client: Any, partitions: Any, timeout: float, max_records: int) -> dict[TP, Any]:  # noqa: ASYNC109 (aiokafka's name)
        fetched = polls.pop(0)
        for t, batch in fetched.items():
            client.states[t]._position = batch[-1].offset + 1
        return fetched

    c._thread._fetch_records = fetch_records
    for _ in range(2):
        fetched = await c._getmany(None, 1.0)
        await c._score_fetched([(t, batch, None) for t, batch in fetched.items()], GENERATION)
    assert c._acked[visits0] == []  # held
    writes.flush_fails = ReadAgain("write failed")
    await c._flush_unwritten(GENERATION, every=True)
    assert c.client.sought == [("visits", 0, 0)]
    assert c._acked[visits1] == [0, 1]


async def test_batches_held_across_a_completed_rebalance_are_neither_written_nor_acked() -> None:
    visits0 = tp("visits", 0)
    writes = Writes(False)
    c = holding_consumer(writes, visits0)
    behind(c, visits0, 100_000)
    await poll(c, visits0, 0, 2)
    c.app.consumer_generation_id = GENERATION + 1
    c.client.assign(visits0)  # the new assignment reads from its committed offset
    await c._flush_unwritten(GENERATION + 1)
    assert writes.flushed == []
    assert c._acked[visits0] == []
    assert c._unwritten == {}


async def test_records_fetched_before_the_seek_to_the_committed_offset_are_not_sought_back_after_it() -> None:
    # The stall found by the reliability tier: a batch of the old assignment, dropped after the new
    # assignment had sought its committed offset (736), was sought back to its first offset (900):
    # the worker read on from 900, never read 736-899, and Faust's commit never got past 736.
    visits0 = tp("visits", 0)
    c = consumer(None, visits0)
    fetch(c, [(visits0, records(0, 900, 50))])
    c.client.seek(visits0, 736)  # the new assignment's seek, after the fetch (Faust notes it once done)
    c.client.sought.clear()
    await c._resync([(visits0, records(0, 900, 50))])
    assert c.client.sought == []
    assert c.client.states[visits0]._position == 736


async def test_records_handed_out_after_the_seek_but_dropped_as_stale_are_read_again() -> None:
    visits0 = tp("visits", 0)
    c = consumer(None, visits0)
    fetch(c, [(visits0, records(0, 736, 20))])  # from the new assignment's position, nothing moved it since
    await c._resync([(visits0, records(0, 736, 20))])
    assert c.client.sought == [("visits", 0, 736)]
    assert c._read_offset[visits0] == 736


async def test_a_seek_to_the_committed_offsets_under_way_finishes_before_records_are_sought_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    visits0 = tp("visits", 0)
    c = consumer(None, visits0)
    fetch(c, [(visits0, records(0, 900, 50))])
    committed_fetched = asyncio.Event()
    answer = asyncio.Event()

    async def seek_to_committed() -> dict[TP, int]:  # aiokafka's: ask the coordinator, then seek
        committed_fetched.set()
        await answer.wait()
        c.client.seek(visits0, 736)
        return {visits0: 736}

    c.seek_to_committed = seek_to_committed
    seeking = asyncio.ensure_future(c.perform_seek())
    await committed_fetched.wait()
    dropping = asyncio.ensure_future(c._rewind([(visits0, records(0, 900, 50))], GENERATION))
    await asyncio.sleep(0.01)
    answer.set()
    await asyncio.gather(seeking, dropping)
    assert c.client.sought == [("visits", 0, 736)]
    assert (c.client.states[visits0]._position, c._read_offset[visits0], c._committed_offset[visits0]) == (736,) * 3


async def test_a_new_assignment_starts_without_the_bookkeeping_written_after_the_revocation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen_by_faust: list[dict[str, int]] = []

    async def faust_assignment(self: Any, assigned: set[TP], generation_id: int = 0) -> None:
        seen_by_faust.append(
            {name: len(getattr(self, name)) for name in ("_acked", "_read_offset", "_committed_offset")}
        )

    monkeypatch.setattr(FaustConsumer, "on_partitions_assigned", faust_assignment)
    c = consumer(None)
    c._gap = defaultdict(list)
    revoked = tp("visits", 2)
    # what a batch finishing while the revocation waited for it, and a failed commit, leave behind:
    c._ack_batch(revoked, records(2, 40, 3))
    c._read_offset[revoked] = 42
    c._committed_offset[revoked] = 43
    assert c._acked[revoked] == [40, 41, 42]

    await c.on_partitions_assigned({revoked}, GENERATION + 1)

    assert seen_by_faust == [{"_acked": 0, "_read_offset": 0, "_committed_offset": 0}]
    assert c._acked_index == {}
    assert c._gap == {}


@pytest.mark.parametrize(("consumption", "batch_scored"), [("batch", True), ("agent", False)])
def test_both_consumption_modes_start_each_assignment_afresh(consumption: str, batch_scored: bool) -> None:
    app = create_app(settings_from_env({"LEADSCORE_CONSUMPTION": consumption})).app
    made = app._new_consumer()
    assert type(made) is BatchConsumer  # a CleanAssignmentConsumer, with the rebalance-aware stock path
    assert bool(made.batch_topics) is batch_scored


def stock_consumer(*tps: TP, after: Any = None) -> tuple[Any, list[int]]:
    """A consumer whose stock path hands records to a callback that notes their offsets, then
    calls ``after(consumer, offset)`` (what happens while a record is being handed over)."""
    c = consumer(None, *tps)
    c.app.topics = SimpleNamespace(acks_enabled_for=lambda topic: True)
    c._to_message = lambda t, record: record
    handed: list[int] = []

    async def callback(message: Any) -> None:
        handed.append(message.offset)
        if after is not None:
            after(c, message.offset)

    async def wait_first(*coroutines: Any) -> None:
        await coroutines[0]
        for other in coroutines[1:]:
            other.close()

    c.callback, c.wait_first = callback, wait_first
    c.suspend_flow = SimpleNamespace(wait=lambda: asyncio.sleep(0))
    return c, handed


async def test_the_stock_path_hands_every_record_over_and_moves_the_read_offset() -> None:
    visits0 = tp("visits", 0)
    c, handed = stock_consumer(visits0)
    fetch(c, [(visits0, records(0, 10, 5))])
    await c._stock_path(visits0, records(0, 10, 5), 9, GENERATION)
    assert handed == [10, 11, 12, 13, 14]
    assert c._read_offset[visits0] == 14
    assert c.client.sought == []


async def test_the_stock_path_stops_at_a_completed_rebalance_without_moving_the_read_offset_past_the_new_seek() -> None:
    # A worker thawed after its session expired: while a record of its old assignment was being
    # handed over, the group completed a rebalance and the new assignment sought the committed
    # offset (5). Stock Faust then set the read offset to the record's offset (12) and dropped
    # 5-11 as already read when they came again: the partition's commit stalled at 5.
    visits0 = tp("visits", 0)

    def rebalance(c: Any, offset: int) -> None:
        if offset == 12:
            c.app.consumer_generation_id = GENERATION + 1
            c.client.assign(visits0)
            c.client.seek(visits0, 5)
            c._read_offset[visits0] = 5

    c, handed = stock_consumer(visits0, after=rebalance)
    fetch(c, [(visits0, records(0, 10, 5))])
    await c._stock_path(visits0, records(0, 10, 5), 9, GENERATION)
    assert handed == [10, 11, 12]
    assert c._read_offset[visits0] == 5
    assert c.client.sought == [("visits", 0, 5)]  # only the new assignment's seek: it reads from there


async def test_the_stock_path_reads_again_from_the_record_under_way_when_a_rebalance_begins() -> None:
    visits0 = tp("visits", 0)

    def rebalance_begins(c: Any, offset: int) -> None:
        if offset == 11:
            c.flow_active = False

    c, handed = stock_consumer(visits0, after=rebalance_begins)
    fetch(c, [(visits0, records(0, 10, 5))])
    await c._stock_path(visits0, records(0, 10, 5), 9, GENERATION)
    assert handed == [10, 11]
    assert c.client.sought == [("visits", 0, 11)]
    assert c._read_offset[visits0] == 11


@pytest.mark.parametrize("kind", [BatchConsumer, CleanAssignmentConsumer])
def test_a_message_of_an_older_generation_is_not_counted_as_done_by_the_new_assignment(kind: type) -> None:
    """Faust's stream skips a message handed out before the last rebalance and acks it; its offset,
    at or above the new assignment's committed one, must not let the commit pass it unscored."""
    c = consumer(None)
    c.__class__ = kind
    c.app.topics = SimpleNamespace(acks_enabled_for=lambda topic: True)
    c._unacked_messages = set()
    c._waiting_for_ack = None
    visits = tp("visits", 1)
    c._committed_offset[visits] = 100

    class Message(SimpleNamespace):
        __hash__ = object.__hash__  # type: ignore[assignment]  # Faust keeps unacked messages in a set

    def message(offset: int, generation: int) -> Any:
        return Message(topic="visits", tp=visits, offset=offset, generation_id=generation, acked=False)

    stale, fresh = message(102, GENERATION - 1), message(100, GENERATION)

    assert c.ack(stale) is False
    assert c.ack(fresh) is True
    assert stale.acked
    assert fresh.acked
    assert c._acked[visits] == [100]
    assert c._acked_index[visits] == {100}


async def test_no_record_is_handed_to_a_stream_between_the_seek_to_the_committed_offsets_and_the_flow_resume() -> None:
    # Faust resumes the stream partitions, awaits the seek to the committed offsets, then resumes
    # the flow, which empties every stream queue: records handed over in between were dropped
    # unprocessed (with no committed offset yet, the commit skipped them: events lost).
    visits0 = tp("visits", 0)
    c, handed = stock_consumer(visits0)
    emptied: list[list[int]] = []
    flow = SimpleNamespace(resume=lambda: emptied.append(list(handed)))
    _open_handovers_on_resume(flow, c)
    asked, answer = asyncio.Event(), asyncio.Event()

    async def seek_to_committed() -> dict[TP, int]:
        asked.set()
        await answer.wait()
        return {}

    c.seek_to_committed = seek_to_committed
    fetch(c, [(visits0, records(0, 10, 3))])
    seeking = asyncio.ensure_future(c.perform_seek())
    await asked.wait()
    handing = asyncio.ensure_future(c._stock_path(visits0, records(0, 10, 3), None, GENERATION))
    await asyncio.sleep(0.01)
    answer.set()
    await seeking
    await asyncio.sleep(0.01)
    assert handed == []  # still held: the resume that empties the queues has not come
    flow.resume()
    await handing
    assert emptied == [[]]
    assert handed == [10, 11, 12]


def stall_consumer(*tps: TP) -> Any:
    """A consumer of ``tps`` (batch-scored), each committed at 10 and fetched to 50, with every
    offset from 20 on acked: offsets 10-19 were never acked, so Faust's commit cannot pass 10."""
    c = consumer(None, *tps)
    c.batch_topics = frozenset(t.topic for t in tps)
    c._gap = defaultdict(list)  # Faust's are interval trees; none here
    stalls: list[TP] = []
    c.on_commit_stall = stalls.append
    c.stalls = stalls
    for t in tps:
        c._committed_offset[t] = 10
        c.client.states[t]._position = 50
        c.client.states[t].highwater = 50
        c._acked[t] = list(range(20, 50))
        c._acked_index[t] = set(range(20, 50))
        c._read_offset[t] = 49
    return c


async def look(c: Any, *moments: float) -> list[list[tuple[str, int]]]:
    """The partitions sought back at each look for stalled commits."""
    return [[(t.topic, t.partition) for t in await c._heal_stalled_commits(at, GENERATION)] for at in moments]


async def test_a_partition_whose_commit_stalls_while_the_worker_reads_on_is_read_again_from_its_commit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    visits0 = tp("visits", 0)
    c = stall_consumer(visits0)
    stall = c.commit_stall_s
    assert await look(c, 100.0, 100.0 + stall - STALL_CHECK_S) == [[], []]
    assert await look(c, 100.0 + stall) == [[("visits", 0)]]
    assert c.client.sought == [("visits", 0, 10)]
    assert c._read_offset[visits0] == 10  # records from 10 on are handed out again
    assert c._acked[visits0] == []  # acked afresh as read again
    assert c._acked_index[visits0] == set()
    assert c.stalls == [visits0]
    assert "commit of visits[0] stalled at offset 10" in caplog.text
    assert "30 offsets acked (20-49)" in caplog.text
    # Watched afresh from the seek: not sought again at the next look.
    assert await look(c, 100.0 + stall + STALL_CHECK_S) == [[]]


async def test_a_commit_that_moves_or_a_partition_with_nothing_read_past_it_is_not_a_stall() -> None:
    moving, idle, held, unwritten, failing, marker = (tp("visits", p) for p in range(6))
    c = stall_consumer(moving, idle, held, unwritten, failing, marker)
    stall = c.commit_stall_s
    c.client.states[idle]._position = 10  # read to its commit, nothing since
    c._acked[failing] = list(range(10, 50))  # all acked: Faust's commits fail (the broker is away)
    c.client.states[marker]._position = 11  # the one offset past the commit is a transaction marker
    c._acked[marker] = []
    c._held = {held: records(2, 50, 5)}  # records held back for time order: not acked yet
    c._unwritten = {3: [(unwritten, records(3, 10, 40))]}  # write-behind: acked once written
    assert await look(c, 100.0, 100.0 + stall / 2) == [[], []]
    c._committed_offset[moving] = 30  # committed meanwhile (then a hole again): watched from here
    c._acked[moving] = list(range(40, 50))
    assert await look(c, 100.0 + stall, 100.0 + 2 * stall - STALL_CHECK_S, 100.0 + 2 * stall) == [
        [],
        [],
        [("visits", 0)],
    ]
    assert c.client.sought == [("visits", 0, 30)]


async def test_stalls_are_looked_for_every_few_seconds_and_watched_afresh_in_a_new_generation() -> None:
    visits0 = tp("visits", 0)
    c = stall_consumer(visits0)
    stall = c.commit_stall_s
    assert await look(c, 100.0, 100.0 + STALL_CHECK_S - 1) == [[], []]
    assert c._next_stall_check == 100.0 + STALL_CHECK_S  # the second look came too soon: skipped
    # A new group generation: the partition's commit is watched from its first look there.
    assert await c._heal_stalled_commits(100.0 + stall, GENERATION + 1) == []
    assert await c._heal_stalled_commits(100.0 + 2 * stall - STALL_CHECK_S, GENERATION + 1) == []
    assert await c._heal_stalled_commits(100.0 + 2 * stall, GENERATION + 1) == [visits0]


def test_held_offsets_and_fetched_records_are_acked_alike_from_the_committed_offset() -> None:
    visits0 = tp("visits", 0)
    c = consumer(None, visits0)
    c._committed_offset[visits0] = 8
    c._ack_batch(visits0, OffsetsOnly([6, 7, 8, 9]))
    c._ack_batch(visits0, records(0, 9, 3))  # 9 already acked
    assert c._acked[visits0] == [8, 9, 10, 11]
    assert c._n_acked == 4
    assert list(OffsetsOnly([6, 7])) == [HeldOffset(6), HeldOffset(7)]


def committing_consumer(commit: Any) -> Any:
    """A batch consumer whose ``commit`` is ``commit`` and whose crash is recorded."""
    c = consumer(None)
    c.commit = commit
    c.crash_reasons = []

    async def crash(reason: BaseException) -> None:
        c.crash_reasons.append(reason)

    c.crash = crash
    return c


async def test_the_poll_loop_s_commit_runs_behind_it_one_at_a_time() -> None:
    release, began = asyncio.Event(), []

    async def commit() -> bool:
        began.append(True)
        await release.wait()
        return True

    c = committing_consumer(commit)
    assert c._commit_idle()
    c._commit_behind()  # returns at once: the loop polls on while the broker answers
    await asyncio.sleep(0)
    assert began == [True]
    assert not c._commit_idle()  # the loop starts no second one meanwhile
    release.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert c._commit_idle()
    assert c.crash_reasons == []


async def test_a_commit_under_way_finishes_before_the_revocation_s_or_the_stop_s_own(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Faust's commit after wait_empty would wait for one under way, then return without
    # committing the offsets acked since it began.
    order: list[str] = []
    release = asyncio.Event()

    async def commit() -> bool:
        await release.wait()
        order.append("background commit done")
        return True

    async def faust_wait_empty(self: Any) -> None:
        order.append("Faust's wait_empty")

    async def flush_unwritten(generation: int, every: bool = False) -> None:
        order.append("held writes flushed")

    monkeypatch.setattr(FaustConsumer, "wait_empty", faust_wait_empty)
    c = committing_consumer(commit)
    c._flush_unwritten = flush_unwritten
    c._commit_behind()
    waiting = asyncio.ensure_future(c.wait_empty())
    await asyncio.sleep(0.01)
    assert order == ["held writes flushed"]  # and waiting for the commit
    release.set()
    await waiting
    assert order == ["held writes flushed", "background commit done", "Faust's wait_empty"]


async def test_a_commit_that_fails_behind_the_loop_crashes_the_consumer(caplog: pytest.LogCaptureFixture) -> None:
    error = RuntimeError("coordinator gone")

    async def commit() -> bool:
        raise error

    c = committing_consumer(commit)
    c._commit_behind()
    for _ in range(3):
        await asyncio.sleep(0)
    assert c.crash_reasons == [error]
    assert "offset commit failed" in caplog.text
