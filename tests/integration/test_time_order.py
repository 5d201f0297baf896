"""A catching-up worker reads a partition's topics in step by time: an MQL crossing that held only
between two of a lead's events on different topics is seen even when one topic's backlog is read
far ahead of the other's (the real broker, the worker as a separate process)."""

import signal
import time
from collections.abc import Callable

import orjson

from scoring.engine import InputRecord, Scorer
from scoring.events import EventKind
from scoring.timeutil import parse_rfc3339_ms
from streams.clock import Clock
from streams.settings import TopicNames
from tests.integration.kafka import TOPICS, Received, Timed, produce_timed, read_until, run, same_partition_leads
from tests.integration.waits import wait_for_metric, wait_until
from tests.integration.worker import WorkerProcess

SPEED = 100_000.0  # a wall second is 27.8 service hours
DAY_MS = 86_400_000
PARTITIONS = 4  # the worker_factory's
FILLERS = 2_000  # webinar registrations of other leads before the lead's webinar: about 12 fetches


def event(names: str, kind: str, lead: str, event_id: str, at: int, **fields: object) -> tuple[str, bytes, bytes]:
    value = {"event_id": event_id, "lead_id": lead, "occurred_at": at, **fields}
    return names + TOPICS[kind], lead.encode(), orjson.dumps(value)


def mql_count(scorer: Scorer, messages: list[tuple[str, bytes, bytes]], now_ms: int) -> int:
    """MQL events of scoring ``messages`` in the order given, in one batch."""
    kinds = {topic: EventKind(kind) for kind, topic in TOPICS.items()}
    records = [
        InputRecord(kinds[topic.rsplit(".", 1)[-1]], topic, 0, i, key, value)
        for i, (topic, key, value) in enumerate(messages)
    ]
    return len(scorer.process_batch(records, {}, now_ms).mql)


def test_a_crossing_between_events_of_topics_read_at_different_paces_is_not_missed(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str, scorer: Scorer
) -> None:
    # The lead fits (32) and views pricing three times (+33): 65. Two days later it attends a demo
    # webinar (+20, its page views decayed a little): 83, an MQL. Six months later it reads a
    # blog post. The webinar topic's backlog is dense (other leads' registrations), the visit
    # topic's is not: the first fetches hold every visit, the blog post included, but only the
    # first days of webinars. Scored as fetched, the lead's webinar would come after its blog post,
    # when its points had decayed: no MQL, ever.
    epoch = int(time.time() * 1000) - 240_000
    clock = Clock(SPEED, epoch)
    env = {
        "LEADSCORE_CLOCK_SPEED": str(SPEED),
        "LEADSCORE_CLOCK_EPOCH_MS": str(epoch),
        "LEADSCORE_FETCH_BYTES": "65536",
    }
    worker_factory(0, **env).stop()  # declares the topics with their partitions

    def wall(service_ms: int) -> int:  # the wall instant at which the service clock reads service_ms
        return int(epoch + (service_ms - epoch) / SPEED)

    lead, start = "lead-x", epoch
    webinar_at, blog_at = start + 2 * DAY_MS, start + 180 * DAY_MS
    demo = {"webinar_id": "w1", "status": "attended", "webinar_type": "demo"}
    profile = {"seniority": "director", "company_size": 800, "industry": "software", "country": "DE"}
    journey = [
        (event(names, "lead_profile", lead, "x-p", start, **profile), start),
        *((event(names, "web_visit", lead, f"x-v{i}", start + i, url="/pricing"), start + i) for i in (1, 2, 3)),
        (event(names, "webinar_event", lead, "x-w", webinar_at, **demo), webinar_at),
        (event(names, "web_visit", lead, "x-blog", blog_at, url="/blog/post"), blog_at),
    ]
    in_time = [message for message, _ in journey]
    visits_first = [m for m in in_time if TOPICS["webinar_event"] not in m[0]] + [
        m for m in in_time if TOPICS["webinar_event"] in m[0]
    ]
    assert clock.at(time.time() * 1000) > blog_at
    assert mql_count(scorer, in_time, blog_at) == 1  # in time order: an MQL at the webinar
    assert mql_count(scorer, visits_first, blog_at) == 0  # topic by topic: none
    backlog: list[Timed] = [(*message, wall(at)) for message, at in journey]
    fillers = same_partition_leads(lead, 200, PARTITIONS)
    for n in range(FILLERS):
        at = start + (webinar_at - start) * n // FILLERS
        filler = fillers[n % len(fillers)]
        registration = event(names, "webinar_event", filler, f"f-{n}", at, webinar_id=f"w{n}", status="registered")
        backlog.append((*registration, wall(at)))
    backlog.sort(key=lambda message: message[3])
    run(produce_timed(bootstrap, backlog))

    worker = worker_factory(0, **env)
    handoff = names + "mql-handoff"

    def mqls(records: list[Received]) -> list[dict[str, object]]:
        return [r.json() for r in records if r.topic == handoff]

    records = run(read_until(bootstrap, [handoff], lambda r: bool(mqls(r)), timeout_s=60, settle_s=3))
    assert wait_for_metric(worker, "leadscore_events_consumed_total", "", len(backlog)) >= len(backlog)
    sent = mqls(records)
    assert [(m["lead_id"], m["crossing"]) for m in sent] == [(lead, 1)], sent
    assert parse_rfc3339_ms(str(sent[0]["crossed_at"])) == webinar_at
    assert sent[0]["triggering_event_id"] == "x-w"

    def held_series() -> list[str]:  # set by the lag timer (every 5 s) for each inbound partition
        _, text = worker.get("/metrics")
        return [line for line in str(text).splitlines() if line.startswith("leadscore_records_held{")]

    inbound = len(TopicNames().inbound()) * PARTITIONS
    wait_until(lambda: len(held_series()) == inbound, "the held-records gauges", worker, 30)
    assert {line.rsplit(" ", 1)[1] for line in held_series()} == {"0.0"}  # everything scored
    assert worker.stop(signal.SIGTERM) == 0
