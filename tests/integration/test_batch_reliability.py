"""The batch path under failure: kill -9 mid-stream, and two workers rebalancing under load.

After each, the lead table (read back from its changelog topic) equals a replay of the input
through the pure scoring core, every changelog record sits on its lead's partition, every input
partition is consumed to its end, and no threshold crossing has two event ids.
"""

import asyncio
import math
import signal
import time
from collections import defaultdict
from collections.abc import Callable, Mapping

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from scoring.engine import InputRecord, Scorer
from scoring.events import EventKind
from scoring.state import LeadState, decode_state
from streams.settings import TopicNames, settings_from_env
from streams.synthetic import DAY_MS, history
from streams.topics import ensure_topics
from tests.integration.kafka import Received, produce, read_until, run
from tests.integration.worker import WorkerProcess

NOW_MS = int(time.time() * 1000)


def create_topics(bootstrap: str, names: str) -> None:
    """Create the test's topics with the workers' partition count before producing."""
    env = {"LEADSCORE_BOOTSTRAP": bootstrap, "LEADSCORE_TOPIC_PREFIX": names, "LEADSCORE_PARTITIONS": "4"}
    run(ensure_topics(settings_from_env(env)))


def synthetic_input(names: str, leads: int) -> list[tuple[str, bytes | None, bytes | None]]:
    """A realistic history (ending a day ago), as (topic, key, value) in time order."""
    topics = {kind: names + topic for topic, kind in TopicNames().inbound().items()}
    events = [e for j in history(7, leads, NOW_MS - 90 * DAY_MS, 15 * DAY_MS) for e in j.events]
    events = [e for e in events if e.payload["occurred_at"] < NOW_MS - DAY_MS]  # nothing in the future
    events.sort(key=lambda e: e.payload["occurred_at"])
    return [(topics[e.kind], e.lead_id.encode(), orjson.dumps(e.payload)) for e in events]


async def read_all(bootstrap: str, topics: list[str]) -> list[Received]:
    """Every record of the topics, from the beginning to their current end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics(topics)
        finally:
            await admin.close()
        partitions = [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        records: list[Received] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < ends[tp] for tp in partitions])

        while await behind():
            for tp, messages in (await consumer.getmany(timeout_ms=1000)).items():
                records += [Received(tp.topic, tp.partition, m.offset, m.key, m.value, []) for m in messages]
        return records
    finally:
        await consumer.stop()


async def unconsumed(bootstrap: str, group: str, topics: list[str]) -> list[str]:
    """The partitions of the topics the group has not committed up to their end, as
    ``topic[partition] committed/end``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
        described = await admin.describe_topics(topics)
        partitions = [TopicPartition(d["topic"], p["partition"]) for d in described for p in d["partitions"]]
        assert len({tp.topic for tp in partitions}) == len(topics), described
        ends = await consumer.end_offsets(partitions)
        return [
            f"{tp.topic}[{tp.partition}] {committed[tp].offset if tp in committed else None}/{end}"
            for tp, end in sorted(ends.items())
            if end and (tp not in committed or committed[tp].offset < end)
        ]
    finally:
        await consumer.stop()
        await admin.close()


def wait_consumed(bootstrap: str, group: str, topics: list[str], timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        behind = asyncio.run(unconsumed(bootstrap, group, topics))
        if not behind:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"group {group} did not consume to the end in {timeout_s} s: {behind}")
        time.sleep(1)


def replay(scorer: Scorer, records: list[Received], kinds: Mapping[str, EventKind]) -> dict[str, LeadState]:
    states: dict[str, LeadState] = {}
    inputs = [InputRecord(kinds[r.topic], r.topic, r.partition, r.offset, r.key, r.value) for r in records]
    states.update(scorer.process_batch(inputs, {}, NOW_MS + DAY_MS).states)
    return states


def same_state(live: LeadState, replayed: LeadState) -> bool:
    """Equal up to float rounding: the order of applying events changes the last bits only."""
    values_match = live.values.keys() == replayed.values.keys() and all(
        math.isclose(live.values[rule], replayed.values[rule], rel_tol=1e-9, abs_tol=1e-9) for rule in live.values
    )
    return (
        values_match
        and live.counts == replayed.counts
        and live.seen == replayed.seen
        and live.profile == replayed.profile
        and live.last_event_at == replayed.last_event_at
    )


def check_against_replay(bootstrap: str, names: str, app_id: str, scorer: Scorer) -> None:
    inbound = {names + topic: kind for topic, kind in TopicNames().inbound().items()}
    wait_consumed(bootstrap, app_id, list(inbound))
    records = run(read_all(bootstrap, list(inbound)))
    lead_partition = {r.key: r.partition for r in records}
    changelog = run(read_all(bootstrap, [f"{app_id}-leads-changelog"]))
    assert changelog, "no changelog records"
    wrong = [(r.key, r.partition) for r in changelog if lead_partition.get(r.key) != r.partition]
    assert wrong == [], f"changelog records on a wrong partition: {wrong[:5]}"
    table: dict[str, LeadState] = {}
    for r in changelog:  # the last record of each key wins, as in recovery
        assert r.value is not None
        state = decode_state(r.value)
        table[state.lead_id] = state
    expected = replay(scorer, records, inbound)
    assert set(table) == set(expected)
    mismatched = [lead for lead, state in expected.items() if not same_state(table[lead], state)]
    if mismatched:
        live, replayed = table[mismatched[0]], expected[mismatched[0]]
        fields = ("values", "counts", "seen", "profile", "last_event_at")
        diff = {f: (getattr(live, f), getattr(replayed, f)) for f in fields if getattr(live, f) != getattr(replayed, f)}
        raise AssertionError(f"{len(mismatched)} leads differ from the replay; {mismatched[0]} (live, replay): {diff}")


def check_crossing_ids(bootstrap: str, names: str) -> None:
    mqls = [r.json() for r in run(read_all(bootstrap, [names + "mql-handoff"]))]
    assert mqls, "no MQL events at all"
    ids: dict[tuple[str, int], set[str]] = defaultdict(set)
    for mql in mqls:
        ids[(mql["lead_id"], mql["crossing"])].add(mql["event_id"])
    assert all(len(v) == 1 for v in ids.values())


# Write-behind from 50 records behind: the tests' backlogs (a few thousand records per partition)
# would otherwise always be written after every batch.
HOLDING = {"LEADSCORE_WRITE_BEHIND_MIN_LAG": "50"}


@pytest.mark.parametrize("holding", [False, True], ids=["written-every-batch", "write-behind"])
def test_kill_minus_nine_mid_stream_then_restart(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str, scorer: Scorer, holding: bool
) -> None:
    app_id = names.rstrip(".") + "-app"
    # A backlog of about 50,000 events: one of 15,000 was caught up within one look at the metrics.
    data = synthetic_input(names, 5000)
    create_topics(bootstrap, names)
    run(produce(bootstrap, data))
    env = HOLDING if holding else {"LEADSCORE_WRITE_BEHIND": "0"}
    worker = worker_factory(0, LEADSCORE_MAX_POLL_RECORDS="500", **env)  # else one poll may hold all the input
    deadline = time.monotonic() + 120
    while (consumed := worker.metric("leadscore_events_consumed_total")) < len(
        data
    ) * 0.3 and time.monotonic() < deadline:
        time.sleep(0.05)
    held = worker.metric("leadscore_state_writes_held_total")
    worker.stop(signal.SIGKILL)
    assert consumed < len(data), "the worker finished before it could be killed mid-stream"
    assert (held > 0) is holding
    worker_factory(0, **env)  # the same data directory: RocksDB plus the changelog after its persisted offset
    check_against_replay(bootstrap, names, app_id, scorer)
    check_crossing_ids(bootstrap, names)


def test_a_worker_whose_state_cache_keeps_a_dozen_leads_scores_as_the_replay(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str, scorer: Scorer
) -> None:
    # About 375 leads per partition against a bound of 12: every poll passes it, the quarter of the
    # cache written longest ago is dropped, and a lead that comes again is read back from the store,
    # or from the states held back from it (write-behind holds at most the bound).
    app_id = names.rstrip(".") + "-app"
    data = synthetic_input(names, 1500)
    create_topics(bootstrap, names)
    run(produce(bootstrap, data))
    worker = worker_factory(0, LEADSCORE_STATE_CACHE="12", LEADSCORE_MAX_POLL_RECORDS="200", **HOLDING)
    check_against_replay(bootstrap, names, app_id, scorer)
    check_crossing_ids(bootstrap, names)
    assert worker.metric("leadscore_state_writes_held_total") > 0


def test_two_workers_rebalancing_under_load(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str, scorer: Scorer
) -> None:
    app_id = names.rstrip(".") + "-app"
    data = synthetic_input(names, 1500)
    half = len(data) // 2
    create_topics(bootstrap, names)
    run(produce(bootstrap, data[:half]))  # a backlog: the first worker holds states while it catches up
    first = worker_factory(0, LEADSCORE_MAX_POLL_RECORDS="200", **HOLDING)
    second = worker_factory(1, LEADSCORE_MAX_POLL_RECORDS="200", **HOLDING)  # partitions move while records flow
    run(produce(bootstrap, data[half:]))
    wait_consumed(bootstrap, app_id, [names + t for t in TopicNames().inbound()])
    assert second.metric("leadscore_events_consumed_total") > 0  # the second worker took partitions
    assert first.metric("leadscore_state_writes_held_total") + second.metric("leadscore_state_writes_held_total") > 0
    check_against_replay(bootstrap, names, app_id, scorer)
    check_crossing_ids(bootstrap, names)
    records = run(read_until(bootstrap, [names + "lead-dead-letters"], lambda r: False, timeout_s=2))
    assert records == []
