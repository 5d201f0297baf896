"""The worker's produce batches (``LEADSCORE_PRODUCE_BATCH_BYTES``): a catch-up poll's changelog
records for one partition go in a few large batches, and a broker with its default limits takes
them (the real broker)."""

import uuid
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.app import create_app
from streams.faust_internals import _send_to_partition
from streams.settings import Settings, settings_from_env
from tests.integration.kafka import run

STATES = 1_800  # the leads of one partition a catch-up poll touches (5,000 events, 0.36 per event)
STATE_BYTES = 1_100  # an average encoded lead state
PRODUCE_BATCH_BYTES = Settings().produce_batch_bytes


def test_the_worker_builds_its_produce_batches_at_the_configured_size(tmp_path: Path) -> None:
    assert PRODUCE_BATCH_BYTES == 512 * 1024
    env = {"LEADSCORE_DATA_DIR": str(tmp_path), "LEADSCORE_APP_ID": f"batches-{uuid.uuid4().hex[:8]}"}
    assert create_app(settings_from_env(env)).app.conf.producer_max_batch_size == PRODUCE_BATCH_BYTES
    smaller = settings_from_env({**env, "LEADSCORE_PRODUCE_BATCH_BYTES": "65536"})
    assert create_app(smaller).app.conf.producer_max_batch_size == 65536


def test_a_polls_changelog_for_one_partition_goes_in_a_few_batches_the_broker_accepts(
    bootstrap: str, names: str
) -> None:
    topic = names + "produce-batches"
    items = [(f"lead-{i:07d}".encode(), bytes([65 + i % 26]) * STATE_BYTES) for i in range(STATES)]

    async def send() -> list[tuple[int, int]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 1, 1)])  # the broker's default topic limits
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_batch_size=PRODUCE_BATCH_BYTES)
        await producer.start()
        try:
            sent = await _send_to_partition(producer, topic, 0, items)
            return [((await future).offset, count) for future, count in sent]
        finally:
            await producer.stop()

    async def read_back() -> list[tuple[bytes | None, bytes | None]]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        records: list[tuple[bytes | None, bytes | None]] = []
        try:
            while len(records) < STATES:
                batches = await consumer.getmany(timeout_ms=10_000)
                assert batches, f"only {len(records)} of {STATES} records came back"
                records += [(r.key, r.value) for rs in batches.values() for r in rs]
        finally:
            await consumer.stop()
        return records

    batches = run(send())
    # 2 MB in batches of up to 512 KiB, where Faust's default of 16 KiB made 129 (one round trip each).
    assert len(batches) <= 4
    assert sum(count for _, count in batches) == STATES
    assert [offset for offset, _ in batches] == sorted(offset for offset, _ in batches)
    assert run(read_back()) == items  # every record, in order
