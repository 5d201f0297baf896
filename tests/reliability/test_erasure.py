"""Erasure (GDPR) on the real broker, in both consumption modes.

A qualified lead is erased with ``leadscore erase``: its table entry goes with a tombstone on the
changelog (on the lead's partition), ``/leads/{id}`` answers 404, and its history sent again,
before and after a restart from an empty data directory (the erasure markers restored from their
own changelog), is dropped and counted, never scored, never dead-lettered, never an MQL. Events
after the erasure start a fresh lead whose crossing gets a new event id.
"""

import os
import subprocess
import sys
import time
from collections.abc import Callable

import orjson
import pytest

from tests.integration.kafka import Message, Received, journey, produce, read_until, run
from tests.integration.test_batch_reliability import read_all
from tests.integration.waits import wait_until
from tests.integration.worker import ROOT, WorkerProcess
from tests.reliability.harness import Figures, record_figures

LEAD = "lead-erase-1"


def _renamed(messages: list[Message], tag: str, start_ms: int) -> list[Message]:
    """The same journey with new event ids and times from ``start_ms``."""
    out: list[Message] = []
    for i, (topic, key, value) in enumerate(messages):
        event = orjson.loads(value or b"{}")
        event.update(event_id=f"{event['event_id']}-{tag}", occurred_at=start_ms + i * 10)
        out.append((topic, key, orjson.dumps(event)))
    return out


def _mqls(bootstrap: str, names: str, count: int, settle_s: float) -> list[dict[str, object]]:
    def enough(records: list[Received]) -> bool:
        return sum(1 for r in records if r.key == LEAD.encode()) >= count

    records = run(read_until(bootstrap, [names + "mql-handoff"], enough, timeout_s=90, settle_s=settle_s))
    return [r.json() for r in records if r.key == LEAD.encode()]


@pytest.mark.parametrize("consumption", ["batch", "agent"])
def test_an_erased_lead_is_tombstoned_and_its_history_never_qualifies_again(
    bootstrap: str, names: str, worker_factory: Callable[..., WorkerProcess], consumption: str
) -> None:
    app_id = names.rstrip(".") + "-app"
    worker = worker_factory(LEADSCORE_CONSUMPTION=consumption)
    history = journey(names, LEAD, int(time.time() * 1000) - 3_600_000)
    run(produce(bootstrap, history))
    assert [m["crossing"] for m in _mqls(bootstrap, names, 1, 0)] == [1]
    wait_until(lambda: worker.get(f"/leads/{LEAD}")[0] == 200, "the lead in the table", worker)

    env = {
        **os.environ,
        "LEADSCORE_BOOTSTRAP": bootstrap,
        "LEADSCORE_TOPIC_PREFIX": names,
        "LEADSCORE_PARTITIONS": "4",
    }
    done = subprocess.run(
        [sys.executable, "-m", "streams", "erase", LEAD], cwd=ROOT, env=env, capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()
    assert f"erasure of {LEAD} requested -> {names}lead-erasures" in done.stdout.decode()
    wait_until(lambda: worker.get(f"/leads/{LEAD}")[0] == 404, "the lead to be gone", worker)
    assert worker.metric("leadscore_erasures_total") == 1

    inbound = run(read_all(bootstrap, [names + "web-visits"]))
    partition = next(r.partition for r in inbound if r.key == LEAD.encode())
    changelog = [r for r in run(read_all(bootstrap, [f"{app_id}-leads-changelog"])) if r.key == LEAD.encode()]
    assert changelog[-1].value is None  # the tombstone is the lead's last changelog record
    assert {r.partition for r in changelog} == {partition}
    markers = [r for r in run(read_all(bootstrap, [f"{app_id}-erasures-changelog"])) if r.key == LEAD.encode()]
    assert markers
    assert all(r.partition == partition for r in markers)
    assert markers[-1].value is not None
    assert markers[-1].value.endswith(b":1")  # erased_at and the crossing count: no personal data

    run(produce(bootstrap, history))  # the erased history again: dropped and counted
    wait_until(lambda: worker.metric("leadscore_erased_events_dropped_total") >= len(history), "the drops", worker)
    assert worker.get(f"/leads/{LEAD}")[0] == 404

    worker.stop()  # a restart from an empty data directory: table and markers from their changelogs
    restarted = worker_factory(index=1, LEADSCORE_CONSUMPTION=consumption)
    assert restarted.get(f"/leads/{LEAD}")[0] == 404
    run(produce(bootstrap, history))
    wait_until(lambda: restarted.metric("leadscore_erased_events_dropped_total") >= len(history), "drops", restarted)
    assert restarted.get(f"/leads/{LEAD}")[0] == 404

    fresh = _renamed(history, "after", int(time.time() * 1000))  # after the erasure: a fresh lead
    run(produce(bootstrap, fresh))
    mqls = _mqls(bootstrap, names, 2, settle_s=5)
    assert [m["crossing"] for m in mqls] == [1, 2], mqls  # nothing from the erased history's replays
    assert len({m["event_id"] for m in mqls}) == 2  # the fresh crossing has its own id
    status, body = restarted.get(f"/leads/{LEAD}")
    assert status == 200
    assert body["stage"] == "mql"
    letters = run(read_all(bootstrap, [names + "lead-dead-letters"]))
    assert [r for r in letters if r.key == LEAD.encode()] == []  # dropped events are not dead-lettered

    sent = len(history) * 3 + len(fresh) + 1
    counted = Figures(
        sent=sent, duplicated_ids=len(mqls) - len({m["event_id"] for m in mqls}), dead_lettered=len(letters)
    )
    record_figures(
        f"erasure ({consumption} consumption, restart from an empty data dir)",
        counted,
        faults=1,
        notes=f"{2 * len(history)} erased events dropped, 0 MQLs from them; tombstone on partition {partition}",
    )
