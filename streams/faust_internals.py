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
  ``Consumer.commit``, which flushes the producer first. ``wait_empty``, which Faust awaits
  when partitions are revoked, also waits for the batch under way, so a revoked worker never
  writes a lead's state after the next owner has recovered it. Records of every other topic (ticks,
  standby changelogs), and every record in agent consumption (the consumer with no batch-scored
  topic), take Faust's per-message path, made rebalance-aware (:meth:`BatchConsumer._stock_path`).
- **Changelog restore.** Faust's recovery puts every changelog record through the conductor, a
  queue and its recovery loop (about 100-130 microseconds each: a 1,000,000-lead table took
  95 s). :meth:`BatchConsumer._restore_in_bulk` writes each fetched batch of an active changelog
  partition to the store at once and advances the recovery's offsets and the store's persisted
  offset, ending the recovery the way Faust's loop does.
- **Topics read in step by time.** Faust hands each partition's records over as fetched; through a
  backlog a fetch of a sparse topic spans weeks where one of a dense topic spans hours, so a lead's
  events would be scored out of time order. :meth:`BatchConsumer._synchronize` scores each
  partition group's records up to its time horizon (``streams.time_sync``, as Kafka Streams'
  timestamp synchronization) and holds the rest, unacked, for the next poll; :meth:`_getmany`
  does not fetch from a partition while it holds records of it, and every seek back or rebalance
  drops them (they are read again from the broker).
- **Acks held back with their writes (write-behind).** Faust acks what its agents have processed.
  While a partition group catches up (a partition ``hold_min_lag`` records behind its end), the
  handler may hold the group's state writes back for up to ``hold_s`` seconds (:data:`BatchHandler`):
  :meth:`BatchConsumer._score_fetched` then keeps the group's batches unacked (``_unwritten``)
  until the handler or :meth:`BatchConsumer._flush_unwritten` (each poll, and in ``wait_empty``
  at every revocation and stop) has written them, and reads them all again from the first one
  held when the writes are lost (:class:`ReadAgain`, :class:`MembershipLost`); batches held
  across a completed rebalance are dropped unacked like any fetched before it. A held batch keeps
  only its records' offsets (:class:`OffsetsOnly`), not the records.
- **Table writes without a current event.** ``Table.__setitem__`` and the RocksDB store take the
  changelog partition and the RocksDB database from the *current event*; a batch has none. So
  :func:`read_states`, :func:`write_states` and :func:`partition_items` (the identity sweep's
  scan of one partition; Faust's own iteration covers every active partition at once) address
  the store's partition directly (one
  RocksDB ``WriteBatch`` per batch) and send one changelog record per lead per batch on the
  lead's own partition, awaited until the broker has it (Faust's ``send_soon`` buffer is not
  fully drained by its commit), with the callback that keeps the store's persisted offset.
- **Output sends.** :func:`send_keyed` sends MQL, nurture and identity messages and the identity
  agent's released events, and :func:`hand_over` dead letters, with the same batch API, one
  produce batch per partition (on the partition Kafka's default partitioner gives the key, as
  every other producer of those topics), instead of one Faust ``Topic.send`` per record (about
  40 microseconds each). ``send_keyed`` waits for the broker; the dead-letter path awaits each
  batch's answer itself, so that a refused batch is sent again and the others are not.
- **Fencing a frozen worker's writes.** At-least-once mode has no producer fencing: a worker
  frozen past its session timeout (SIGSTOP, a long GC or VM pause) wakes up holding a batch of
  partitions the group has given to another worker, and its changelog records would land after
  the next owner's, overwriting newer states with stale ones. :func:`confirm_membership` is
  called before every table write and output send: it passes while a heartbeat sent less than
  half the session timeout ago succeeded in the current generation (timed by wrapping the
  coordinator's ``_do_heartbeat``), else it asks the coordinator with a heartbeat of its own and
  raises :class:`MembershipLost` when the member is gone; the batch is then dropped, not acked.
- **Offset bookkeeping across a rebalance.** Faust drops a revoked partition's acked, read and
  committed offsets before the revocation waits for the batch under way; the batch's acks, or a
  commit failing meanwhile (Faust records its offset as committed even then), write them again.
  :meth:`CleanAssignmentConsumer.on_partitions_assigned` clears them before the new assignment's
  seek (in both consumption modes). Faust's stream also skips, unprocessed, a message handed out
  in an older generation and then acks it, and ``Consumer.ack`` records any offset at or above
  the committed one; so :meth:`CleanAssignmentConsumer.ack` ignores such a message, or the new
  assignment would commit past a record nobody scored (with no committed offset yet, at once).
  And Faust's per-message loop moves a partition's read offset past each record once its
  hand-over to the stream returns, even when a new assignment's seek to the committed offset came
  meanwhile: the records between were then dropped as already read and the commit stalled there.
  :meth:`BatchConsumer._stock_path` stops at a rebalance and reads the rest again instead.
  Last, Faust's recovery resumes the stream partitions, awaits the seek to the committed offsets,
  then resumes the flow, which empties every stream's queue: records handed to a stream during
  that seek were dropped unprocessed. :meth:`BatchConsumer.perform_seek` holds the stock path's
  hand-overs from its start until the next flow resume. (Agent consumption lost 18-80 of 10,752
  events, or stalled, in the SIGSTOP scenario of tests/reliability/ until all three were in place.)
- **Reading dropped records again.** Records fetched but not scored (a rebalance began or
  completed meanwhile, a partition paused, a batch whose membership was lost) have already moved
  the fetch position past them. :meth:`BatchConsumer._read_again` seeks back to them only while
  nothing else has moved that position since the fetch (a fetch notes each partition's position
  in the consumer's thread, where the check and the seek also run), and under a lock that Faust's
  own seeks (``perform_seek``, ``seek_wait``) take too. Faust seeks from the event loop's thread
  while its seek to the committed offsets runs in the consumer's, so a seek back could land after
  that one: the worker then read on from the dropped batch, never read the records between the
  committed offset and it, and Faust's commit stalled there for good (seen in the reliability
  tier: a partition committed to 736 of 1,759 for five minutes while the worker ran on).
- **A stalled commit read again.** Faust commits a partition up to its first offset not acked; one
  offset never acked holds the commit there for good while the worker reads on (the lag grows,
  and a restart reads everything since again). The causes above are mended, and the same symptom
  was seen once more in CI (4 of 24 partitions stopped for 300 s after a kill -9 and restart,
  cause not found). :meth:`BatchConsumer._heal_stalled_commits` is the last line: a partition
  whose committed offset has not moved for ``COMMIT_STALL_S`` while the worker fetched past it,
  with nothing of it held and only offsets past the one Faust waits for acked, is read again from its
  committed offset (counted once: event ids), with a warning that gives its bookkeeping and
  ``leadscore_commit_stalls_total``.
- **The producer's metadata keeps every topic.** An aiokafka client asks for the metadata of
  all topics until it tracks one (``add_topic``, called when a send finds its topic missing, as
  for a changelog Faust has just created), and from then on of the tracked topics only. A batch
  already queued for a topic that then drops out of the metadata has no leader and waits for the
  producer's request timeout (Faust's default: 20 minutes) while the sender asks for metadata in
  a loop (the benchmark's worker hung on a nurture event that way), and Faust's table routing
  (``key_partition`` of a changelog topic) fails on a topic missing from it.
  :func:`install_full_metadata` makes the producer's client refresh all topics instead.
- **Closing RocksDB databases.** Faust's store runs a full garbage collection at every revocation
  (once per table) and at stop, to close the databases it let go of; with a large cache of lead
  states each takes about a second. :func:`install_cheap_revocation` closes them by dropping the
  last reference and collects only when something else still holds one.
- **Store writes without the write-ahead log.** Every lead-table state is already durable on the
  changelog (awaited before the store write), so :func:`write_store` writes RocksDB without its
  write-ahead log (a third of the write's cost), with the store's persisted changelog offset in
  the same write batch, and flushes a database's memtable once ``UNFLUSHED_LIMIT_BYTES`` are
  written to it and when the database is let go of. A SIGKILL loses the unflushed writes and
  their offset together (one column family flushes a prefix of its writes), so the restart
  restores them from the changelog; Faust's own ``set_persisted_offset`` (a separate write, with
  the log) is not used on these databases, since a logged write after unlogged ones would
  survive a crash that they do not.
- **How long a fetch may wait at the broker.** Faust builds its aiokafka consumer with
  ``fetch_max_wait_ms=1500``, and aiokafka keeps one fetch in flight per broker, for the
  partitions with nothing buffered. In a catch-up those are often the partitions already read to
  their end: that fetch then waits the full 1.5 s while the partitions the worker has just drained
  cannot be fetched from, and the next poll waits with it (stalls of 0.3-1.1 s in 6 of 7 runs of
  the benchmark's catch-up). :class:`FetchWaitThread` builds the consumer with the worker's
  fetch wait instead (``LEADSCORE_FETCH_WAIT_MS``), and with its ``fetch.min.bytes``
  (``LEADSCORE_FETCH_MIN_BYTES``, default 1 as Faust's).
- **Records fetched as input records.** aiokafka's fetcher builds a ``ConsumerRecord`` per record
  (a dataclass whose generated constructor runs as interpreted Python, behind a Python method),
  and the batch path copied each into the scoring core's ``InputRecord``: about 0.8 us per record
  of the worker's 14-15 (a micro-benchmark over Kafka-format record batches). The worker's
  consumer carries an :class:`InputRecordsOf` key deserializer naming its inbound topics, and
  :func:`install_input_records` makes ``PartitionRecords._consumer_record`` build those topics'
  records as input records directly (offset, key, value and timestamp; their headers, checksum
  and sizes are not kept, nothing reads them). Every other topic's records, and every other
  consumer's, are built by aiokafka's own method.
- **The poll loop's commit.** Faust's drain loop awaits a commit every ``broker_commit_every``
  acks: a flush of the producer and a round trip to the broker (12-16 ms at 40,000 events/s,
  in cycles of 25 ms). :meth:`BatchConsumer._commit_behind` starts it and polls on, one commit at
  a time as Faust's periodic commit runs; :meth:`BatchConsumer.wait_empty` lets one under way
  finish before a revocation's or a stop's own commit.
- **Consumer lag.** :func:`committed_offset`, :func:`highwater` and :func:`read_to_end` read
  what the consumer already knows, without a round trip to the broker (the decay clock holds
  back while a partition is not read to its end: ``scoring.decay.settle_clock``).
"""

import asyncio
import logging
import math
import sys
import time
from array import array
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from operator import attrgetter
from typing import Any, NamedTuple, overload

from aiokafka.consumer.fetcher import PartitionRecords
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

from scoring.engine import InputRecord
from scoring.events import EventKind
from scoring.partitioner import key_partition, producer_partition
from streams.gc_pauses import between_batches, collect_fully
from streams.time_sync import GRACE_MS, horizon, split_at

# Handles a group of fetched batches, ``[(tp, records), ...]``, as one: all done, or raise. With
# ``hold`` true it may hold the group's state writes back (write-behind): it returns True when
# everything the group's batches changed, these and any held before, is written (all may be
# acked), False when it holds writes back (these batches wait, unacked, for the group's flush).
BatchHandler = Callable[[Sequence[tuple[Any, Sequence[Any]]], bool], Awaitable[bool]]
# Writes what the handler held back for the group of these batches (every batch held since the
# group's last write); raises MembershipLost or ReadAgain when it could not (it then forgot them).
GroupFlush = Callable[[Sequence[tuple[Any, Sequence[Any]]]], Awaitable[None]]
# How often to ask again while the group coordinator cannot say whether this worker is a member.
MEMBERSHIP_RETRY_S = 0.5
# How long a partition group waits for a partition's next records before scoring without them
# (a safety valve: they normally arrive with the next fetch response).
MAX_WAIT_S = 5.0
# How long a poll waits when every partition it could fetch from has records held back.
HELD_ONLY_WAIT_S = 0.05
# How long a partition's committed offset may stay put while the worker has fetched past it and
# holds none of its records, before the partition is read again from it (``_heal_stalled_commits``),
# and how often the poll loop looks.
COMMIT_STALL_S = 60.0
STALL_CHECK_S = 5.0

logger = logging.getLogger(__name__)


class MembershipLost(Exception):
    """This worker is no longer a member of the group generation it consumes in: a write now could
    overwrite what the partition's next owner wrote (see :func:`confirm_membership`)."""


class ReadAgain(Exception):
    """The handler forgot what a group's unacked batches changed (a failure after it had held
    writes back): the consumer reads them all again, from the first one held."""


class CleanAssignmentConsumer(AIOKafkaConsumer):
    """Faust's consumer, with each new assignment's offset bookkeeping started afresh."""

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        """Start the new assignment from a clean slate: Faust forgets a partition's acked offsets,
        gaps, read and committed offsets when it is revoked, but a batch that finished while the
        revocation waited for it, or a commit that failed then (Faust records a failed commit's
        offset as committed), writes them again after that. Left in place, such entries made the
        next owner skip records or wait forever for offsets it never reads. The recovery's seek
        to the committed offsets then sets them afresh."""
        for bookkeeping in (self._acked, self._acked_index, self._gap, self._read_offset, self._committed_offset):
            bookkeeping.clear()
        await super().on_partitions_assigned(assigned, generation_id)

    def ack(self, message: Any) -> bool:
        """Ack ``message`` unless it was handed out in an older group generation than the current
        one. Faust's stream skips such a message unprocessed and then acks it (so the lag does not
        grow), and ``Consumer.ack`` records any offset at or above the committed one: the new
        assignment would count a record nobody scored as done, and commit past it."""
        generation = getattr(message, "generation_id", None)
        if generation is None or generation == self.app.consumer_generation_id:
            return bool(super().ack(message))
        with ack_lock:  # done with, as Faust's ack leaves it, but no offset recorded
            message.acked = True
            self._unacked_messages.discard(message)
            notify(self._waiting_for_ack)
        return False


class Fetching(NamedTuple):
    """How the broker answers the worker's fetches: after at most ``wait_ms``, or as soon as it
    has ``min_bytes`` for them."""

    wait_ms: int
    min_bytes: int = 1


class FetchWaitThread(AIOKafkaConsumerThread):
    """Faust's consumer thread, whose aiokafka consumer fetches as its Faust consumer's
    ``fetching`` says (Faust's own wait: 1,500 ms; see the module docstring), and builds the
    records of its ``record_kinds`` topics as scoring input records (:class:`InputRecordsOf`)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        client = super()._create_worker_consumer(transport)
        # Set on the BatchConsumer after it made this thread (Faust types it as any consumer).
        # Both are read when ``start()`` builds the fetcher.
        fetching = getattr(self.consumer, "fetching", None)
        if fetching is not None:
            client._fetch_max_wait_ms, client._fetch_min_bytes = fetching.wait_ms, fetching.min_bytes
        record_kinds = getattr(self.consumer, "record_kinds", None)
        if record_kinds:
            client._key_deserializer = InputRecordsOf(record_kinds)
        return client


class InputRecordsOf:
    """The key deserializer of an aiokafka consumer whose records of ``kinds``' topics are built as
    :class:`~scoring.engine.InputRecord` (of the topic's kind) instead of ``ConsumerRecord``
    (:func:`_fetched_record`); as a deserializer it returns each key as it is."""

    __slots__ = ("kinds",)

    def __init__(self, kinds: Mapping[str, EventKind]) -> None:
        self.kinds = dict(kinds)

    def __call__(self, key: bytes | None) -> bytes | None:
        return key


_consumer_record = PartitionRecords._consumer_record


def install_input_records() -> None:
    """Make aiokafka's fetchers build the records of :class:`InputRecordsOf` consumers' topics as
    input records (:func:`_fetched_record`; every other consumer's records are built as before)."""
    PartitionRecords._consumer_record = _fetched_record


def _fetched_record(self: Any, tp: Any, record: Any) -> Any:
    """aiokafka's ``PartitionRecords._consumer_record``, which builds each fetched record: for a
    topic of an :class:`InputRecordsOf` consumer, the scoring core's input record (a compiled
    class, built in native code) instead of a ``ConsumerRecord`` (a dataclass whose generated
    constructor runs as interpreted Python, copied again into an input record by the batch path)."""
    of = self._key_deserializer
    if type(of) is InputRecordsOf:
        kind = of.kinds.get(tp.topic)
        if kind is not None:
            return InputRecord(kind, tp.topic, tp.partition, record.offset, record.key, record.value, record.timestamp)
    return _consumer_record(self, tp, record)


class BatchConsumer(CleanAssignmentConsumer):
    """A Faust consumer that hands whole fetched batches of chosen topics to a handler."""

    # How the broker answers fetches (``None``: Faust's, a wait of 1,500 ms).
    fetching: Fetching | None = None

    batch_topics: frozenset[str] = frozenset()
    batch_handler: BatchHandler | None = None
    # Batch topics whose records are fetched as scoring input records of these kinds.
    record_kinds: Mapping[str, EventKind] = {}
    # Write-behind: how long a group may hold its state writes back while it catches up (0: never),
    # and the call that writes them.
    hold_s: float = 0.0
    group_flush: GroupFlush | None = None
    # How far behind (records) one of a group's partitions must be for the group to hold.
    hold_min_lag: int = 5000
    # The batches scored but not acked because their group holds its writes back, per group; since
    # when each group holds, and the group generation they were fetched in.
    _unwritten: Mapping[Hashable, Sequence[tuple[Any, Sequence[Any]]]] = {}
    _unwritten_since: Mapping[Hashable, float] = {}
    _unwritten_generation: int | None = None
    # The group a topic partition's batch is handled in (batches of one group go to one call).
    group_of: Callable[[Any], Hashable] = staticmethod(lambda tp: tp)
    _in_batch: asyncio.Lock | None = None
    _seeking: asyncio.Lock | None = None
    _handovers_open: asyncio.Event | None = None
    # Each partition of the last fetch: its fetch state and position as the records were handed out.
    _fetched_at: Mapping[Any, tuple[Any, int | None] | None] = {}
    # The partitions of the last fetch, whose records may not all be processed yet (read_to_end).
    in_flight: frozenset[Any] = frozenset()
    # Records fetched but held back to a later poll (:meth:`_synchronize`), and the group
    # generation they were fetched in. Replaced, never mutated (the fetch reads it from its thread).
    _held: Mapping[Any, Sequence[Any]] = {}
    _held_generation: int | None = None
    # Since when each group has waited for a partition's next records to arrive (monotonic s).
    _waiting_since: Mapping[Hashable, float] = {}
    # The newest record timestamp fetched from each partition in a group generation.
    _newest: tuple[int | None, Mapping[Any, int]] = (None, {})
    # The assignment the members of each group were listed from, and that list.
    _members: tuple[Any, Mapping[Hashable, Sequence[Any]]] | None = None
    last_loop_at: float | None = None
    # The commit started by the poll loop in the background (:meth:`_commit_behind`), and the
    # crash a failed one started.
    _commit_task: "asyncio.Future[bool] | None" = None
    _commit_crash: "asyncio.Future[None] | None" = None
    # Stalled commits: how long before a partition is read again, the committed offset each
    # watched partition had when first seen (and when) in a group generation, the next look, and
    # who to tell.
    commit_stall_s: float = COMMIT_STALL_S
    _commit_seen: Mapping[Any, tuple[int, float]] = {}
    _commit_seen_generation: int | None = None
    _next_stall_check: float = 0.0
    on_commit_stall: Callable[[Any], None] | None = None

    def _new_consumer_thread(self) -> FetchWaitThread:
        return FetchWaitThread(self, loop=self.loop, beacon=self.beacon)

    def _batch_lock(self) -> asyncio.Lock:
        """Held while a batch is scored, written and acked."""
        if self._in_batch is None:
            self._in_batch = asyncio.Lock()
        return self._in_batch

    async def wait_empty(self) -> None:
        """Faust calls this when partitions are revoked, before the group moves them, and when the
        worker stops: the batch under way finishes first and every held write is made (then
        acked, and Faust commits), so the states are in the changelog before the next owner
        recovers them, and no late write from here can overwrite the next owner's. A commit
        under way finishes first too: Faust's next commit would otherwise wait for it and then
        return without committing the offsets acked since it began."""
        await self._flush_unwritten(self.app.consumer_generation_id, every=True)
        await self._commit_finished()
        await super().wait_empty()

    def _commit_idle(self) -> bool:
        return self._commit_task is None or self._commit_task.done()

    def _commit_behind(self) -> None:
        """Commit the acked offsets without holding up the poll loop, as Faust's periodic commit
        does (one commit at a time). Faust's own loop awaits a commit every ``broker_commit_every``
        acks: a flush of the producer and a round trip to the broker, 12-16 ms of a poll loop
        whose cycles take 20-25 ms at 40,000 events/s (measured), so every few polls one took half
        as long again."""
        task = self._commit_task = asyncio.ensure_future(self.commit())
        task.add_done_callback(self._commit_done)

    def _commit_done(self, task: "asyncio.Future[bool]") -> None:
        """A commit in the background that failed crashes the consumer, as an awaited one did."""
        error = None if task.cancelled() else task.exception()
        if error is None:
            return
        logger.error("offset commit failed: %r", error)
        self._commit_crash = asyncio.ensure_future(self.crash(error))

    async def _commit_finished(self) -> None:
        task = self._commit_task
        if task is not None and not task.done():
            await asyncio.wait([task])  # its failure is _commit_done's

    async def _drain_messages(self, fetcher: Any) -> None:
        read_offset = self._read_offset
        consumer_should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                between_batches()  # the young objects the last poll left alive: frozen, not walked
                self.last_loop_at = now = time.monotonic()
                generation = self.app.consumer_generation_id
                if self._held and self._held_generation != generation:
                    await self._resync(self._take_held())  # held across a completed rebalance
                if self._unwritten:
                    await self._flush_unwritten(generation)
                if self._may_continue(generation):
                    await self._heal_stalled_commits(now, generation)
                # The last fetch's records are processed (or sought back), except those held back.
                self.in_flight = frozenset(self._held)
                records, active = await self._wait_next_records(1.0)
                await asyncio.sleep(0)
                if self.should_stop:
                    continue
                fetched: list[tuple[Any, Sequence[Any]]] = list((records or {}).items())
                if self._held:
                    fetched += self._take_held()
                if not fetched:
                    continue
                if self.app.consumer_generation_id != generation:
                    await self._resync(fetched)  # fetched across a completed rebalance
                    continue
                scored: list[tuple[Any, Sequence[Any], int | None]] = []
                for index, (tp, batch) in enumerate(fetched):
                    if not self._may_continue(generation):
                        async with self._batch_lock():  # a rebalance started: read these again
                            await self._rewind([*((t, b) for t, b, _ in scored), *fetched[index:]], generation)
                        scored = []
                        break
                    if active is not None and tp not in active and tp not in self._buffered_partitions:
                        async with self._batch_lock():  # paused (recovery): read these again
                            await self._rewind([(tp, batch)], generation)
                        continue
                    last = read_offset[tp]
                    fresh = batch  # (held records are handed out again each poll: no copy when all are new)
                    if last is not None and batch and batch[0].offset < last:
                        fresh = [r for r in batch if r.offset >= last]
                    if not fresh:
                        continue
                    if self.batch_handler is not None and tp.topic in self.batch_topics:
                        scored.append((tp, fresh, last))
                        continue
                    if self._restore_in_bulk(tp, fresh):
                        read_offset[tp] = fresh[-1].offset
                    else:
                        await self._stock_path(tp, fresh, last, generation)
                if scored:
                    scored = self._synchronize(scored, generation)
                if scored:
                    await self._score_fetched(scored, generation)
                if self._commit_every is not None and self._n_acked >= self._commit_every and self._commit_idle():
                    self._n_acked = 0
                    self._commit_behind()
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise

    async def _heal_stalled_commits(self, now: float, generation: int) -> list[Any]:
        """Read again, from its committed offset, each batch-scored partition whose committed
        offset has not moved for ``commit_stall_s`` seconds although the worker has fetched past
        it, holds none of its records or batches, and acked later offsets only (Faust's commit
        waits for the one after the committed one): an offset never acked (a hole) stops Faust's
        commit of the partition for good while the worker reads on, its lag grows, and a restart
        reads everything since again. Read again, the records are counted once (event ids), and
        the partition's acks start afresh. The warning gives the partition's bookkeeping. Called
        between polls (nothing in flight); returns the partitions sought."""
        if now < self._next_stall_check:
            return []
        self._next_stall_check = now + STALL_CHECK_S
        assignment = _assignment(self._thread._ensure_consumer())
        if self._commit_seen_generation != generation:
            self._commit_seen, self._commit_seen_generation = {}, generation
        if assignment is None:
            return []
        unwritten = {tp for batches in self._unwritten.values() for tp, _ in batches}
        seen: dict[Any, tuple[int, float]] = {}
        stalled: dict[Any, int] = {}
        for members in self._group_members(assignment).values():
            for tp in members:
                committed, state = self._committed_offset.get(tp), assignment.state_value(tp)
                if committed is None or state is None or state.paused or tp in self._held or tp in unwritten:
                    continue
                if state._position is None or state._position <= committed:
                    continue  # nothing fetched past the commit
                acked = self._acked.get(tp)
                if not acked or min(acked) <= committed + 1:
                    # Faust's commit can move on (if it fails, the broker is away), or nothing read
                    # since was acked (a transaction marker at the end counts as not consumed).
                    continue
                first = self._commit_seen.get(tp)
                seen[tp] = first if first is not None and first[0] == committed else (committed, now)
                if now - seen[tp][1] >= self.commit_stall_s:
                    stalled[tp], seen[tp] = committed, (committed, now)
        self._commit_seen = seen
        if not stalled:
            return []
        for tp, committed in stalled.items():
            acked, state = self._acked.get(tp) or [], assignment.state_value(tp)
            logger.warning(
                "commit of %s[%d] stalled at offset %d for %.0f s while fetched to %s (end %s): %d offsets "
                "acked (%s-%s), read offset %s, gaps %s; reading the partition again from %d",
                tp.topic,
                tp.partition,
                committed,
                self.commit_stall_s,
                state._position,
                state.highwater,
                len(acked),
                min(acked, default=None),
                max(acked, default=None),
                self._read_offset.get(tp),
                sorted((gap.begin, gap.end) for gap in self._gap.get(tp) or ()),
                committed,
            )
        sought = await self._seek_to(stalled)
        for tp in sought:
            self._acked.pop(tp, None)
            self._acked_index.pop(tp, None)
            self._gap.pop(tp, None)
            if self.on_commit_stall is not None:
                self.on_commit_stall(tp)
        return sought

    async def _seek_to(self, offsets: Mapping[Any, int]) -> list[Any]:
        """Seek each still assigned partition to its offset, as Faust's seek to the committed
        offsets does (the read offset with it); return the partitions sought."""
        client = self._thread._ensure_consumer()

        async def seek() -> list[Any]:
            sought = [tp for tp in offsets if _fetch_position(client, tp) is not None]
            for tp in sought:
                client.seek(tp, offsets[tp])
            return sought

        async with self._seek_lock():
            sought: list[Any] = await self._thread.call_thread(seek)
            for tp in sought:
                self._read_offset[tp] = offsets[tp]
        return sought

    def _take_held(self) -> list[tuple[Any, Sequence[Any]]]:
        """The records held back by the last poll, now handed out again like fetched ones."""
        held, self._held = list(self._held.items()), {}
        return held

    def _synchronize(
        self, scored: Sequence[tuple[Any, Sequence[Any], int | None]], generation: int
    ) -> list[tuple[Any, Sequence[Any], int | None]]:
        """Cut each group's batches at the group's time horizon (``streams.time_sync``): score now
        the records stamped up to the oldest newest timestamp among the group's partitions that
        are not read to their end (plus ``GRACE_MS``); hold the rest, unacked, for the next poll,
        where their partitions are not fetched from until they are scored. A partition with no
        records in this poll counts with the newest timestamp fetched from it before; a group
        waiting for the first records of one holds everything, for at most ``MAX_WAIT_S``."""
        assignment = _assignment(self._thread._ensure_consumer())
        if assignment is None:
            return list(scored)
        members = self._group_members(assignment)
        entries: dict[Hashable, list[tuple[Any, Sequence[Any], int | None]]] = {}
        for entry in scored:
            entries.setdefault(self.group_of(entry[0]), []).append(entry)
        now, waiting = time.monotonic(), dict(self._waiting_since)
        newest = dict(self._newest[1]) if self._newest[0] == generation else {}
        for tp, fresh, _ in scored:
            stamp = fresh[-1].timestamp
            if stamp > newest.get(tp, stamp - 1):
                newest[tp] = stamp
        kept: list[tuple[Any, Sequence[Any], int | None]] = []
        held: dict[Any, Sequence[Any]] = {}
        for group, batches in entries.items():
            available = {tp: fresh for tp, fresh, _ in batches}
            unfinished = [tp for tp in members.get(group, ()) if not _fetched_to_end(assignment, tp)]
            limit = horizon(available, unfinished, newest)
            if limit == -math.inf and now - waiting.setdefault(group, now) > MAX_WAIT_S:
                logger.warning("scoring partition group %s without waiting longer for its other topics", group)
                limit = horizon(available, [tp for tp in unfinished if tp in newest], newest)
            if limit != -math.inf:
                waiting.pop(group, None)
            for tp, fresh, last in batches:
                now_part, later = split_at(fresh, limit + GRACE_MS)
                if later:
                    held[tp] = later
                if now_part:
                    kept.append((tp, now_part, last))
        self._held, self._held_generation, self._waiting_since = held, generation, waiting
        self._newest = (generation, newest)
        return kept

    def _group_members(self, assignment: Any) -> Mapping[Hashable, Sequence[Any]]:
        """The assigned partitions of the batch-scored topics, by group."""
        if self._members is None or self._members[0] is not assignment:
            members: dict[Hashable, list[Any]] = {}
            for tp in assignment.tps:
                if tp.topic in self.batch_topics:
                    members.setdefault(self.group_of(tp), []).append(tp)
            self._members = (assignment, members)
        return self._members[1]

    async def _score_fetched(self, scored: Sequence[tuple[Any, Sequence[Any], int | None]], generation: int) -> None:
        """Hand the batches of one fetch to the handler at once, one task per group (``group_of``),
        and ack the batches of each group that completed (or keep them unacked while the group
        holds its writes back). The groups' CPU work still runs one after the other, but their
        broker round trips (outputs, then changelog) overlap instead of adding up: the producer
        sends what every group has ready in one request."""
        handler = self.batch_handler
        assert handler is not None
        batches = [(tp, fresh) for tp, fresh, _ in scored]
        groups: dict[Hashable, list[tuple[Any, Sequence[Any]]]] = {}
        for tp, fresh in batches:
            groups.setdefault(self.group_of(tp), []).append((tp, fresh))
        async with self._batch_lock():
            if not self._may_continue(generation):
                await self._rewind(batches, generation)
                return
            for tp, fresh, last in scored:
                await self._gap_before(tp, last, fresh)
            holds = [self._may_hold(group) for group in groups]
            work = [handler(batch, hold) for batch, hold in zip(groups.values(), holds, strict=True)]
            results, stopping = await self._run_all(work)
            moved_on = self.app.consumer_generation_id != generation
            outcomes = [r if isinstance(r, BaseException) else None for r in results]
            lost: list[tuple[Any, Sequence[Any]]] = []
            if not moved_on:
                for group, batch, result in zip(groups, groups.values(), results, strict=True):
                    if isinstance(result, BaseException):
                        if isinstance(result, MembershipLost | ReadAgain):  # not acked: read again
                            lost += [*self._take_unwritten(group), *batch]
                        continue
                    if result:
                        for tp, fresh in [*self._take_unwritten(group), *batch]:
                            self._ack_batch(tp, fresh)
                    else:
                        self._hold(group, batch, generation)
                    for tp, fresh in batch:
                        self._read_offset[tp] = fresh[-1].offset
            if lost and not moved_on:  # read again, here or by the next owner
                await self._rewind(_merged(lost), generation)
        if moved_on:  # the group reassigned partitions while these batches ran
            await self._resync(batches)
        failures = [o for o in outcomes if o is not None and not isinstance(o, MembershipLost | ReadAgain)]
        if failures:
            raise failures[0]  # e.g. the dead-letter topic refusing records while stopping
        if stopping:
            raise asyncio.CancelledError
        if any(isinstance(o, MembershipLost) for o in outcomes):  # frozen past the session
            logger.warning(
                "membership lost: %d batches not acked (%s), read again by this worker or the next owner",
                len(lost),
                ", ".join(f"{tp.topic}[{tp.partition}]@{batch[0].offset}" for tp, batch in lost),
            )
            await asyncio.sleep(MEMBERSHIP_RETRY_S)

    def _may_hold(self, group: Hashable) -> bool:
        """Whether a group may hold its state writes back now: while it catches up (one of its
        partitions is at least ``hold_min_lag`` records behind its end), for at most ``hold_s``.
        Live traffic writes after every batch: a write of seconds of held states delays the
        next poll of every partition (p99 event -> MQL 339 ms at 50% of the maximum rate, once)."""
        if self.hold_s <= 0:
            return False
        since = self._unwritten_since.get(group)
        if since is not None and time.monotonic() - since >= self.hold_s:
            return False
        assignment = _assignment(self._thread._ensure_consumer())
        if assignment is None:
            return False
        members = self._group_members(assignment).get(group, ())
        return any(_lag(assignment, tp) >= self.hold_min_lag for tp in members)

    def _hold(self, group: Hashable, batch: Sequence[tuple[Any, Sequence[Any]]], generation: int) -> None:
        """Keep a group's batches unacked until the group's writes are made: their offsets only."""
        held = [(tp, OffsetsOnly(record.offset for record in records)) for tp, records in batch]
        self._unwritten = {**self._unwritten, group: [*self._unwritten.get(group, ()), *held]}
        self._unwritten_since = {group: time.monotonic(), **self._unwritten_since}
        self._unwritten_generation = generation

    def _take_unwritten(self, group: Hashable) -> list[tuple[Any, Sequence[Any]]]:
        """The group's batches held unacked, no longer held."""
        if group not in self._unwritten:
            return []
        taken = list(self._unwritten[group])
        self._unwritten = {g: b for g, b in self._unwritten.items() if g != group}
        self._unwritten_since = {g: t for g, t in self._unwritten_since.items() if g != group}
        return taken

    async def _flush_unwritten(self, generation: int, every: bool = False) -> None:
        """Make the held writes of each group that no longer may hold them (or of ``every``
        group), then ack its batches; a group whose writes fail is read again. Batches held
        across a completed rebalance are dropped unacked (the new assignment reads from its
        committed offsets; the handler forgets their writes)."""
        async with self._batch_lock():
            if not self._unwritten:
                return
            if self._unwritten_generation != generation:
                stale = [b for group in list(self._unwritten) for b in self._take_unwritten(group)]
                await self._resync(_merged(stale))
                return
            flush = self.group_flush
            assert flush is not None
            for group in [g for g in self._unwritten if every or not self._may_hold(g)]:
                batches = self._take_unwritten(group)
                try:
                    await flush(batches)
                except (MembershipLost, ReadAgain) as exc:
                    logger.warning("held state writes not made (%s): %d batches read again", exc, len(batches))
                    await self._rewind(_merged(batches), generation)
                    continue
                except BaseException:
                    self._unwritten = {group: batches, **self._unwritten}  # neither written nor acked
                    raise
                for tp, fresh in batches:
                    self._ack_batch(tp, fresh)

    @staticmethod
    async def _run_all(work: Sequence[Awaitable[bool]]) -> tuple[list[BaseException | bool], bool]:
        """Run batches concurrently to their end, even when the worker is stopping (a batch cut in
        half would have sent its MQL events but not written the states that record them); return
        each batch's result or exception and whether the worker is stopping."""
        tasks = [asyncio.ensure_future(w) for w in work]
        everything = asyncio.gather(*tasks, return_exceptions=True)
        stopping = False
        try:
            results = await asyncio.shield(everything)
        except asyncio.CancelledError:
            stopping = True
            results = await everything
        return list(results), stopping

    def _may_continue(self, generation: int) -> bool:
        return bool(self.flow_active) and self.app.consumer_generation_id == generation

    def _seek_lock(self) -> asyncio.Lock:
        """Held by every seek of this consumer's partitions: Faust's (the recovery's seek of the
        changelogs, the seek of every partition to its committed offset) and this class's."""
        if self._seeking is None:
            self._seeking = asyncio.Lock()
        return self._seeking

    def _handovers(self) -> asyncio.Event:
        """Set while the stock path may hand records to a stream (see :meth:`perform_seek`)."""
        if self._handovers_open is None:
            self._handovers_open = asyncio.Event()
            self._handovers_open.set()
        return self._handovers_open

    def open_handovers(self) -> None:
        """Called after each of Faust's flow resumes, once the stream queues are emptied."""
        self._handovers().set()

    async def perform_seek(self) -> None:
        """Faust's seek of every assigned partition to its committed offset, never interleaved
        with :meth:`_read_again`. Faust resumes the stream partitions just before it, and resumes
        the flow just after it, which empties every stream's queue: records handed to a stream
        meanwhile would be dropped unprocessed (the stock path moved the read offset past them,
        and with no committed offset yet, Faust's commit skipped them). So no record is handed
        over from here until that resume (:func:`_open_handovers_on_resume`)."""
        self._handovers().clear()
        try:
            async with self._seek_lock():
                await super().perform_seek()
        except BaseException:
            self.open_handovers()  # the recovery starts over; no resume may follow
            raise

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        """Faust's seek of changelog partitions (recovery), never interleaved with
        :meth:`_read_again`."""
        async with self._seek_lock():
            await super().seek_wait(partitions)

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:  # noqa: ASYNC109 (Faust's name)
        """Faust's fetch, noting in the consumer's thread, as the records are handed out, where each
        of their partitions' fetch position then stands (:meth:`_read_again` compares). The marks of
        partitions with records held back, or batches held unacked, are kept until they get records."""
        thread = self._thread
        client = thread._ensure_consumer()
        held = self._held
        marked = {*held, *(tp for batches in self._unwritten.values() for tp, _ in batches)}

        async def fetch() -> Any:
            partitions: Any = active_partitions  # Faust's own getmany passes it as it comes
            if held:  # not fetched from until their held records are scored
                partitions = set(client.assignment() if partitions is None else partitions).difference(held)
                if not partitions:  # (an empty set would fetch from every partition)
                    await asyncio.sleep(min(timeout, HELD_ONLY_WAIT_S))
                    return {}
            records = await thread._fetch_records(
                client, partitions, timeout=timeout, max_records=client._max_poll_records
            )
            # In the consumer's thread, as the position moves past them:
            self.in_flight = frozenset(records).union(held)
            fetched_at = self._fetched_at
            self._fetched_at = {
                **{tp: fetched_at.get(tp) for tp in marked},
                **{tp: _fetch_position(client, tp) for tp in records},
            }
            return records

        return await thread.call_thread(fetch)

    async def _read_again(self, dropped: Sequence[tuple[Any, Sequence[Any]]]) -> list[Any]:
        """Seek each dropped batch's partition back to the batch's first record, so it is read
        again, unless something has moved the partition's fetch position since the fetch that
        returned the batch: the seek of a new assignment to its committed offsets, the recovery's
        seek of a changelog, or a new assignment altogether. Then that position is the right one
        and seeking back would skip the records between it and the batch, a hole Faust's commit
        never gets past (the partition stalls at its committed offset while the worker reads on).
        The check and the seek are one step in the consumer's thread, and Faust's own seeks take
        the same lock, so none can come between them. Return the partitions sought back."""
        fetched_at = self._fetched_at
        client = self._thread._ensure_consumer()
        stale = {tp for tp, _ in dropped}.intersection(self._held)
        if stale:  # read again from before them, or from where the new assignment sought
            self._held = {tp: batch for tp, batch in self._held.items() if tp not in stale}

        async def seek_back() -> list[Any]:
            sought = []
            for tp, batch in dropped:
                mark, now = fetched_at.get(tp), _fetch_position(client, tp)
                if batch and mark is not None and now is not None and now[0] is mark[0] and now[1] == mark[1]:
                    client.seek(tp, batch[0].offset)
                    sought.append(tp)
            return sought

        async with self._seek_lock():
            sought: list[Any] = await self._thread.call_thread(seek_back)
            first = {tp: batch[0].offset for tp, batch in dropped if batch}
            for tp in sought:
                self._read_offset[tp] = first[tp] if first[tp] else None
        return sought

    async def _rewind(self, dropped: Sequence[tuple[Any, Sequence[Any]]], generation: int) -> None:
        """Read again records fetched but not processed: the fetch position has already moved
        past them, and nothing else guarantees they are read again (stock Faust drops them and
        relies on a later seek to the committed offset, which may come before this fetch)."""
        if self.app.consumer_generation_id != generation:
            await self._resync(dropped)
            return
        await self._read_again(dropped)

    async def _resync(self, fetched: Sequence[tuple[Any, Sequence[Any]]]) -> None:
        """Drop records fetched before a rebalance that has completed since. A worker frozen past
        its session timeout (SIGSTOP, a long GC or VM pause) wakes up holding such records:
        acking them, or moving the read offset past them, left the records between the committed
        offset and them unread forever, a hole Faust's commit never passes (found by
        tests/reliability/test_sigstop.py). The new assignment reads from its committed offsets;
        a batch handed out from the new assignment before its seek is read again
        (:meth:`_read_again`)."""
        sought = set(await self._read_again(fetched))
        for tp, batch in fetched:
            if batch:
                logger.log(
                    logging.WARNING if tp.topic in self.batch_topics else logging.INFO,
                    "dropped %d records of %s[%d] (offsets %d-%d) fetched before a rebalance; %s",
                    len(batch),
                    tp.topic,
                    tp.partition,
                    batch[0].offset,
                    batch[-1].offset,
                    "reading them again" if tp in sought else "reading on where the new assignment sought",
                )

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
        floor = -1 if committed is None else committed
        offsets = batch.offsets if isinstance(batch, OffsetsOnly) else map(_offset_of, batch)
        index = self._acked_index[tp]
        fresh = [offset for offset in offsets if offset >= floor and offset not in index]
        index.update(fresh)
        self._acked[tp].extend(fresh)
        self._n_acked += len(fresh)

    def _restore_in_bulk(self, tp: Any, batch: Sequence[Any]) -> bool:
        """Apply a fetched batch of a changelog partition under active recovery straight to its
        table's store (one write batch) and advance Faust's recovery offsets, as its recovery loop
        would record by record (a queue put, two tasks and a loop turn each: about 100
        microseconds). False leaves the batch to the stock path: no recovery under way, a standby
        partition, or a table whose keys and values are not raw bytes."""
        recovery: Any = self.app.tables.recovery  # type: ignore[attr-defined]
        if not recovery.in_recovery or tp not in recovery.active_tps:
            return False
        table = recovery.tp_to_table.get(tp)
        if table is None or table.key_type is not bytes or table.value_type is not bytes:
            return False
        seen = recovery.active_offsets.get(tp)
        items = [(record.key, record.value) for record in batch if seen is None or record.offset > seen]
        if not items:
            return True
        recovery.flush_buffers()  # whatever the stock path buffered is older: applied first
        last = batch[-1].offset
        write_store(table, tp.partition, items, last)
        recovery.active_offsets[tp] = last
        if not recovery.need_recovery():  # as Recovery._slurp_changelogs ends a recovery
            _clear_end_signal_on_start(recovery)
            recovery._set_recovery_ended()
            recovery.signal_recovery_end.set()
        return True

    async def _stock_path(self, tp: Any, batch: Sequence[Any], last: int | None, generation: int) -> None:
        """Faust's own per-message path, for every topic that is not batch-scored: each record to
        the conductor (and on to its agent's stream), the read offset moved past it once handed
        over. Stops where a rebalance begins or has completed meanwhile, and the records from
        there on are read again (:meth:`_rewind`). Stock Faust moved the read offset after the
        hand-over's wait even when a new assignment's seek to its committed offset came during
        it: the records between that offset and the old position were then dropped as already
        read, and the partition's commit stalled at its committed offset for good."""
        acks = self.app.topics.acks_enabled_for(tp.topic)
        previous = last
        handovers = self._handovers()
        for index, record in enumerate(batch):
            if self._may_continue(generation) and not handovers.is_set():
                await handovers.wait()  # a seek to the committed offsets, then the queues emptied
            if self._may_continue(generation):
                if acks and previous and record.offset - previous > 1:  # Faust's test: offsets that never come
                    await self._add_gap(tp, previous + 1, record.offset - 1)
                message = self._to_message(tp, record)
                await self.wait_first(self.callback(message), self.suspend_flow.wait())
            if not self._may_continue(generation):  # the record may not have been handed over
                async with self._batch_lock():
                    await self._rewind([(tp, batch[index:])], generation)
                return
            self._read_offset[tp] = previous = record.offset


_offset_of = attrgetter("offset")


class HeldOffset(NamedTuple):
    """What a held batch keeps of one record."""

    offset: int


class OffsetsOnly(Sequence[HeldOffset]):
    """A batch's records reduced to their offsets (given in order), all that acking or reading them
    again needs.
    Write-behind holds up to ``hold_s`` seconds of batches unacked; the records themselves (their
    keys, values and headers: about 0.5 KiB each) would stay in memory meanwhile, hundreds of
    thousands of them in a catch-up."""

    __slots__ = ("_offsets",)

    def __init__(self, offsets: Iterable[int]) -> None:
        self._offsets = array("q", offsets)

    @property
    def offsets(self) -> Sequence[int]:
        """The offsets themselves (no record built per offset)."""
        return self._offsets

    def __len__(self) -> int:
        return len(self._offsets)

    def __iter__(self) -> Iterator[HeldOffset]:
        return map(HeldOffset, self._offsets)

    @overload
    def __getitem__(self, index: int) -> HeldOffset: ...

    @overload
    def __getitem__(self, index: slice) -> "OffsetsOnly": ...

    def __getitem__(self, index: int | slice) -> "HeldOffset | OffsetsOnly":
        if isinstance(index, slice):
            return OffsetsOnly(self._offsets[index])
        return HeldOffset(self._offsets[index])


def _merged(batches: Sequence[tuple[Any, Sequence[Any]]]) -> list[tuple[Any, Sequence[Any]]]:
    """Batches of the same partitions from successive polls as one batch per partition, in order."""
    merged: dict[Any, list[Any]] = {}
    for tp, batch in batches:
        merged.setdefault(tp, []).extend(batch)
    return list(merged.items())


def _assignment(client: Any) -> Any:
    """The aiokafka ``client``'s current assignment, or None."""
    subscription = client._subscription.subscription
    return None if subscription is None else subscription.assignment


def _fetch_position(client: Any, tp: Any) -> tuple[Any, int | None] | None:
    """The aiokafka ``client``'s fetch state of ``tp`` (one object per assignment) and its
    position, or None when ``tp`` is not assigned."""
    assignment = _assignment(client)
    state = None if assignment is None else assignment.state_value(tp)
    return None if state is None else (state, state._position)


def _lag(assignment: Any, tp: Any) -> int:
    """How many records an assigned partition's fetch position is behind the end offset of its
    last fetch response (0 if it cannot be fetched from now, or was never fetched from)."""
    state = assignment.state_value(tp)
    if state is None or state.paused or state._position is None or state.highwater is None:
        return 0
    return max(int(state.highwater) - int(state._position), 0)


def _fetched_to_end(assignment: Any, tp: Any) -> bool:
    """Whether the fetch position of an assigned partition has reached the end offset of its last
    fetch response (or it cannot be fetched from now: paused, or not positioned yet, or never
    fetched from). Time synchronization waits only for partitions that are not."""
    state = assignment.state_value(tp)
    if state is None or state.paused:
        return True
    position, end = state._position, state.highwater
    return position is None or end is None or position >= end


def _clear_end_signal_on_start(recovery: Any) -> None:
    """Make every recovery start with its end signal cleared. Faust clears it only in its own
    changelog loop, after taking a record off its queue; a recovery ended here leaves that loop
    waiting (up to 5 s) with the signal still set, and a rebalance within those seconds then ended
    its recovery at once, before reading anything (a new owner scored from empty or stale states:
    220 of 1,000 leads differed from the replay in the SIGTERM rolling-restart scenario)."""
    if getattr(recovery, "leadscore_clears_end_signal", False):
        return
    started = recovery._set_recovery_started

    def set_recovery_started() -> None:
        recovery.signal_recovery_end.clear()
        started()

    recovery._set_recovery_started = set_recovery_started
    recovery.leadscore_clears_end_signal = True


def _coordinator(app: Any) -> Any:
    """The aiokafka group coordinator of the app's consumer, or None before it started."""
    consumer = getattr(getattr(getattr(app, "_consumer", None), "_thread", None), "_consumer", None)
    return getattr(consumer, "_coordinator", None)


def _time_heartbeats(coordinator: Any) -> None:
    """Record on the coordinator the generation and send time of each heartbeat it gets accepted
    (``leadscore_heartbeat_ok``): the broker keeps the member for a session timeout after that."""
    if hasattr(coordinator, "leadscore_heartbeat_ok"):
        return
    coordinator.leadscore_heartbeat_ok = None
    do_heartbeat = coordinator._do_heartbeat

    async def timed_heartbeat() -> bool:
        generation, sent_at = coordinator.generation, time.monotonic()
        accepted = bool(await do_heartbeat())
        if accepted and coordinator.generation == generation:
            coordinator.leadscore_heartbeat_ok = (generation, sent_at)
        return accepted

    coordinator._do_heartbeat = timed_heartbeat


async def confirm_membership(app: Any) -> None:
    """Return while this worker is still a member of the generation whose partitions it holds;
    raise :class:`MembershipLost` once the coordinator says it is not; wait while it cannot say.

    Called before a batch's outputs and before its table writes. A heartbeat accepted less than
    half the session timeout ago in the current generation is proof enough (no round trip);
    otherwise (a worker thawed after a freeze, a consumer thread starved) one heartbeat is sent
    from the consumer's thread and its answer decides."""
    coordinator = _coordinator(app)
    if coordinator is None:  # not consuming from Kafka (yet)
        return
    _time_heartbeats(coordinator)
    lease_s = float(app.conf.broker_session_timeout) / 2
    while True:
        generation = coordinator.generation
        if generation < 0 or generation != app.consumer_generation_id:
            raise MembershipLost(f"the group left generation {app.consumer_generation_id} (now {generation})")
        accepted = coordinator.leadscore_heartbeat_ok
        if accepted is not None and accepted[0] == generation and time.monotonic() - accepted[1] < lease_s:
            return
        if app.should_stop:
            raise MembershipLost("stopping before the group confirmed this member")
        try:
            answered = bool(await app.consumer._thread.call_thread(coordinator._do_heartbeat))
        except Exception:  # an unexpected answer: no proof either way, ask again
            answered = False
        if not answered:  # the coordinator unreachable (ask again), or the member reset (raised above)
            await asyncio.sleep(MEMBERSHIP_RETRY_S)


def keep_every_topic_in_metadata(client: Any) -> None:
    """Make the aiokafka ``client`` ask for the metadata of all topics whenever it would start
    tracking one: no topic it knew drops out of its metadata."""

    def add_topic(topic: str) -> Any:
        return client.force_metadata_update()

    client.add_topic = add_topic


def install_full_metadata(app: Any) -> None:
    """Make the producer that ``app`` creates keep every topic in its metadata
    (:func:`keep_every_topic_in_metadata`)."""
    new_faust_producer = app._new_producer

    def new_producer() -> Any:
        producer = new_faust_producer()
        new_client_producer = producer._new_producer

        def new_client_producer_with_full_metadata(*args: Any, **kwargs: Any) -> Any:
            client_producer = new_client_producer(*args, **kwargs)
            keep_every_topic_in_metadata(client_producer.client)
            return client_producer

        producer._new_producer = new_client_producer_with_full_metadata
        return producer

    app._new_producer = new_producer


def install_batch_consumer(
    app: Any,
    topics: Iterable[str],
    handler: BatchHandler,
    group_of: Callable[[Any], Hashable] | None = None,
    group_flush: GroupFlush | None = None,
    hold_s: float = 0.0,
    hold_min_lag: int = 5000,
    fetching: Fetching | None = None,
    on_commit_stall: Callable[[Any], None] | None = None,
    record_kinds: Mapping[str, EventKind] | None = None,
) -> None:
    """Make ``app`` consume ``topics`` in batches through ``handler([(tp, records), ...], hold)``,
    the batches of one fetch grouped by ``group_of(tp)`` (default: each topic partition alone).
    With ``group_flush`` and ``hold_s`` > 0, a group catching up (a partition ``hold_min_lag``
    records behind) may hold its writes back for up to ``hold_s`` seconds (:data:`BatchHandler`).
    ``fetching``: how the broker answers fetches (``None``: Faust's, a wait of 1,500 ms).
    ``on_commit_stall(tp)``: called for each partition read again because its commit stalled.
    ``record_kinds``: topics (of ``topics``) whose records the handler gets as scoring input
    records of the given kind (:class:`InputRecordsOf`), not as ``ConsumerRecord``."""
    batch_topics = frozenset(topics)
    kinds = {topic: kind for topic, kind in (record_kinds or {}).items() if topic in batch_topics}
    if kinds:
        install_input_records()

    def new_consumer() -> Any:
        consumer = _new_consumer(app, fetching)
        consumer.batch_topics = batch_topics
        consumer.batch_handler = handler
        consumer.record_kinds = kinds
        consumer.on_commit_stall = on_commit_stall
        if group_of is not None:
            consumer.group_of = group_of
        if group_flush is not None:
            consumer.group_flush = group_flush
            consumer.hold_s, consumer.hold_min_lag = hold_s, hold_min_lag
        return consumer

    app._new_consumer = new_consumer


def install_record_consumption(app: Any, fetching: Fetching | None = None) -> None:
    """Make ``app`` hand every record to its agents one by one, as stock Faust does, through the
    batch consumer's loop with no batch-scored topic: its stock path stops at a rebalance and
    reads the rest again, and each assignment starts with clean offset bookkeeping."""
    app._new_consumer = lambda: _new_consumer(app, fetching)


def _new_consumer(app: Any, fetching: Fetching | None) -> BatchConsumer:
    """A batch consumer made the way Faust's ``App._new_consumer`` makes its own."""
    consumer = BatchConsumer(
        app.transport,
        callback=app.topics.on_message,
        on_partitions_revoked=app._on_partitions_revoked,
        on_partitions_assigned=app._on_partitions_assigned,
        beacon=app.beacon,
        loop=app.transport.loop,
    )
    consumer.fetching = fetching
    _open_handovers_on_resume(app.flow_control, consumer)
    return consumer


def _open_handovers_on_resume(flow_control: Any, consumer: BatchConsumer) -> None:
    """Make each of Faust's flow resumes, which empty every stream queue, let ``consumer`` hand
    records to streams again afterwards (:meth:`BatchConsumer.perform_seek`)."""
    resume = flow_control.resume

    def resume_then_open_handovers() -> None:
        resume()
        consumer.open_handovers()

    flow_control.resume = resume_then_open_handovers


def release_databases(databases: list[Any]) -> None:
    """Close RocksDB databases a store has let go of: dropping the last reference closes one (and
    frees its lock, so the partition can be opened again); only when something else still holds
    one (a reference cycle, an iterator) does a full garbage collection run, as Faust always does
    (over the frozen objects too: :func:`streams.gc_pauses.collect_fully`)."""
    # A database referenced only by this list has a count of 3: the list, the loop variable and
    # getrefcount's own argument.
    _flush_all(databases)
    held = any(sys.getrefcount(database) > 3 for database in databases)
    databases.clear()
    if held:
        collect_fully()


def _flush_all(databases: list[Any]) -> None:
    """Flush every database's memtable to disk (:func:`write_store` writes without the log)."""
    for database in databases:
        database.flush(wait=True)


def install_cheap_revocation() -> None:
    """Make Faust's RocksDB store close the databases of revoked partitions, and all of them when
    it stops, without a full garbage collection each time (:func:`release_databases`). Faust runs
    one per table on every revocation and at stop: with 100,000 leads' states cached, 0.8-1.2 s
    each, so a rebalance stalled the worker for seconds."""
    from faust.stores.rocksdb import Store

    def revoke_partitions(self: Any, table: Any, tps: set[TP]) -> None:
        topics = table.changelog_topic.topics
        release_databases(
            [self._dbs.pop(tp.partition) for tp in tps if tp.topic in topics and tp.partition in self._dbs]
        )

    async def stop(self: Any) -> None:
        databases = list(self._dbs.values())
        self._dbs.clear()
        release_databases(databases)

    Store.revoke_partitions = revoke_partitions  # type: ignore[method-assign]
    Store.stop = stop  # type: ignore[method-assign]


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


async def write_states(
    table: Any,
    partition: int,
    items: Sequence[tuple[bytes, bytes | None]],
    store_cpu: Callable[[float], None] | None = None,
) -> None:
    """Send one changelog record per key on ``partition`` and wait until the broker has them all,
    then write the values to that partition's store. A value of ``None`` deletes the key (a
    tombstone on the changelog, a delete in the store). ``store_cpu`` is given the CPU seconds
    that the store write took.

    Waiting matters: Faust's own ``send_soon`` queues changelog records in a buffer that its
    commit does not fully drain (``ProducerBuffer.flush_atmost`` gives up after 0.1 s), so input
    offsets could be committed before the state they produced is durable.
    """
    if not items:
        return
    last_offset = await send_changelog(table, partition, items)
    started = time.thread_time()
    write_store(table, partition, items, last_offset)
    if store_cpu is not None:
        store_cpu(time.thread_time() - started)


async def send_changelog(table: Any, partition: int, items: Sequence[tuple[bytes, bytes | None]]) -> int:
    """Send the records with aiokafka's batch API (one produce batch instead of one Faust send per
    record), wait for the broker, and return the offset of the last one: the store's persisted
    changelog offset once the values are written (as Faust's ``Table._on_changelog_sent`` keeps
    it), so a restart restores only what came after it."""
    producer = table.app.producer._ensure_producer()
    topic = table.changelog_topic.get_topic_name()
    sent = await _send_to_partition(producer, topic, partition, items)
    last_offset = -1
    for future, records in sent:
        metadata = await future
        last_offset = int(metadata.offset) + records - 1
    return last_offset


async def send_keyed(app: Any, messages: Mapping[str, Sequence[tuple[bytes, bytes]]]) -> None:
    """Send keyed records, ``{topic: [(key, value), ...]}``, in produce batches (:func:`hand_over`)
    instead of one Faust send per record. Every topic's batches are handed to the producer before
    any answer is awaited, so a batch's outputs cost one round trip to the broker, not one per
    topic. Waits for the broker."""
    answers = []
    for topic, records in messages.items():
        if records:
            handed, error = await hand_over(app, topic, records)
            answers += handed
            if error is not None:
                raise error
    for future, _ in answers:
        await future


Headers = list[tuple[str, bytes]]  # a list: aiokafka's compiled batch builder takes no other sequence


async def hand_over(
    app: Any, topic: str, records: Sequence[tuple[bytes | None, bytes]], headers: Sequence[Headers] | None = None
) -> tuple[list[tuple[Any, list[int]]], Exception | None]:
    """Hand records (with ``headers[i]`` for ``records[i]``, if given) to the producer with
    aiokafka's batch API, one partition's produce batches after another's, each record on the
    partition Kafka's default partitioner gives it (:func:`scoring.partitioner.producer_partition`,
    as every producer of these topics places them), without waiting for the broker. Returns the
    broker's answer to each batch handed over with the indices of its records, and the error that
    stopped the rest from being handed over, if one did (those records are in no answer)."""
    producer = app.producer._ensure_producer()
    await producer.client._wait_on_metadata(topic)
    cluster = producer.client.cluster
    every = sorted(cluster.partitions_for_topic(topic))
    keyless = any(key is None for key, _ in records)  # only they go by the available partitions
    available = sorted(cluster.available_partitions_for_topic(topic)) if keyless else every
    by_partition: dict[int, list[int]] = {}
    for index, (key, _) in enumerate(records):
        by_partition.setdefault(producer_partition(key, every, available), []).append(index)
    answers: list[tuple[Any, list[int]]] = []
    for partition, indices in by_partition.items():
        items = [records[index] for index in indices]
        first = 0
        try:
            for batch, count in _filled_batches(producer, items, headers and [headers[index] for index in indices]):
                answers.append(
                    (await producer.send_batch(batch, topic, partition=partition), indices[first : first + count])
                )
                first += count
        except Exception as exc:  # e.g. the producer's queue full past its timeout, or stopping
            return answers, exc
    return answers, None


async def _send_to_partition(
    producer: Any, topic: str, partition: int, items: Sequence[tuple[bytes | None, bytes | None]]
) -> list[tuple[Any, int]]:
    """Append the records to produce batches of one partition and send them, in order; the
    broker's answer to each batch, with its record count."""
    return [
        (await producer.send_batch(batch, topic, partition=partition), count)
        for batch, count in _filled_batches(producer, items)
    ]


_NO_HEADERS: Headers = []


def _filled_batches(
    producer: Any, items: Sequence[tuple[bytes | None, bytes | None]], headers: Sequence[Headers] | None = None
) -> Iterator[tuple[Any, int]]:
    """The records appended in order to produce batches: each batch once full (and the last one),
    with its record count."""
    batch, count = producer.create_batch(), 0
    for index, (key, value) in enumerate(items):
        extra = _NO_HEADERS if headers is None else headers[index]
        if batch.append(key=key, value=value, timestamp=None, headers=extra) is None:
            yield batch, count
            batch, count = producer.create_batch(), 0
            if batch.append(key=key, value=value, timestamp=None, headers=extra) is None:
                raise ValueError(f"a record of {len(value or b'')} bytes does not fit in a produce batch")
        count += 1
    yield batch, count


def write_store(
    table: Any, partition: int, items: Sequence[tuple[bytes, bytes | None]], changelog_offset: int | None = None
) -> None:
    """Write values to the store of one partition (``None`` deletes the key), and the offset of
    the changelog record of the last one as the store's persisted offset: one RocksDB
    ``WriteBatch`` without the write-ahead log (see the module docstring), or the memory dict."""
    store = _store(table)
    if hasattr(store, "_db_for_partition"):
        import rocksdict

        batch = rocksdict.WriteBatch(raw_mode=True)
        written = 0
        # Faust's key index (key -> partition, a locked LRU cache) only speeds up its own reads,
        # which look in every partition's database for a key it lacks; this service reads by
        # partition (read_states), so a write does not fill it. A delete drops a stale entry.
        key_index = store._key_index
        for key, value in items:
            if value is None:
                batch.delete(key)
                key_index.pop(key, None)
            else:
                batch.put(key, value)
                written += len(key) + len(value)
        if changelog_offset is not None:
            batch.put(store.offset_key, str(changelog_offset).encode())
        database = store._db_for_partition(partition)
        database.write(batch, _without_log())
        _flush_when_full(store, partition, database, written + len(items))
    else:
        for key, value in items:
            if value is None:
                store.data.pop(key, None)
            else:
                store.data[key] = value
        if changelog_offset is not None:
            store.set_persisted_offset(TP(table.changelog_topic.get_topic_name(), partition), changelog_offset)


# A database's memtable is flushed once this much is written to it without the log: the most a
# restart after a SIGKILL restores from the changelog, per partition, on top of what came after
# the last commit (about 14,000 states of the default rules' average size).
UNFLUSHED_LIMIT_BYTES = 16 * 1024 * 1024
_WITHOUT_LOG: list[Any] = []


def _without_log() -> Any:
    if not _WITHOUT_LOG:
        import rocksdict

        options = rocksdict.WriteOptions()
        # A property at run time; rocksdict's stub declares it a method.
        options.disable_wal = True  # type: ignore[method-assign,assignment]
        _WITHOUT_LOG.append(options)
    return _WITHOUT_LOG[0]


def _flush_when_full(store: Any, partition: int, database: Any, written: int) -> None:
    """Count what was written to a database without the log; past the limit, flush its memtable
    (in the background: the next writes go to a new memtable meanwhile)."""
    unflushed: dict[int, int] = store.__dict__.setdefault("_leadscore_unflushed", {})
    total = unflushed.get(partition, 0) + written
    if total >= UNFLUSHED_LIMIT_BYTES:
        database.flush(wait=False)
        total = 0
    unflushed[partition] = total


def partition_items(table: Any, partition: int, partitions: int) -> Iterator[tuple[bytes, bytes]]:
    """Yield ``(key, value)`` of every key of ``table`` stored for ``partition``: the RocksDB
    database of that partition without the store's offset record, or, in the memory store (one
    dict for every partition), the keys Kafka's default partitioner puts on that partition, which
    is where every producer of the tables' keyed topics sends them."""
    store = _store(table)
    if hasattr(store, "_db_for_partition"):  # RocksDB: one database per partition
        yield from store._visible_items(store._db_for_partition(partition))
        return
    for key, value in list(store.data.items()):
        if value is not None and key_partition(key, partitions) == partition:
            yield key, value


def stored_values(table: Any, partitions: Iterable[int]) -> Iterator[bytes]:
    """Every value stored for ``partitions``: their RocksDB databases read directly (without the
    store's offset record, and without Faust's per-item codec calls), or every value of the
    memory store (one dict for every partition: callers filter)."""
    store = _store(table)
    if hasattr(store, "_db_for_partition"):
        offset_key = store.offset_key
        for partition in partitions:
            for key, value in store._db_for_partition(partition).items():
                if key != offset_key:
                    yield value
        return
    for value in list(store.data.values()):
        if value is not None:
            yield value


def drain_loop_age(app: Any) -> float | None:
    """Seconds since the batch consumer last went round its fetch loop (None if not started)."""
    last = getattr(app.consumer, "last_loop_at", None)
    return None if last is None else time.monotonic() - float(last)


def read_to_end(app: Any, tp: Any) -> bool:
    """Whether every record of an assigned partition that the consumer knows of is processed: its
    fetch position has reached the end offset of its last fetch response, and the batch consumer
    is not still scoring a batch of it. (The record-at-a-time path does not track the records in
    its streams' buffers; there this says only that the fetch reached the end.)"""
    if tp in getattr(app.consumer, "in_flight", ()):
        return False
    end = highwater(app, tp)
    if end is None:
        return False
    fetch = _fetch_position(app.consumer._thread._ensure_consumer(), tp)
    position = None if fetch is None else fetch[1]
    return position is not None and position >= end


def held_records(app: Any) -> dict[Any, int]:
    """The records of each partition fetched and held back for a later poll (the time
    synchronization waits for another topic of the partition group); empty in agent consumption."""
    return {tp: len(records) for tp, records in getattr(app.consumer, "_held", {}).items()}


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
