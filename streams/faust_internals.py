"""Every place leadscore reaches into Faust's private state, in one module.

Written against faust-streaming 0.15.x (pinned ``>=0.15.3,<0.16`` in pyproject.toml); covered by
the real-broker tests in ``tests/integration`` (batch scoring, kill -9 and restart, two workers).

What it replaces, and why:

- **Per-message consumption of the inbound topics.** Stock Faust hands every fetched record to
  its conductor and agent one at a time (two tasks, a stream iteration and a serializer lookup
  per record: about 120-150 microseconds of CPU before any scoring). :class:`BatchConsumer`
  overrides ``Consumer._drain_messages`` so that each fetched batch of an inbound partition goes
  to the scoring code at once, and acks the whole batch through Faust's own offset bookkeeping
  (``_acked``, ``_acked_index``, gaps), so commits stay at-least-once and go through Faust's
  ``Consumer.commit``, which flushes the producer first. Records of every other topic (ticks,
  changelogs during recovery) take the stock path unchanged.
- **Table writes without a current event.** ``Table.__setitem__`` and the RocksDB store take the
  changelog partition and the RocksDB database from the *current event*; a batch has none. So
  :func:`read_states` and :func:`write_states` address the store's partition directly (one
  RocksDB ``WriteBatch`` per batch) and send one changelog record per lead per batch with
  ``Table.send_changelog`` on the lead's own partition, whose callback keeps the store's
  persisted changelog offset, as Faust's own writes do.
- **Consumer lag.** :func:`committed_offset` and :func:`highwater` read what the consumer
  already knows, without a round trip to the broker.
"""

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer

BatchHandler = Callable[[Any, Sequence[Any]], Awaitable[None]]


class BatchConsumer(AIOKafkaConsumer):
    """A Faust consumer that hands whole fetched batches of chosen topics to a handler."""

    batch_topics: frozenset[str] = frozenset()
    batch_handler: BatchHandler | None = None

    async def _drain_messages(self, fetcher: Any) -> None:
        handler = self.batch_handler
        topics = self.batch_topics
        read_offset = self._read_offset
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                records, active = await self._wait_next_records(1.0)
                await asyncio.sleep(0)
                if not records or self.should_stop:
                    continue
                generation = self.app.consumer_generation_id
                for tp, batch in records.items():
                    if not self.flow_active or self.app.consumer_generation_id != generation:
                        break  # a rebalance started: what is left is fetched again afterwards
                    if active is not None and tp not in active and tp not in self._buffered_partitions:
                        continue
                    last = read_offset[tp]
                    fresh = batch if last is None else [r for r in batch if r.offset >= last]
                    if not fresh:
                        continue
                    if handler is not None and tp.topic in topics:
                        await self._gap_before(tp, last, fresh)
                        await handler(tp, fresh)
                        self._ack_batch(tp, fresh)
                    else:
                        await self._stock_path(tp, fresh, last)
                    read_offset[tp] = fresh[-1].offset
                    if self._commit_every is not None and self._n_acked >= self._commit_every:
                        self._n_acked = 0
                        await self.commit()
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise

    async def _gap_before(self, tp: Any, last: int | None, batch: Sequence[Any]) -> None:
        """Tell Faust's bookkeeping about offsets that will never come (compaction, markers)."""
        previous = last
        for record in batch:
            if previous is not None and record.offset - previous > 1:
                await self._add_gap(tp, previous + 1, record.offset - 1)
            previous = record.offset

    def _ack_batch(self, tp: Any, batch: Sequence[Any]) -> None:
        """Ack every record of a processed batch at once, as ``Consumer.ack`` would one by one."""
        committed = self._committed_offset[tp]
        offsets = [r.offset for r in batch if committed is None or r.offset >= committed]
        index = self._acked_index[tp]
        fresh = [offset for offset in offsets if offset not in index]
        index.update(fresh)
        self._acked[tp].extend(fresh)
        self._n_acked += len(fresh)

    async def _stock_path(self, tp: Any, batch: Sequence[Any], last: int | None) -> None:
        """Faust's own per-message path, for every topic that is not batch-scored."""
        previous = last
        for record in batch:
            if previous and record.offset - previous > 1 and self.app.topics.acks_enabled_for(tp.topic):
                await self._add_gap(tp, previous + 1, record.offset)
            message = self._to_message(tp, record)
            await self.wait_first(self.callback(message), self.suspend_flow.wait())
            previous = record.offset


def install_batch_consumer(app: Any, topics: Iterable[str], handler: BatchHandler) -> None:
    """Make ``app`` consume ``topics`` in batches through ``handler(tp, records)``."""
    batch_topics = frozenset(topics)

    def new_consumer() -> Any:
        consumer = BatchConsumer(
            app.transport,
            callback=app.topics.on_message,
            on_partitions_revoked=app._on_partitions_revoked,
            on_partitions_assigned=app._on_partitions_assigned,
            beacon=app.beacon,
            loop=app.transport.loop,
        )
        consumer.batch_topics = batch_topics
        consumer.batch_handler = handler
        return consumer

    app._new_consumer = new_consumer


def _store(table: Any) -> Any:
    return table.data


def read_states(table: Any, partition: int, keys: Iterable[bytes]) -> dict[bytes, bytes]:
    """Read table values of ``keys`` from the store of one partition."""
    store = _store(table)
    found: dict[bytes, bytes] = {}
    if hasattr(store, "_db_for_partition"):  # RocksDB: one database per partition
        db = store._db_for_partition(partition)
        for key in keys:
            value = db.get(key)
            if value is not None:
                found[key] = value
    else:  # the memory store: one dict
        data = store.data
        for key in keys:
            value = data.get(key)
            if value is not None:
                found[key] = value
    return found


def write_states(table: Any, partition: int, items: Sequence[tuple[bytes, bytes]]) -> None:
    """Write values to the store of one partition and send one changelog record per key, on
    that partition. The changelog send's callback records the store's persisted offset."""
    if not items:
        return
    store = _store(table)
    if hasattr(store, "_db_for_partition"):
        import rocksdict

        batch = rocksdict.WriteBatch(raw_mode=True)
        for key, value in items:
            batch.put(key, value)
            store._key_index[key] = partition
        store._db_for_partition(partition).write(batch)
    else:
        store.data.update(items)
    for key, value in items:
        table.send_changelog(partition, key, value)


def committed_offset(app: Any, tp: Any) -> int | None:
    """The offset Faust last committed for a partition (the next record to read), if any."""
    value = app.consumer._committed_offset.get(tp)
    return None if value is None else int(value)


def highwater(app: Any, tp: Any) -> int | None:
    """The partition's end offset as last seen by the consumer's fetcher, if known."""
    try:
        value = app.consumer.highwater(tp)
    except (AssertionError, KeyError, AttributeError):  # not fetched from yet
        return None
    return None if value is None else int(value)
