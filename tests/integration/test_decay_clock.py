"""The decay clock while a worker catches up: no lead returns to nurture before the events that
could keep it qualified are read (the real broker, the worker as a separate process)."""

import signal
import time
from collections.abc import Callable

import orjson

from scoring.engine import InputRecord, Scorer
from scoring.events import EventKind
from scoring.partitioner import key_partition
from scoring.state import LeadState
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
from tests.integration.waits import counts, wait_for_lead, wait_until
from tests.integration.worker import WorkerProcess

PARTITIONS = 4  # the worker_factory's
SPEED = 100_000.0  # a wall second is 27.8 service hours: a lead's 82 days to nurture take 71 s
FILLER_LEADS = 500
FILLER_PER_LEAD = 20  # 10,000 visits before the lead's saving event, as many after it


def journey_state(scorer: Scorer, messages: list[tuple[str, bytes | None, bytes | None]], at_ms: int) -> LeadState:
    """The journey's lead as the scorer leaves it after the journey's events."""
    kinds = {topic: EventKind(kind) for kind, topic in TOPICS.items()}
    records = [
        InputRecord(kinds[topic.rsplit(".", 1)[-1]], topic, 0, i, key, value)
        for i, (topic, key, value) in enumerate(messages)
    ]
    return scorer.process_batch(records, {}, at_ms).states["lead-x"]


def due_after_journey(scorer: Scorer, messages: list[tuple[str, bytes | None, bytes | None]], at_ms: int) -> int:
    """When the journey's lead falls back below the nurture threshold with no further event."""
    due = journey_state(scorer, messages, at_ms).due_at
    assert due is not None
    return due


def outage_settings(epoch: int, **more: str) -> dict[str, str]:
    """A worker whose service clock runs SPEED times the wall clock from ``epoch``, with decay ticks
    every 50 ms and small fetches (a backlog is read in many polls)."""
    return {
        "LEADSCORE_CLOCK_SPEED": str(SPEED),
        "LEADSCORE_CLOCK_EPOCH_MS": str(epoch),
        "LEADSCORE_TICK_INTERVAL": "0.05",
        "LEADSCORE_FETCH_BYTES": "65536",
        **more,
    }


def wall(epoch: int, service_ms: int) -> int:
    """The wall instant at which the service clock of :func:`outage_settings` reads ``service_ms``."""
    return int(epoch + (service_ms - epoch) / SPEED)


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
    env = outage_settings(epoch)
    worker_factory(0, **env).stop()  # declares the topics with their partitions, then "goes down"
    qualifying = journey(names, "lead-x", epoch)
    due = due_after_journey(scorer, qualifying, epoch)
    saving_at = due - 3 * 86_400_000  # three days before it would have fallen
    assert wall(epoch, due) < epoch + 120_000  # the wall clock is past the due time before the restart
    backlog: list[Timed] = [(t, k or b"", v or b"", wall(epoch, epoch)) for t, k, v in qualifying]
    fillers = same_partition_leads("lead-x", FILLER_LEADS, PARTITIONS)
    for half, (start, end) in enumerate([(epoch, saving_at), (saving_at, clock.at(epoch + 140_000))]):
        if half == 1:
            backlog.append((*visit(names, "lead-x", "lead-x-saving", saving_at, "/pricing"), wall(epoch, saving_at)))
        steps = FILLER_PER_LEAD * len(fillers)
        for n in range(steps):
            at = start + (end - start) * (n + 1) // (steps + 1)
            lead = fillers[n % len(fillers)]
            backlog.append((*visit(names, lead, f"{lead}-{half}-{n}", at, "/blog/post"), wall(epoch, at)))
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


def test_a_lead_settled_while_its_partition_holds_its_writes_survives_a_kill_minus_nine(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str, scorer: Scorer
) -> None:
    # A backlog long enough that the lead's partition holds its state writes back while it catches
    # up (write-behind), read while the decay clock passes the lead's due time: the decay tick
    # writes the lead it settles while the partition's other states wait for their batches'
    # flush. A SIGKILL as soon as the nurture event is out, then a restart on the same data: the
    # lead is nurtured once (sent again only under the same event id), qualifies under no new
    # crossing, and its state counts each of its events once.
    epoch = int(time.time() * 1000) - 150_000
    clock = Clock(SPEED, epoch)
    env = outage_settings(epoch, LEADSCORE_WRITE_BEHIND="30")
    worker_factory(0, **env).stop()  # declares the topics with their partitions
    qualifying = journey(names, "lead-x", epoch)
    due = due_after_journey(scorer, qualifying, epoch)
    end = clock.at(epoch + 140_000)
    assert epoch < due < end  # the lead falls due in the middle of the backlog
    backlog: list[Timed] = [(t, k or b"", v or b"", wall(epoch, epoch)) for t, k, v in qualifying]
    fillers = same_partition_leads("lead-x", FILLER_LEADS, PARTITIONS)
    steps = 2 * FILLER_PER_LEAD * len(fillers)
    for n in range(steps):
        at = epoch + (end - epoch) * (n + 1) // (steps + 1)
        lead = fillers[n % len(fillers)]
        backlog.append((*visit(names, lead, f"{lead}-{n}", at, "/blog/post"), wall(epoch, at)))
    run(produce_timed(bootstrap, backlog))
    topics = [names + "mql-handoff", names + "lead-nurture"]

    def of_lead(records: list[Received], topic: str) -> list[dict[str, object]]:
        return [r.json() for r in records if r.topic == topic and r.key == b"lead-x"]

    worker = worker_factory(0, **env)
    run(read_until(bootstrap, topics, lambda r: bool(of_lead(r, topics[1])), timeout_s=120))
    held = worker.metric("leadscore_state_writes_held_total")
    worker.stop(signal.SIGKILL)
    assert held > 0, "the partition did not hold its writes back while it caught up"

    restarted = worker_factory(0, **env)
    partition = f'partition="{key_partition(b"lead-x", PARTITIONS)}"'
    wait_until(
        lambda: restarted.metric("leadscore_decay_clock_behind_seconds", partition) == 0,
        "the restarted worker to read the lead's partition to its end",
        restarted,
        timeout_s=120,
    )
    records = run(read_until(bootstrap, topics, lambda r: bool(of_lead(r, topics[1])), timeout_s=30, settle_s=3))
    mqls, nurtures = of_lead(records, topics[0]), of_lead(records, topics[1])
    assert {(m["event_id"], m["crossing"]) for m in mqls} == {(mqls[0]["event_id"], 1)}
    assert {(n["event_id"], n["crossing"], n["reason"]) for n in nurtures} == {(nurtures[0]["event_id"], 1, "decay")}
    view = wait_for_lead(restarted, "lead-x", lambda body: body.get("stage") == "nurture")
    assert (view["stage"], view["crossings"]) == ("nurture", 1)
    assert counts(view) == journey_state(scorer, qualifying, epoch).counts  # none counted twice
    assert restarted.stop(signal.SIGTERM) == 0
