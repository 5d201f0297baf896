"""Broker-side helpers of the benchmark: create a topic, keep topics' records whatever their age,
sum a topic's end offsets, delete a run's topics.
``client`` is :func:`streams.kafka_clients.client_options` (bootstrap servers and security)."""

from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType


async def create_topic(client: Mapping[str, Any], name: str, partitions: int) -> None:
    """Create a topic unless it exists."""
    admin = AIOKafkaAdminClient(**client, request_timeout_ms=15000)
    await admin.start()
    try:
        if name not in set(await admin.list_topics()):
            await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def keep_forever(client: Mapping[str, Any], topics: Iterable[str]) -> None:
    """Turn time-based retention off for ``topics``: the catch-up input is stamped with its events'
    times, months old, which the broker's default retention (7 days) would delete within minutes."""
    admin = AIOKafkaAdminClient(**client, request_timeout_ms=15000)
    await admin.start()
    try:
        resources = [ConfigResource(ConfigResourceType.TOPIC, name, configs={"retention.ms": "-1"}) for name in topics]
        await admin.alter_configs(resources)
    finally:
        await admin.close()


async def end_offsets_sum(client: Mapping[str, Any], topic: str, partitions: int) -> int:
    """The sum of the end offsets of a topic's ``partitions`` partitions (its message count if nothing
    was deleted)."""
    consumer = AIOKafkaConsumer(**client, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return int(sum(ends.values()))
    finally:
        await consumer.stop()


async def delete_topics(client: Mapping[str, Any], prefix: str) -> list[str]:
    """Delete every topic whose name starts with ``prefix``; return their names."""
    admin = AIOKafkaAdminClient(**client, request_timeout_ms=30000)
    await admin.start()
    try:
        names = sorted(name for name in await admin.list_topics() if name.startswith(prefix))
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()
