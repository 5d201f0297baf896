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
from streams.faust_internals import BatchConsumer, CleanAssignmentConsumer, MembershipLost
from streams.settings import settings_from_env

pytestmark = pytest.mark.agents
GENERATION = 3


def tp(topic: str, partition: int) -> TP:
    return TP(topic, partition)


def records(partition: int, first: int, count: int) -> list[Any]:
    return [SimpleNamespace(partition=partition, offset=first + i) for i in range(count)]


def consumer(handler: Any) -> Any:
    c: Any = BatchConsumer.__new__(BatchConsumer)
    c.app = SimpleNamespace(consumer_generation_id=GENERATION)
    c.flow_active = True
    c._in_batch = None
    c._committed_offset = defaultdict(lambda: None)
    c._acked = defaultdict(list)
    c._acked_index = defaultdict(set)
    c._n_acked = 0
    c._read_offset = defaultdict(lambda: None)
    c.batch_handler = handler
    c.group_of = lambda t: t.partition
    c.sought = []

    async def seek(t: Any, offset: int) -> None:
        c.sought.append((t.topic, t.partition, offset))

    c.seek = seek
    c.assignment = lambda: {t for t in c._tps}
    return c


async def test_one_partition_numbers_batches_go_to_one_call_and_the_groups_run_concurrently() -> None:
    calls: list[list[tuple[str, int]]] = []
    both_started = asyncio.Event()

    async def handler(group: Sequence[tuple[Any, Sequence[Any]]]) -> None:
        calls.append([(t.topic, t.partition) for t, _ in group])
        if len(calls) == 2:
            both_started.set()
        await asyncio.wait_for(both_started.wait(), 2)  # a group run after the other never sees both

    c = consumer(handler)
    visits0, emails0, visits1 = tp("visits", 0), tp("emails", 0), tp("visits", 1)
    c._tps = [visits0, emails0, visits1]
    scored = [(visits0, records(0, 0, 3), None), (emails0, records(0, 10, 2), None), (visits1, records(1, 5, 4), 5)]
    await c._score_fetched(scored, GENERATION)

    assert sorted(calls) == [[("visits", 0), ("emails", 0)], [("visits", 1)]]
    assert c._acked[visits0] == [0, 1, 2]
    assert c._acked[emails0] == [10, 11]
    assert c._acked[visits1] == [5, 6, 7, 8]
    assert (c._read_offset[visits0], c._read_offset[emails0], c._read_offset[visits1]) == (2, 11, 8)
    assert c.sought == []


async def test_a_group_that_lost_membership_is_rewound_and_the_others_are_acked() -> None:
    async def handler(group: Sequence[tuple[Any, Sequence[Any]]]) -> None:
        if group[0][0].partition == 1:
            raise MembershipLost("gone")

    c = consumer(handler)
    visits0, visits1 = tp("visits", 0), tp("visits", 1)
    c._tps = [visits0, visits1]
    await c._score_fetched([(visits0, records(0, 0, 2), None), (visits1, records(1, 7, 3), 6)], GENERATION)

    assert c._acked[visits0] == [0, 1]
    assert c._acked[visits1] == []
    assert c.sought == [("visits", 1, 7)]  # read again from its first unscored record
    assert c._read_offset[visits1] == 7


async def test_an_unexpected_failure_is_raised_after_the_other_groups_are_acked() -> None:
    async def handler(group: Sequence[tuple[Any, Sequence[Any]]]) -> None:
        if group[0][0].partition == 0:
            raise RuntimeError("dead-letter topic refusing records")

    c = consumer(handler)
    visits0, visits1 = tp("visits", 0), tp("visits", 1)
    c._tps = [visits0, visits1]
    with pytest.raises(RuntimeError):
        await c._score_fetched([(visits0, records(0, 0, 2), None), (visits1, records(1, 0, 2), None)], GENERATION)
    assert c._acked[visits0] == []
    assert c._acked[visits1] == [0, 1]


async def test_nothing_is_acked_when_the_group_moved_on_meanwhile() -> None:
    c: Any = None

    async def handler(group: Sequence[tuple[Any, Sequence[Any]]]) -> None:
        c.app.consumer_generation_id = GENERATION + 1  # a rebalance completed while scoring

    c = consumer(handler)
    visits0 = tp("visits", 0)
    c._tps = [visits0]
    c._read_offset[visits0] = 4  # where the new assignment sought: the committed offset
    await c._score_fetched([(visits0, records(0, 4, 3), None)], GENERATION)
    assert c._acked[visits0] == []
    assert c.sought == [("visits", 0, 4)]


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


@pytest.mark.parametrize(("consumption", "kind"), [("batch", BatchConsumer), ("agent", CleanAssignmentConsumer)])
def test_both_consumption_modes_start_each_assignment_afresh(consumption: str, kind: type) -> None:
    app = create_app(settings_from_env({"LEADSCORE_CONSUMPTION": consumption})).app
    assert type(app._new_consumer()) is kind
