"""Reading a partition's inbound topics in step by time, as Kafka Streams does.

A lead's events arrive on several co-partitioned topics, each fetched at its own pace. Through a
backlog, one fetch of a sparse topic (webinars) spans weeks while one of the web visits spans
hours: scored as fetched, a lead's later visit could be scored before its earlier webinar, and an
MQL crossing that held only between the two would never be seen. So each poll scores a
partition's records only up to its *horizon*: the oldest of the newest timestamps fetched from
its topics that still have records to read. Records stamped later wait for a later poll, and those
scored are merged in time order. Topics read to their end do not hold anything back, and records
within ``GRACE_MS`` of the horizon are not held either: live traffic, its topics read within
milliseconds of each other, is never held. Pure functions; the consumer
(``streams.faust_internals``) applies them.
"""

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Protocol, TypeVar


class Stamped(Protocol):
    """A fetched record: its timestamp in epoch milliseconds."""

    @property
    def timestamp(self) -> int: ...


Record = TypeVar("Record", bound=Stamped)
Partition = TypeVar("Partition")

_by_key = itemgetter(0)

# How far past the horizon records are scored anyway: decay over a second changes no score, and
# live records fetched while another topic's newest are still on their way are not held back.
GRACE_MS = 1_000


def horizon(
    available: Mapping[Partition, Sequence[Stamped]],
    unfinished: Collection[Partition],
    seen: Mapping[Partition, int],
) -> float:
    """The time up to which a group of partitions may be scored: the oldest newest timestamp among
    the ``unfinished`` partitions (those with records still to fetch). One with nothing
    ``available`` counts with the newest timestamp ``seen`` from it before (its next records are
    no older, if its producers' clocks run forward), or ``-inf`` if none was ever seen. ``+inf``
    when every partition is read to its end."""
    limit = math.inf
    for partition in unfinished:
        records = available.get(partition)
        newest = records[-1].timestamp if records else seen.get(partition, -math.inf)
        limit = min(limit, newest)
    return limit


def split_at(records: Sequence[Record], limit: float) -> tuple[Sequence[Record], Sequence[Record]]:
    """The longest prefix of ``records`` stamped at or before ``limit``, and the rest (which keeps
    offset order: a record is never scored before one ahead of it in its partition)."""
    stop = next((i for i, r in enumerate(records) if r.timestamp > limit), len(records))
    return records[:stop], records[stop:]


def in_time_order(runs: Iterable[Sequence[Record]]) -> list[Record]:
    """The records of several partitions merged by timestamp. Each partition's own order is kept:
    a record stamped earlier than one ahead of it in its partition comes right after that one."""
    keyed: list[tuple[int, Record]] = []
    for run in runs:
        newest = -(2**63)
        for record in run:
            stamp = record.timestamp
            if stamp > newest:
                newest = stamp
            keyed.append((newest, record))
    keyed.sort(key=_by_key)  # stable: equal times keep the runs' order
    return [record for _, record in keyed]
