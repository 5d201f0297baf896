"""A produce batch queued for a topic that drops out of the producer's metadata, on the real broker
(streams/faust_internals.py ``keep_every_topic_in_metadata``).

aiokafka's producer asks for metadata of every topic until it tracks one, then of the tracked ones
only. A send to a topic the full metadata held does not track it; when another topic is tracked
meanwhile (Faust tracks each changelog it creates), the queued batch loses its partition's leader
and waits for the request timeout. The benchmark's worker hung on a nurture event that way.
"""

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.faust_internals import keep_every_topic_in_metadata

REQUEST_TIMEOUT_MS = 8000


async def delivered_after_a_topic_is_tracked(bootstrap: str, names: str, full_metadata: bool) -> bool:
    """Queue a record for one topic, track another, and tell whether the record was delivered
    within a few seconds."""
    quiet, other = f"{names}quiet", f"{names}other"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=1) for t in (quiet, other)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1000, request_timeout_ms=REQUEST_TIMEOUT_MS)
    await producer.start()
    try:
        if full_metadata:
            keep_every_topic_in_metadata(producer.client)
        for _ in range(50):  # the full metadata, which tracks no topic, knows both once they exist
            await producer.client.force_metadata_update()
            if producer.client.cluster.partitions_for_topic(quiet):
                break
            await asyncio.sleep(0.1)
        assert producer.client.cluster.partitions_for_topic(quiet)
        delivery = await producer.send(quiet, b"v", partition=0)  # lingers for a second
        await producer.client.add_topic(other)  # from now on, stock: metadata names the tracked topics only
        try:
            await asyncio.wait_for(asyncio.shield(delivery), 5)
            return True
        except TimeoutError:
            return False
    finally:
        await producer.stop()  # a stuck batch expires after the request timeout


async def test_an_untracked_topic_loses_its_queued_batch_in_stock_aiokafka(bootstrap: str, names: str) -> None:
    # The hazard itself: should aiokafka fix it, this fails and the workaround can go.
    assert not await delivered_after_a_topic_is_tracked(bootstrap, names, full_metadata=False)


async def test_with_full_metadata_the_queued_batch_keeps_its_leader(bootstrap: str, names: str) -> None:
    assert await delivered_after_a_topic_is_tracked(bootstrap, names, full_metadata=True)
