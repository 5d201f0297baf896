"""End-to-end latency under a paced producer: event produced -> its MQL event read by a consumer.

Fresh synthetic journeys are sent at a fixed rate, each journey's events back to back with
``occurred_at`` = now, under new lead ids. The paced stream is biased: ``QUALIFYING_SHARE`` of
its journeys are drawn from those that cross the MQL threshold when replayed at one instant
(screened offline by the scoring core; the demo generator's own mix has about 15%), so that every
level gives enough samples. A consumer of the handoff topic matches each MQL event's
``triggering_event_id`` to the moment that event was handed to the producer.
"""

import asyncio
import math
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from scoring.engine import Scorer
from scoring.events import EventKind
from streams.bench_input import BatchSender, JourneyStream, latency_templates, new_producer, topic_of
from streams.bench_proc import CONSUMED, BenchError, Worker, cpu_seconds
from streams.kafka_clients import client_options
from streams.settings import Settings

QUALIFYING_SHARE = 0.25
BATCHES = "leadscore_scoring_duration_seconds_count"  # one observation per scored batch
TEMPLATES = 2000
TICK_S = 0.01
SETTLE_S = 1.0
# Seconds of paced traffic at the first level's rate before any level is measured. In about half
# the runs without it, the first level's first 1.4 s had delays of up to 0.9 s that a consumer of
# the input topic saw too (record timestamp -> readable), before the worker: the benchmark's
# producer could not hand the broker its next batches (bench/HISTORY.md, "The run of 13:05").
WARM_UP_S = 3.0


def percentile(ordered: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of sorted values, linearly interpolated; 0 for no values."""
    if not ordered:
        return 0.0
    position = q * (len(ordered) - 1)
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class Level:
    """One paced phase and its latency percentiles (milliseconds)."""

    fraction: float
    target_rate: float
    achieved_rate: float
    seconds: float
    events: int
    samples: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    # The same reader's delay of the web visits sent (record timestamp -> readable): p50 and p99.
    input_p50_ms: float
    input_p99_ms: float
    bench_cpu_share: float  # the benchmark process's own CPU use while it produced (share of one core)
    # worker_cpu_share (added in measure_latency): the worker's, over the same time

    def to_json(self) -> dict[str, Any]:
        """The numbers, rounded."""
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in asdict(self).items()}


class MqlReader:
    """Reads the handoff topic from its end and notes when each MQL event arrived; and reads the
    web visits the benchmark sends, as any consumer would, noting how long after its timestamp
    (stamped by the benchmark's producer) each visit could be read: the delay before the worker."""

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topics.mql_handoff
        self.inputs = settings.topics.web_visits
        self.partitions = settings.partitions
        self.consumer = AIOKafkaConsumer(**client_options(settings), group_id=None, enable_auto_commit=False)
        self.arrivals: list[tuple[str, float]] = []
        self.input_delays_ms: list[float] = []

    async def start(self) -> None:
        """Assign every partition of both topics and seek to the end."""
        await self.consumer.start()
        topics = (self.topic, self.inputs)
        self.consumer.assign([TopicPartition(t, p) for t in topics for p in range(self.partitions)])
        await self.consumer.seek_to_end()

    async def run(self) -> None:
        """Read until cancelled."""
        while True:
            batches = await self.consumer.getmany(timeout_ms=100)
            now = time.time()
            for tp, records in batches.items():
                if tp.topic == self.inputs:
                    self.input_delays_ms += [now * 1000 - record.timestamp for record in records]
                    continue
                for record in records:
                    self.arrivals.append((str(orjson.loads(record.value)["triggering_event_id"]), now))

    def clear(self) -> None:
        """Forget what was read so far (a new level starts)."""
        self.arrivals.clear()
        self.input_delays_ms.clear()

    async def stop(self) -> None:
        """Stop the consumer."""
        await self.consumer.stop()


_BUCKET = re.compile(r"^(?P<name>\w+)_bucket\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')
# The worker's histograms read around each phase: (name in the report, metric, labels it must have).
WORKER_HISTOGRAMS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("", "leadscore_end_to_end_latency_seconds", {"source": "record"}),  # record timestamp -> MQL sent
    ("fetch_", "leadscore_fetch_delay_seconds", {}),  # record timestamp -> its batch's scoring starts
)


def histogram_buckets(metrics_text: str, metric: str, labels: dict[str, str]) -> dict[float, float]:
    """The cumulative buckets (le -> count) of one histogram series in a Prometheus text page: the
    ``metric`` whose labels include ``labels``."""
    buckets: dict[float, float] = {}
    for line in metrics_text.splitlines():
        match = _BUCKET.match(line)
        if match and match["name"] == metric:
            found = dict(_LABEL.findall(match["labels"]))
            if all(found.get(k) == v for k, v in labels.items()):
                buckets[math.inf if found["le"] == "+Inf" else float(found["le"])] = float(match["value"])
    return buckets


def bucket_quantile(before: dict[float, float], after: dict[float, float], q: float) -> float | None:
    """The upper bound of the bucket holding the ``q`` quantile of what was observed in between."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    target = q * counts[-1]
    return next(b for b, c in zip(bounds, counts, strict=True) if c >= target)


def _worker_buckets(worker: Worker) -> dict[str, dict[float, float]]:
    from streams.demo import http_get

    status, body = http_get(f"{worker.url}/metrics")
    text = body.decode(errors="replace") if status == 200 else ""
    return {key: histogram_buckets(text, metric, labels) for key, metric, labels in WORKER_HISTOGRAMS}


async def _pace(
    sender: BatchSender,
    journeys: Iterator[tuple[EventKind, str, dict[str, Any]]],
    topics: dict[EventKind, str],
    rate: float,
    seconds: float,
    sent_at: dict[str, float],
) -> tuple[int, float]:
    """Send ``rate`` events per second for ``seconds``; note each event's send time. Returns
    (events sent, seconds taken)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    sent = 0
    while (elapsed := loop.time() - start) < seconds:
        due = int(rate * elapsed) - sent
        if due > 0:
            now = time.time()
            now_ms = int(now * 1000)
            for _ in range(due):
                kind, lead_id, payload = next(journeys)
                payload["occurred_at"] = now_ms
                sent_at[payload["event_id"]] = now
                await sender.add(topics[kind], lead_id.encode(), orjson.dumps(payload))
            await sender.send_open()
            sent += due
        await asyncio.sleep(TICK_S)
    await sender.flush()
    return sent, loop.time() - start


async def _wait_consumed(worker: Worker, total: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        worker.check_alive()
        if (await asyncio.to_thread(worker.metric, CONSUMED) or 0) >= total:
            return
        await asyncio.sleep(0.2)
    raise BenchError(f"the worker did not consume {total} events within {timeout_s:g} s after a paced phase")


def _level(
    fraction: float, rate: float, sent: int, took: float, cpu: float, sent_at: dict[str, float], reader: MqlReader
) -> Level:
    latencies = sorted((at - sent_at[trigger]) * 1000 for trigger, at in reader.arrivals if trigger in sent_at)
    input_delays = sorted(reader.input_delays_ms)
    return Level(
        fraction=fraction,
        target_rate=rate,
        achieved_rate=sent / took,
        seconds=took,
        events=sent,
        samples=len(latencies),
        p50_ms=percentile(latencies, 0.50),
        p95_ms=percentile(latencies, 0.95),
        p99_ms=percentile(latencies, 0.99),
        max_ms=latencies[-1] if latencies else 0.0,
        input_p50_ms=percentile(input_delays, 0.50),
        input_p99_ms=percentile(input_delays, 0.99),
        bench_cpu_share=cpu / took,
    )


async def measure_latency(
    settings: Settings,
    worker: Worker,
    consumed_before: int,
    max_rate: float,
    fractions: tuple[float, ...],
    seconds: float,
    scorer: Scorer,
    run: str,
) -> dict[str, Any]:
    """Run one paced phase per fraction of ``max_rate`` against a caught-up worker."""
    templates = await asyncio.to_thread(latency_templates, 11, TEMPLATES, scorer, int(time.time() * 1000))
    if not templates.qualifying or not templates.other:
        raise BenchError("no qualifying (or no other) journey among the latency templates")
    journeys = iter(JourneyStream(templates, QUALIFYING_SHARE, run, seed=13))
    topics = topic_of(settings.topics)
    reader = MqlReader(settings)
    await reader.start()
    reading = asyncio.create_task(reader.run())
    producer = new_producer(client_options(settings))
    await producer.start()
    levels: list[dict[str, Any]] = []
    total = consumed_before
    try:
        sender = BatchSender(producer, settings.partitions)
        if fractions:  # not measured: the broker's first seconds of traffic after the catch-up
            warm, _ = await _pace(sender, journeys, topics, fractions[0] * max_rate, WARM_UP_S, {})
            total += warm
            await _wait_consumed(worker, total, timeout_s=60.0)
            reader.clear()
        for fraction in fractions:
            sent_at: dict[str, float] = {}
            cpu, worker_cpu_start = cpu_seconds(), cpu_seconds(worker.pid)
            batches = await asyncio.to_thread(worker.metric, BATCHES) or 0.0
            buckets = await asyncio.to_thread(_worker_buckets, worker)
            sent, took = await _pace(sender, journeys, topics, fraction * max_rate, seconds, sent_at)
            cpu, worker_cpu = cpu_seconds() - cpu, cpu_seconds(worker.pid) - worker_cpu_start
            total += sent
            await _wait_consumed(worker, total, timeout_s=max(60.0, 4 * seconds))
            worker_cpu_drained = cpu_seconds(worker.pid) - worker_cpu_start  # until the phase's events are scored
            await asyncio.sleep(SETTLE_S)
            level = _level(fraction, fraction * max_rate, sent, took, cpu, sent_at, reader).to_json()
            level["worker_cpu_share"] = round(worker_cpu / took, 3)
            level["worker_cpu_us_per_event"] = round(worker_cpu_drained / max(sent, 1) * 1e6, 1)
            batches = (await asyncio.to_thread(worker.metric, BATCHES) or 0.0) - batches
            level["worker_batches"] = int(batches)
            level["events_per_batch"] = round(sent / max(batches, 1), 1)
            after = await asyncio.to_thread(_worker_buckets, worker)
            for key, _, _ in WORKER_HISTOGRAMS:
                for q in (0.5, 0.99):
                    bound = bucket_quantile(buckets[key], after[key], q)
                    level[f"worker_{key}p{int(q * 100)}_le_ms"] = None if bound is None else bound * 1000
            levels.append(level)
            reader.clear()
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        await producer.stop()
        await reader.stop()
    return {
        "max_rate_events_per_s": round(max_rate, 1),
        "seconds_per_level": seconds,
        "qualifying_share": QUALIFYING_SHARE,
        "natural_qualifying_share": round(templates.natural_share, 3),
        "templates": TEMPLATES,
        "levels": levels,
        "method": (
            "fresh journeys (new lead ids) sent back to back at a fixed rate with occurred_at = now; "
            f"{QUALIFYING_SHARE:.0%} of journeys drawn from those that cross the MQL threshold at one instant "
            f"(the demo mix has {templates.natural_share:.0%}); latency = arrival of the MQL event at a "
            "consumer of the handoff topic minus the moment its triggering event was handed to the producer; "
            "worker_p50/p99_le_ms: the bucket bounds of the worker's own histogram (record timestamp -> MQL sent); "
            "worker_fetch_p50/p99_le_ms: the same for its fetch delay (record timestamp -> its batch's scoring "
            "starts: the part before the worker); "
            f"{WARM_UP_S:g} s of paced traffic at the first level's rate before the first level, not measured; "
            "input_p50/p99_ms: record timestamp (the benchmark's producer) -> readable by a plain consumer of the "
            "web visits topic, the delay before the worker; "
            "worker_cpu_share: the worker's CPU over the phase (1.0 = one core); worker_cpu_us_per_event: the "
            "worker's CPU from the phase's start until it consumed the phase's events, per event; "
            "worker_batches: batches scored "
            "(ticks included) while the phase ran and drained"
        ),
    }
