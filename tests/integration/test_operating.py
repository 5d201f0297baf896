"""Probes and the lead API against the real broker: readiness during table recovery, liveness, and
a lead answered by either of two workers."""

import signal
import time
from collections.abc import Callable

import orjson

from tests.integration.kafka import journey, produce, read_until, run, topic_config
from tests.integration.worker import WorkerProcess


def profiles(names: str, leads: int, now: int) -> list[tuple[str, bytes | None, bytes | None]]:
    """One profile event per lead: the cheapest way to fill the lead table."""
    return [
        (
            names + "lead-profiles",
            f"lead-{i}".encode(),
            orjson.dumps({"event_id": f"p{i}", "lead_id": f"lead-{i}", "occurred_at": now, "seniority": "manager"}),
        )
        for i in range(leads)
    ]


def test_readyz_is_false_while_the_table_recovers_and_true_after(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str
) -> None:
    first = worker_factory(0)
    leads = 30_000
    run(produce(bootstrap, profiles(names, leads, int(time.time() * 1000))))
    deadline = time.monotonic() + 120
    while first.metric("leadscore_changelog_records_total") < leads and time.monotonic() < deadline:
        time.sleep(0.5)
    assert first.metric("leadscore_changelog_records_total") >= leads
    first.stop(signal.SIGTERM)

    second = worker_factory(1, wait_ready=False)  # a fresh data directory: a full restore
    statuses: list[int] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status, _ = second.get("/readyz")
        if status:
            statuses.append(status)
        if status == 200:
            break
        time.sleep(0.02)
    assert 503 in statuses, f"never saw the worker not ready: {statuses[:5]}"
    assert statuses[-1] == 200
    assert second.get("/livez")[0] == 200
    status, lead = second.get(f"/leads/lead-{leads - 1}")
    assert status == 200  # ready means recovered: the last lead written is there
    assert lead["fit_score"] == 8


def test_a_lead_is_answered_by_either_of_two_workers(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str
) -> None:
    first = worker_factory(0)
    second = worker_factory(1)
    now = int(time.time() * 1000)
    leads = [f"lead-{i}" for i in range(8)]
    run(produce(bootstrap, [m for lead in leads for m in journey(names, lead, now)]))
    run(read_until(bootstrap, [names + "mql-handoff"], lambda r: len(r) >= len(leads), timeout_s=90))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (first.get("/readyz")[0] != 200 or second.get("/readyz")[0] != 200):
        time.sleep(0.2)
    owners = {first.metric("leadscore_leads", 'stage="mql"'), second.metric("leadscore_leads", 'stage="mql"')}
    assert owners != {0.0}
    for lead in leads:
        answers = [worker.get(f"/leads/{lead}") for worker in (first, second)]
        assert [status for status, _ in answers] == [200, 200], answers
        assert answers[0][1]["stage"] == answers[1][1]["stage"] == "mql"
        assert answers[0][1]["breakdown"] == answers[1][1]["breakdown"]
    assert first.get("/leads/nobody")[0] == 404
    assert second.get("/leads/nobody")[0] == 404


def test_the_tick_topic_expires_its_ticks_and_inbound_topics_keep_their_events(bootstrap: str, names: str) -> None:
    from streams.settings import settings_from_env
    from streams.topics import TICK_RETENTION_MS, ensure_topics

    settings = settings_from_env({"LEADSCORE_BOOTSTRAP": bootstrap, "LEADSCORE_TOPIC_PREFIX": names})
    run(ensure_topics(settings))

    assert run(topic_config(bootstrap, settings.topics.ticks, "retention.ms")) == str(TICK_RETENTION_MS)
    assert run(topic_config(bootstrap, settings.topics.web_visits, "retention.ms")) != str(TICK_RETENTION_MS)
