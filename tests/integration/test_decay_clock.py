"""The decay clock while a worker catches up: no lead returns to nurture before the events that
could keep it qualified are read (the real broker, the worker as a separate process)."""

import signal
import time
from collections.abc import Callable

import orjson

from scoring.engine import InputRecord, Scorer
from scoring.events import EventKind
from scoring.partitioner import key_partition
from scoring.timeutil import parse_rfc3339_ms
from streams.clock import Clock
from tests.integration.kafka import (
    TOPICS,
    Received,
    Timed,
    journey,
    produce_timed,
    read_until,
    run,
    same_partition_leads,
)
from tests.integration.worker import WorkerProcess

PARTITIONS = 4  # the worker_factory's
SPEED = 100_000.0  # a wall second is 27.8 service hours: a lead's 82 days to nurture take 71 s
FILLER_LEADS = 500
FILLER_PER_LEAD = 20  # 10,000 visits before the lead's saving event, as many after it


def due_after_journey(scorer: Scorer, messages: list[tuple[str, bytes | None, bytes | None]], at_ms: int) -> int:
    """When the journey's lead falls back below the nurture threshold with no further event."""
    kinds = {topic: EventKind(kind) for kind, topic in TOPICS.items()}
    records = [
        InputRecord(kinds[topic.rsplit(".", 1)[-1]], topic, 0, i, key, value)
        for i, (topic, key, value) in enumerate(messages)
    ]
    state = scorer.process_batch(records, {}, at_ms).states["lead-x"]
    assert state.due_at is not None
    return state.due_at


def visit(names: str, lead: str, event_id: str, occurred_ms: int, path: str) -> tuple[str, bytes, bytes]:
    value = {"event_id": event_id, "lead_id": lead, "occurred_at": occurred_ms, "url": f"https://www.example.com{path}"}
    return names + TOPICS["web_visit"], lead.encode(), orjson.dumps(value)


def test_a_catching_up_worker_settles_no_lead_before_the_events_that_kept_it_qualified(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str, scorer: Scorer
) -> None:
    # A lead qualified, then the worker was down while the lead's due time passed; during the
    # outage one more visit of the lead, before its due time, kept it qualified. The restarted
    # worker reads the backlog in many small fetches, with decay ticks every 50 ms in between:
    # the wall clock is past the due time long before the saving visit is read, and a tick by the
    # wall clock would return the lead to nurture at its old due time.
    epoch = int(time.time() * 1000) - 150_000
    clock = Clock(SPEED, epoch)
    env = {
        "LEADSCORE_CLOCK_SPEED": str(SPEED),
        "LEADSCORE_CLOCK_EPOCH_MS": str(epoch),
        "LEADSCORE_TICK_INTERVAL": "0.05",
        "LEADSCORE_FETCH_BYTES": "65536",
    }
    worker_factory(0, **env).stop()  # declares the topics with their partitions, then "goes down"

    def wall(service_ms: int) -> int:  # the wall instant at which the service clock reads service_ms
        return int(epoch + (service_ms - epoch) / SPEED)

    qualifying = journey(names, "lead-x", epoch)
    due = due_after_journey(scorer, qualifying, epoch)
    saving_at = due - 3 * 86_400_000  # three days before it would have fallen
    assert wall(due) < epoch + 120_000  # the wall clock is past the due time before the restart
    backlog: list[Timed] = [(t, k or b"", v or b"", wall(epoch)) for t, k, v in qualifying]
    fillers = same_partition_leads("lead-x", FILLER_LEADS, PARTITIONS)
    for half, (start, end) in enumerate([(epoch, saving_at), (saving_at, clock.at(epoch + 140_000))]):
        if half == 1:
            backlog.append((*visit(names, "lead-x", "lead-x-saving", saving_at, "/pricing"), wall(saving_at)))
        steps = FILLER_PER_LEAD * len(fillers)
        for n in range(steps):
            at = start + (end - start) * (n + 1) // (steps + 1)
            lead = fillers[n % len(fillers)]
            backlog.append((*visit(names, lead, f"{lead}-{half}-{n}", at, "/blog/post"), wall(at)))
    run(produce_timed(bootstrap, backlog))

    worker = worker_factory(0, **env)
    topics = [names + "mql-handoff", names + "lead-nurture"]

    def nurtured(records: list[Received]) -> list[dict[str, object]]:
        return [r.json() for r in records if r.topic == topics[1] and r.key == b"lead-x"]

    records = run(read_until(bootstrap, topics, lambda r: bool(nurtured(r)), timeout_s=120, settle_s=3))
    assert worker.metric("leadscore_events_consumed_total") >= len(backlog)
    assert worker.metric("leadscore_ticks_total") > 0
    mqls = [r.json() for r in records if r.topic == topics[0] and r.key == b"lead-x"]
    assert [m["crossing"] for m in mqls] == [1]  # no second crossing after a premature nurture
    nurtures = nurtured(records)
    assert len(nurtures) == 1, nurtures
    # It fell from the score the saving visit raised, later than it would have without it: never
    # at the old due time.
    assert parse_rfc3339_ms(str(nurtures[0]["at"])) > due
    assert (nurtures[0]["reason"], nurtures[0]["crossing"]) == ("decay", 1)
    # Caught up, the lead's partition decays by the service clock again.
    partition = f'partition="{key_partition(b"lead-x", PARTITIONS)}"'
    assert worker.metric("leadscore_decay_clock_behind_seconds", partition) == 0
    assert worker.stop(signal.SIGTERM) == 0
