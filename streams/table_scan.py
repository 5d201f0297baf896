"""Every key and value of one partition of a raw (bytes) Faust table, read from its store.

Like ``read_states`` in streams/faust_internals.py, this addresses the store's partition directly
(Faust's own iteration covers every active partition at once): the RocksDB database of that
partition without the store's offset record, or, in the memory store (one dict for every
partition), the keys Kafka's default partitioner puts on that partition, which is where every
producer of the tables' keyed topics sends them.
"""

from collections.abc import Iterator
from typing import Any

from aiokafka.partitioner import murmur2


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key`` among ``partitions``."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


def partition_items(table: Any, partition: int, partitions: int) -> Iterator[tuple[bytes, bytes]]:
    """Yield ``(key, value)`` of every key of ``table`` stored for ``partition``."""
    store = table.data
    if hasattr(store, "_db_for_partition"):  # RocksDB: one database per partition
        yield from store._visible_items(store._db_for_partition(partition))
        return
    for key, value in list(store.data.items()):
        if value is not None and key_partition(key, partitions) == partition:
            yield key, value
