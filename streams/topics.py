"""Topics: their Faust declarations, and their creation and check against the broker."""

import asyncio
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.kafka_clients import check_connection, client_options
from streams.settings import Settings


class TopicLayoutError(RuntimeError):
    """An existing topic's partition count breaks co-partitioning with the lead table."""


@dataclass(frozen=True)
class Topics:
    """The Faust topic objects of one app."""

    inbound: Any  # one faust Topic over every inbound topic name
    mql_handoff: Any
    lead_nurture: Any
    dead_letters: Any
    ticks: Any
    identities: Any


def declare_topics(app: Any, settings: Settings) -> Topics:
    """Declare the service's topics on a Faust app; values and keys stay raw bytes."""
    names = settings.topics

    def topic(*topic_names: str) -> Any:
        return app.topic(
            *topic_names,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            partitions=settings.partitions,
            replicas=settings.replication_factor,
        )

    return Topics(
        inbound=topic(*names.inbound()),
        mql_handoff=topic(names.mql_handoff),
        lead_nurture=topic(names.lead_nurture),
        dead_letters=topic(names.dead_letters),
        ticks=topic(names.ticks),
        identities=topic(names.identities),
    )


TICK_RETENTION_MS = 3_600_000  # a tick is worthless once the next one is sent


def _configs(settings: Settings, name: str) -> dict[str, str]:
    """Topic configs: ticks are sent every second per partition forever, so they expire."""
    return {"retention.ms": str(TICK_RETENTION_MS)} if name == settings.topics.ticks else {}


async def ensure_topics(settings: Settings, timeout_s: float = 60.0) -> list[str]:
    """Create missing topics with the configured partition count; refuse an existing inbound or
    tick topic whose partition count differs (it would not co-partition with the lead table).
    Returns the names created. Refused credentials fail at once (streams/kafka_clients.py)."""
    await check_connection(settings, timeout_s)
    admin = AIOKafkaAdminClient(**client_options(settings), request_timeout_ms=15000)
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        try:
            await admin.start()
            break
        except Exception:  # the broker may still be starting; retried until the deadline
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(1)
    try:
        existing = set(await admin.list_topics())
        wanted = settings.topics.all()
        missing = [name for name in wanted if name not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(
                        name, settings.partitions, settings.replication_factor, topic_configs=_configs(settings, name)
                    )
                    for name in missing
                ]
            )
        # lead-identities is co-partitioned with the identity table in the same way.
        co_partitioned = [*settings.topics.inbound(), settings.topics.ticks, settings.topics.identities]
        described = await admin.describe_topics([n for n in co_partitioned if n in existing])
        for topic in described:
            count = len(topic["partitions"])
            if count != settings.partitions:
                raise TopicLayoutError(
                    f"topic {topic['topic']!r} has {count} partitions but LEADSCORE_PARTITIONS is "
                    f"{settings.partitions}; inbound and tick topics must all have the same count"
                )
        return missing
    finally:
        await admin.close()
