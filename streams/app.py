"""The Faust app, built by a factory from one frozen settings object."""

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import faust

from scoring.due_index import DueIndex
from scoring.engine import Scorer
from scoring.events import EventKind
from scoring.partitioner import producer_partition
from scoring.rules import parse_rules
from scoring.state import LeadState, Stage
from streams.clock import Clock
from streams.faust_internals import install_cheap_revocation, install_full_metadata
from streams.huge_pages import heap_on_huge_pages
from streams.kafka_clients import faust_credentials
from streams.metrics import Metrics
from streams.settings import Settings
from streams.topics import Topics, declare_topics

VERSION = "0.1.0"


@dataclass
class Unwritten:
    """A partition's changed states held back from the table while it catches up (write-behind),
    and the inbound records they came from, counted as consumed once the states are written."""

    generation: int  # the consumer group generation they were held in
    states: dict[bytes, LeadState] = field(default_factory=dict)
    records: list[tuple[str, int]] = field(default_factory=list)  # (topic, records) per batch


@dataclass
class Service:
    """One worker's app and everything its agents and views share."""

    app: Any
    settings: Settings
    topics: Topics
    leads: Any  # faust Table: lead id (bytes) -> encoded LeadState (bytes)
    scorer: Scorer
    metrics: Metrics
    clock: Clock
    due: DueIndex = field(default_factory=DueIndex)
    # Inbound topic name -> event kind, computed once (looked up for every record).
    topic_kinds: dict[str, EventKind] = field(default_factory=dict)
    stage_counts: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in Stage})
    recovered: bool = False
    # Why consumption waits, while the dead-letter topic refuses records (agents/dead_letters.py).
    dead_letter_blocked: str | None = None
    identities: Any = None  # faust Table: identity key (bytes) -> encoded IdentityState (agents/identity.py)
    # The batch consumer's path for lead-identities: (tp, records of one partition) (agents/identity.py).
    identity_batch: Callable[[Any, Sequence[Any]], Awaitable[None]] | None = None
    erasures: Any = None  # faust Table: lead id (bytes) -> b"<erased_at ms>:<crossings>"; no personal data
    # (topic, partition) -> (wall time of the last record processed, that record's timestamp)
    progress: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)

    locks: dict[int, asyncio.Lock] = field(default_factory=dict)
    # Decoded states of recently written leads, per partition, least recent first: saves a store
    # read and a decode per lead per batch. Cleared on every assignment and after any failed batch.
    caches: dict[int, dict[bytes, LeadState]] = field(default_factory=dict)
    # Changed states not written yet, per partition (agents/output.py ``apply_result``); and the
    # partitions whose held states were forgotten since the consumer last heard (it reads again).
    unwritten: dict[int, Unwritten] = field(default_factory=dict)
    forgotten: set[int] = field(default_factory=set)
    # Until when (monotonic s) a partition writes every batch, after its held states were forgotten.
    hold_paused: dict[int, float] = field(default_factory=dict)

    def state_cache(self, partition: int) -> dict[bytes, LeadState]:
        """The partition's cache of decoded states, least recently written first (a write moves
        a state to the end: agents/output.py ``record_states``). Once it holds its bound, the
        quarter written longest ago is dropped, so the leads still active stay decoded."""
        cache = self.caches.setdefault(partition, {})
        bound = self.settings.state_cache_per_partition
        if len(cache) >= bound:
            excess = len(cache) - bound * 3 // 4
            if excess >= len(cache):
                cache.clear()
            else:
                for key in list(islice(cache, excess)):
                    del cache[key]
        return cache

    def forget_states(self, partition: int) -> None:
        """Drop a partition's decoded states after a failure that may have left them half-applied:
        the cache (read again from the store) and the states held back from the store, whose
        input the consumer then reads again (``forgotten``)."""
        self.caches.pop(partition, None)
        if self.unwritten.pop(partition, None) is not None:
            self.forgotten.add(partition)

    def forget_all_states(self) -> None:
        """Drop every decoded state (a new assignment: the store is the truth again, and every
        batch not acked is read again from the committed offsets)."""
        self.caches.clear()
        self.unwritten.clear()
        self.forgotten.clear()

    def partition_lock(self, partition: int) -> asyncio.Lock:
        """Held from reading a partition's states to writing them: the scoring path and the decay
        path run as separate tasks and must not interleave a read-modify-write of one lead."""
        lock = self.locks.get(partition)
        if lock is None:
            lock = self.locks[partition] = asyncio.Lock()
        return lock

    def note_progress(self, topic: str, partition: int, record_timestamp_s: float) -> None:
        """Record that a partition advanced."""
        now = time.time()
        self.progress[(topic, partition)] = (now, record_timestamp_s)
        self.metrics.partition_progress.labels(topic, str(partition)).set(now)

    def count_consumed(self, topic: str, records: int) -> None:
        """Count inbound records done with (scored, a duplicate, dead-lettered or passed on), once
        their outputs and states are written (a batch dropped after a lost membership, or whose
        held states were forgotten, is not)."""
        kind = self.topic_kinds.get(topic)
        self.metrics.events_consumed.labels(topic, kind.value if kind else "unknown").inc(records)

    def count_stages(self, moves: dict[str, int]) -> None:
        """Track leads per stage as states are written: ``moves`` holds each stage's change in
        leads (one gauge update per stage a batch moved leads in or out of, not per lead)."""
        for stage, change in moves.items():
            if change:
                self.stage_counts[stage] += change
                self.metrics.leads.labels(stage).set(self.stage_counts[stage])


def create_app(settings: Settings) -> Service:
    """Build the app, its topics, its lead table, its agents and its web views."""
    rules = parse_rules(settings.rules_text(), str(settings.rules_file))
    app = faust.App(
        settings.app_id,
        broker=settings.broker_url,
        broker_credentials=faust_credentials(settings.security),  # None for PLAINTEXT
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        topic_allow_declare=True,
        processing_guarantee="at_least_once",
        consumer_auto_offset_reset="earliest",
        web_host=settings.web_host,
        web_port=settings.web_port,
        canonical_url=settings.canonical_url or f"http://{settings.web_host}:{settings.web_port}",
        web_in_thread=False,
        table_standby_replicas=0,
        broker_session_timeout=settings.group.session_timeout_s,
        broker_heartbeat_interval=settings.group.heartbeat_interval_s,
        consumer_group_instance_id=settings.group.instance_id,
        broker_max_poll_records=settings.max_poll_records or None,
        producer_max_batch_size=settings.produce_batch_bytes,  # see Settings.produce_batch_bytes
        consumer_max_fetch_size=settings.fetch_bytes,
        producer_partitioner=producer_partition,  # Kafka's default, with the compiled murmur2
    )
    install_full_metadata(app)  # before anything creates the producer
    install_cheap_revocation()
    topics = declare_topics(app, settings)
    leads = app.Table(
        "leads",
        default=None,
        partitions=settings.partitions,
        key_type=bytes,  # bytes types make Faust use the raw codec for the table and its changelog
        value_type=bytes,
    )
    erasures = app.Table(  # co-partitioned with the lead table: written on the lead's partition
        "erasures", default=None, partitions=settings.partitions, key_type=bytes, value_type=bytes
    )
    service = Service(
        app=app,
        settings=settings,
        topics=topics,
        leads=leads,
        scorer=Scorer(rules),
        metrics=Metrics(VERSION, rules.version),
        clock=Clock(settings.clock_speed, settings.clock_epoch_ms),
        topic_kinds=settings.topics.inbound(),
        erasures=erasures,
    )
    service.metrics.heap_huge_pages.set(1 if heap_on_huge_pages(settings.glibc_tunables) else 0)
    from agents import register_agents  # agents need the service they are registered on
    from streams.monitoring import register_monitoring
    from streams.web import register_views

    register_agents(service)
    register_views(service)
    register_monitoring(service)
    if settings.consumption == "batch":
        from agents.batch import score_batches, write_held_states
        from streams.faust_internals import Fetching, install_batch_consumer

        identities_topic, identity_batch = settings.topics.identities, service.identity_batch
        assert identity_batch is not None

        async def handle(batches: Sequence[tuple[Any, Sequence[Any]]], hold: bool) -> bool:
            tp, records = batches[0]
            if tp.topic == identities_topic:  # its own group: one batch, always written
                await identity_batch(tp, records)
                return True
            return await score_batches(service, batches, hold)

        async def flush(batches: Sequence[tuple[Any, Sequence[Any]]]) -> None:
            await write_held_states(service, batches)

        def group_of(tp: Any) -> tuple[bool, int]:
            """Inbound batches of one partition number are scored together (their leads' states
            live on that partition); an identity batch is handled alone."""
            return tp.topic == identities_topic, tp.partition

        install_batch_consumer(
            app,
            [*settings.topics.inbound(), identities_topic],
            handle,
            group_of,
            flush,
            settings.write_behind_s,
            settings.write_behind_min_lag,
            Fetching(settings.fetch_wait_ms, settings.fetch_min_bytes),
            lambda tp: service.metrics.commit_stalls.labels(tp.topic).inc(),
            record_kinds=service.topic_kinds,
        )
    else:
        from streams.faust_internals import Fetching, install_record_consumption

        install_record_consumption(app, Fetching(settings.fetch_wait_ms, settings.fetch_min_bytes))
    return service
