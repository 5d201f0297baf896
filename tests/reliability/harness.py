"""What the fault scenarios share: a producer under load, and the invariants checked after a fault.

:func:`verify` checks, on the real broker, that the inbound topics were consumed to their end on
every partition, that every event sent is accounted for (in its lead's ``seen`` set, i.e. scored,
or on ``lead-dead-letters``), that the lead table (read back from its changelog) equals a replay of
the input through the pure core, and that every threshold crossing of the table is on
``mql-handoff`` under exactly one ``event_id``. It returns the figures for the report.

The number of crossings is not compared with the replay's: the score is the same in any order,
but a lead that qualifies, decays back to nurture and qualifies again does so at points that
depend on how its topics' events interleave, and the replay reads them topic by topic.
"""

import asyncio
import base64
import contextlib
import os
import random
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from scoring.engine import Scorer
from scoring.state import LeadState, decode_state
from streams.local_kafka import LocalKafka, LocalKafkaConfig
from streams.settings import TopicNames
from tests.integration.kafka import run
from tests.integration.test_batch_reliability import read_all, replay, same_state, wait_consumed
from tests.reliability.report import RESULTS, record

Message = tuple[str, bytes | None, bytes | None]
SOAK = os.environ.get("LEADSCORE_SOAK", "") not in ("", "0")
# The group notices a dead or frozen worker after this many seconds (Kafka's minimum is 6).
SESSION_TIMEOUT_S = 8
WORKER_ENV = {"LEADSCORE_SESSION_TIMEOUT": str(SESSION_TIMEOUT_S)}


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def own_broker(name: str, ports: range, *, sasl_ssl: bool = False) -> Any:
    """A module-scoped fixture called ``name``: a broker of the module's own (``LocalKafka``, never
    the shared one) on a free port of ``ports``, its controller ``len(ports)`` ports above, in its
    own state directory, stopped after the module. Each module takes a range no other one uses."""

    @pytest.fixture(scope="module", name=name)
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
        """The module's own broker, started for its first test and stopped after its last."""
        shift = len(ports)
        free = [p for p in random.sample(ports, shift) if _free(p) and _free(p + shift)]
        assert free, f"no free port pair in {ports.start}-{ports.stop + shift - 1}"
        broker = LocalKafka(
            LocalKafkaConfig(
                port=free[0],
                controller_port=free[0] + shift,
                state_dir=tmp_path_factory.mktemp(name),
                heap="512m",
                start_timeout_s=180,
                sasl_ssl=sasl_ssl,
            )
        )
        broker.start()
        yield broker
        broker.stop()

    return fixture


def soak(ci: int, long: int) -> int:
    """``ci`` in the bounded run, ``long`` with ``LEADSCORE_SOAK=1``."""
    return long if SOAK else ci


class Load:
    """A producer thread sending messages in order, spread over ``duration_s``, that outlives a
    broker outage: a chunk the broker did not acknowledge is sent again (the worker counts a
    redelivered ``event_id`` once, and the replay reads the topics as they are), by a new
    producer. An idempotent producer whose batch failed has numbered its later batches past
    what the broker holds, and the broker refuses every one of them after that
    (``OutOfOrderSequenceNumber``: a CI run's load resent the same chunk for ten minutes)."""

    # The longest a chunk may wait for the broker's acknowledgements before it is sent again.
    CHUNK_TIMEOUT_S = 60.0
    # The longest a failed producer may take to stop before it is left behind.
    STOP_TIMEOUT_S = 10.0

    def __init__(self, bootstrap: str, messages: list[Message], duration_s: float, chunk: int = 100) -> None:
        self.bootstrap = bootstrap
        self.messages = messages
        self.duration_s = duration_s
        self.chunk = chunk
        self.sent = 0
        self.resent_chunks = 0
        self.producers = 0
        self.producers_left_running = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="reliability-load", daemon=True)

    def start(self) -> "Load":
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout_s: float = 540) -> None:
        """Wait until every message is acknowledged by the broker."""
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), (
            f"the load did not finish in {timeout_s} s ({self.sent} sent, {self.resent_chunks} chunks resent, "
            f"{self.producers} producers, {self.producers_left_running} left running)"
        )
        if self.error is not None:
            raise AssertionError(f"the load failed: {self.error!r}")

    def _run(self) -> None:
        try:
            asyncio.run(self._send_all())
        except BaseException as exc:  # reported by wait()
            self.error = exc

    async def _send_all(self) -> None:
        chunks = [self.messages[i : i + self.chunk] for i in range(0, len(self.messages), self.chunk)]
        pause = self.duration_s / max(len(chunks), 1)
        producer = await self._new_producer()
        try:
            for chunk in chunks:
                started = time.monotonic()
                while True:
                    try:
                        futures = [await producer.send(t, key=k, value=v) for t, k, v in chunk]
                        await asyncio.wait_for(asyncio.gather(*futures), self.CHUNK_TIMEOUT_S)
                        break
                    except (KafkaError, TimeoutError):
                        self.resent_chunks += 1
                        await self._stop(producer)
                        await asyncio.sleep(1)
                        producer = await self._new_producer()
                self.sent += len(chunk)
                await asyncio.sleep(max(0.0, pause - (time.monotonic() - started)))
        finally:
            await self._stop(producer)

    async def _new_producer(self) -> AIOKafkaProducer:
        """A started idempotent producer (a new producer id), once the broker answers."""
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap, acks="all", enable_idempotence=True, request_timeout_ms=15000
            )
            try:
                await producer.start()
            except KafkaError:
                await self._stop(producer)
                await asyncio.sleep(1)
                continue
            self.producers += 1
            return producer

    async def _stop(self, producer: AIOKafkaProducer) -> None:
        """Stop ``producer``; one still retrying batches the broker refuses is left behind, counted."""
        try:
            await asyncio.wait_for(producer.stop(), self.STOP_TIMEOUT_S)
        except TimeoutError:
            self.producers_left_running += 1


def random_moments(seed: int, count: int, low_s: float, high_s: float) -> list[float]:
    """Deterministic random pauses between faults."""
    rng = random.Random(seed)
    return [rng.uniform(low_s, high_s) for _ in range(count)]


@dataclass
class Figures:
    """What one scenario's run measured."""

    sent: int = 0
    lost: int = 0
    duplicated_ids: int = 0
    redeliveries: int = 0
    dead_lettered: int = 0
    crossings: int = 0
    missing_crossings: list[tuple[str, int]] = field(default_factory=list)
    # Crossings sent, then not made again after a redelivery: a lead's events come from several
    # topics, and a redelivery may interleave them otherwise, which moves a requalification.
    extra_crossings: int = 0
    problems: list[str] = field(default_factory=list)
    partitions: int = 0
    table: dict[str, LeadState] = field(default_factory=dict)
    expected: dict[str, LeadState] = field(default_factory=dict)


def verify(bootstrap: str, names: str, scorer: Scorer, sent: list[Message], timeout_s: float = 300) -> Figures:
    """Check every invariant after the faults (see the module docstring); the problems found are in
    ``Figures.problems`` (the caller records the figures, then asserts there are none)."""
    app_id = names.rstrip(".") + "-app"
    inbound = {names + topic: kind for topic, kind in TopicNames().inbound().items()}
    figures = Figures(sent=len(sent))
    wait_consumed(bootstrap, app_id, list(inbound), timeout_s)  # no partition left unconsumed
    records = run(read_all(bootstrap, list(inbound)))
    figures.partitions = len({(r.topic, r.partition) for r in records})
    changelog = run(read_all(bootstrap, [f"{app_id}-leads-changelog"]))
    dead = run(read_all(bootstrap, [names + "lead-dead-letters"]))
    mqls = run(read_all(bootstrap, [names + "mql-handoff"]))

    lead_partition = {r.key: r.partition for r in records}
    wrong = [(r.key, r.partition) for r in changelog if lead_partition.get(r.key) != r.partition]
    if wrong:
        figures.problems.append(f"{len(wrong)} changelog records on a wrong partition: {wrong[:3]}")
    table: dict[str, LeadState] = {}
    for r in changelog:  # the last record of each key wins, as in recovery
        if r.value is None:
            table.pop((r.key or b"").decode(), None)
        else:
            state = decode_state(r.value)
            table[state.lead_id] = state
    expected = replay(scorer, records, inbound)
    figures.table, figures.expected = table, expected
    if set(table) != set(expected):
        figures.problems.append(
            f"leads only in the table: {sorted(set(table) - set(expected))[:3]}, "
            f"only in the replay: {sorted(set(expected) - set(table))[:3]}"
        )
    differ = [lead for lead in expected if lead in table and not same_state(table[lead], expected[lead])]
    if differ:
        figures.problems.append(f"{len(set(differ))} leads differ from the replay, e.g. {differ[0]}")

    # Every event sent is accounted for: scored (in its lead's seen set) or dead-lettered.
    accounted = {event_id for state in table.values() for event_id in state.seen}
    for r in dead:
        letter = orjson.loads(r.value or b"{}")
        with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            accounted.add(str(orjson.loads(base64.b64decode(letter.get("value_b64") or ""))["event_id"]))
    figures.dead_lettered = len(dead)
    sent_ids = {str(orjson.loads(value or b"{}")["event_id"]) for _, _, value in sent}
    figures.lost = len(sent_ids - accounted)
    if figures.lost:
        figures.problems.append(
            f"{figures.lost} events neither scored nor dead-lettered: {sorted(sent_ids - accounted)[:3]}"
        )

    # Every crossing of the table is on mql-handoff under exactly one event id.
    ids: dict[tuple[str, int], set[str]] = defaultdict(set)
    copies: Counter[tuple[str, int, str]] = Counter()
    for r in mqls:
        mql = orjson.loads(r.value or b"{}")
        ids[(mql["lead_id"], mql["crossing"])].add(mql["event_id"])
        copies[(mql["lead_id"], mql["crossing"], mql["event_id"])] += 1
    figures.redeliveries = sum(copies.values()) - len(copies)
    figures.duplicated_ids = sum(1 for v in ids.values() if len(v) > 1)
    should = {(lead, n) for lead, state in table.items() for n in range(1, state.crossings + 1)}
    figures.crossings = len(should)
    figures.missing_crossings = sorted(should - set(ids))
    extra = sorted(set(ids) - should)
    if figures.duplicated_ids:
        figures.problems.append(f"{figures.duplicated_ids} crossings under two or more event ids")
    if figures.missing_crossings:
        figures.problems.append(f"{len(figures.missing_crossings)} crossings missing: {figures.missing_crossings[:3]}")
    figures.extra_crossings = len(extra)
    if not should:
        figures.problems.append("no crossing at all: the load cannot show a lost or doubled handoff")
    return figures


def lost_total(figures: Figures) -> int:
    """Events lost plus crossings missing: what the report calls lost."""
    return figures.lost + len(figures.missing_crossings)


def crossings(figures: Figures) -> str:
    """The crossings, for a report's notes."""
    return f"{figures.crossings} crossings ({figures.extra_crossings} sent, then superseded after a redelivery)"


def record_figures(scenario: str, figures: Figures, *, faults: int, notes: str = "", path: Path = RESULTS) -> None:
    """Record one scenario's figures in the report (:func:`tests.reliability.report.record`); lost is
    :func:`lost_total`. A scenario that does not run :func:`verify` passes the ``Figures`` it counted."""
    record(
        scenario,
        faults=faults,
        sent=figures.sent,
        lost=lost_total(figures),
        duplicated_ids=figures.duplicated_ids,
        redeliveries=figures.redeliveries,
        dead_lettered=figures.dead_lettered,
        notes=notes,
        path=path,
    )
