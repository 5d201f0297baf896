"""Live demo traffic: synthetic lead journeys sent to the inbound topics as the service clock runs.

New journeys start at a steady rate in real time; each begins "now" on the service clock and its
events are sent once the clock reaches their simulated times, so with ``LEADSCORE_CLOCK_SPEED``
20000 a simulated day passes in about 4.3 real seconds. Pending events wait in a heap ordered by
time, so memory holds only the journeys still under way.
"""

import asyncio
import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaProducer

from scoring.events import EventKind
from streams.clock import Clock
from streams.kafka_clients import client_options
from streams.settings import Settings
from streams.synthetic import TimedEvent, journey, lead_id_for
from streams.topics import ensure_topics

MAX_SLEEP_S = 0.25


@dataclass
class _Schedule:
    """Journeys started so far and their events not yet due, by simulated time."""

    rng: random.Random
    salt: int
    started: int = 0
    pending: list[tuple[int, int, TimedEvent]] = field(default_factory=list)
    _seq: int = 0

    def start_journey(self, now_ms: int) -> None:
        """Start a new lead's journey at clock time ``now_ms``."""
        lead = journey(self.rng, lead_id_for(self.started, self.salt), now_ms)
        self.started += 1
        for event in lead.events:
            heapq.heappush(self.pending, (event.occurred_at, self._seq, event))
            self._seq += 1

    def pop_due(self, now_ms: int) -> list[TimedEvent]:
        """The events whose simulated time has come, oldest first."""
        due: list[TimedEvent] = []
        while self.pending and self.pending[0][0] <= now_ms:
            due.append(heapq.heappop(self.pending)[2])
        return due

    def next_due_ms(self) -> int | None:
        """The simulated time of the next pending event, if any."""
        return self.pending[0][0] if self.pending else None


def _raise_failed(inflight: list["asyncio.Future[object]"]) -> list["asyncio.Future[object]"]:
    """Drop delivered sends; raise the error of a failed one."""
    for future in inflight:
        error = future.exception() if future.done() else None
        if error is not None:
            raise error
    return [future for future in inflight if not future.done()]


def _sleep_s(clock: Clock, schedule: _Schedule, real_now: float, wake_at: float) -> float:
    """How long to sleep: until the next journey start, the next due event or the deadline."""
    wait = wake_at - real_now
    due_ms = schedule.next_due_ms()
    if due_ms is not None:
        wait = min(wait, (due_ms - clock.now_ms()) / 1000 / max(clock.speed, 1.0))
    return min(max(wait, 0.0), MAX_SLEEP_S)


async def produce_traffic(
    settings: Settings,
    leads_per_minute: int,
    duration_s: float,
    seed: int | None,
    on_event: Callable[[TimedEvent], None] | None = None,
) -> int:
    """Send synthetic journeys for ``duration_s`` real seconds (0: until cancelled); return the
    number of events sent. ``on_event`` is called for each event as it is handed to the producer.

    Missing topics are created first with the configured partition count: left to the broker's
    auto-creation they would get its default count and a worker would refuse them.
    """
    if leads_per_minute <= 0:
        raise ValueError("leads_per_minute must be positive")
    await ensure_topics(settings)
    clock = Clock(settings.clock_speed, settings.clock_epoch_ms)
    topics: dict[EventKind, str] = {kind: topic for topic, kind in settings.topics.inbound().items()}
    rng = random.Random(seed)
    schedule = _Schedule(rng, salt=rng.getrandbits(24))
    producer = AIOKafkaProducer(**client_options(settings), linger_ms=20, acks="all")
    await producer.start()
    sent = 0
    try:
        loop = asyncio.get_running_loop()
        begin = loop.time()
        deadline = begin + duration_s if duration_s > 0 else math.inf
        interval_s = 60.0 / leads_per_minute
        next_start = begin
        inflight: list[asyncio.Future[object]] = []
        while (real_now := loop.time()) < deadline:
            while next_start <= real_now:
                schedule.start_journey(clock.now_ms())
                next_start += interval_s
            for event in schedule.pop_due(clock.now_ms()):
                value = orjson.dumps(event.payload)
                inflight.append(await producer.send(topics[event.kind], key=event.lead_id.encode(), value=value))
                sent += 1
                if on_event is not None:
                    on_event(event)
            inflight = _raise_failed(inflight)
            await asyncio.sleep(_sleep_s(clock, schedule, loop.time(), min(next_start, deadline)))
        await producer.flush()
        _raise_failed(inflight)
    finally:
        await producer.stop()  # flushes what is still buffered, also on cancellation
    return sent
