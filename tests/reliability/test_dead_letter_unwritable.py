"""``lead-dead-letters`` unwritable: the worker waits and reports, never skips the record.

The topic's ``max.message.bytes`` is cut to 64 bytes with the admin client (every dead letter is
larger, so the broker refuses each one, deterministically). While it is so, the source offset of
the bad record must not be committed, not even across a kill -9 and a restart; the worker reports
(``leadscore_dead_letter_blocked`` = 1, ``/readyz`` 503 with the reason, an error log line
without the record's bytes). Once the limit is restored it goes on, and the dead letter is on the
topic exactly once.
"""

import signal
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.structs import TopicPartition

from tests.integration.kafka import read_until, run
from tests.integration.waits import wait_until
from tests.integration.worker import WorkerProcess
from tests.reliability.harness import Figures, record_figures

BAD = b'{"event_id": "secret-bad", "lead_id": "lead-dlq", "occurred_at": '  # truncated JSON
SECRET = b"secret-bad"


async def _set_max_bytes(bootstrap: str, topic: str, value: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": value})]
        )
    finally:
        await admin.close()


async def _committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    meta = offsets.get(tp)
    return None if meta is None or meta.offset < 0 else int(meta.offset)


async def _produce(bootstrap: str, messages: list[tuple[str, bytes, bytes]]) -> list[tuple[int, int]]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        sent = [await producer.send_and_wait(topic, key=key, value=value) for topic, key, value in messages]
    finally:
        await producer.stop()
    return [(meta.partition, meta.offset) for meta in sent]


def _blocked(worker: WorkerProcess) -> bool:
    status, body = worker.get("/readyz")
    return (
        worker.get("/metrics")[0] == 200
        and worker.metric("leadscore_dead_letter_blocked") == 1
        and status == 503
        and "dead-letter" in str(body.get("reason", "") if isinstance(body, dict) else "")
    )


@pytest.mark.parametrize("consumption", ["batch", "agent"])
def test_unwritable_dead_letter_topic_pauses_without_committing_then_delivers_once(
    bootstrap: str, names: str, worker_factory: Callable[..., WorkerProcess], consumption: str
) -> None:
    worker = worker_factory(LEADSCORE_CONSUMPTION=consumption)
    group = names.rstrip(".") + "-app"
    visits, dead_letters = names + "web-visits", names + "lead-dead-letters"
    run(_set_max_bytes(bootstrap, dead_letters, "64"))
    good = orjson.dumps({"event_id": "good-1", "lead_id": "lead-dlq", "occurred_at": 1_760_000_000_000, "url": "/"})
    (partition, bad_offset), (_, good_offset) = run(
        _produce(bootstrap, [(visits, b"lead-dlq", BAD), (visits, b"lead-dlq", good)])
    )
    tp = TopicPartition(visits, partition)
    faults = 0

    wait_until(lambda: _blocked(worker), "the worker to report the blocked dead-letter topic", worker)
    time.sleep(6)  # two commit intervals: a commit past the record would have happened by now
    committed = run(_committed(bootstrap, group, tp))
    assert committed is None or committed <= bad_offset, (committed, bad_offset)
    assert worker.get("/livez")[0] == 200  # waiting on purpose is not a stall: no restart loop
    assert worker.get("/leads/lead-dlq")[0] == 404  # the good record after it waits too
    log = worker.log()
    assert "dead letters refused" in log
    assert SECRET.decode() not in log
    assert "lead-dlq" not in log

    worker.stop(signal.SIGKILL)  # a crash while blocked, then a restart: still nothing skipped
    faults += 1
    worker.start(wait_ready=False)
    wait_until(lambda: _blocked(worker), "the restarted worker to block again", worker)
    time.sleep(6)
    committed = run(_committed(bootstrap, group, tp))
    assert committed is None or committed <= bad_offset, (committed, bad_offset)
    retries = worker.metric("leadscore_dead_letter_retries_total")
    assert retries >= 1

    run(_set_max_bytes(bootstrap, dead_letters, "1048588"))  # writable again
    faults += 1
    wait_until(lambda: worker.get("/readyz")[0] == 200, "the worker to resume", worker)
    assert worker.metric("leadscore_dead_letter_blocked") == 0
    wait_until(lambda: worker.get("/leads/lead-dlq")[0] == 200, "the good record to be scored", worker)

    def found(records: list[Any]) -> bool:
        return any(r.json()["source_offset"] == bad_offset for r in records)

    letters = [
        r.json()
        for r in run(read_until(bootstrap, [dead_letters], found, timeout_s=60, settle_s=5))
        if r.json()["source_topic"] == visits and r.json()["source_partition"] == partition
    ]
    mine = [letter for letter in letters if letter["source_offset"] == bad_offset]
    assert len(mine) == 1, letters  # once, though the worker was killed while it was refused
    assert mine[0]["reason"] == "invalid_json"
    assert all(letter["source_offset"] != good_offset for letter in letters)
    wait_until(
        lambda: (run(_committed(bootstrap, group, tp)) or 0) > good_offset,
        "the offsets past both records to be committed",
        worker,
    )
    consumed_again = worker.metric("leadscore_events_consumed_total")  # by the restarted worker
    counted = Figures(
        sent=2,
        lost=0 if worker.get("/leads/lead-dlq")[0] == 200 else 1,
        duplicated_ids=len(mine) - 1,
        redeliveries=int(consumed_again),
        dead_lettered=len(mine),
    )
    record_figures(
        f"dead-letter topic unwritable ({consumption} consumption, kill -9 while blocked)",
        counted,
        faults=faults,
        notes=f"{int(retries)} refused attempts before the restore; committed offset held at {bad_offset}",
    )
