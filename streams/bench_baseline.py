"""The benchmark's reference: a raw aiokafka loop, run as its own process.

``python -m streams.bench_baseline --bootstrap B --topics T1,T2 --output O --total N --group G``
reads the topics from the beginning with ``getmany(max_records=5000)``, decodes each value with
orjson, keeps a per-lead score in a dict (+10 for a pricing page, else +1), sends one output
record per touched lead per batch, and stops after ``N`` records (and a final producer flush).
It prints one JSON line: the first and last samples (time, records, CPU from ``/proc/self/stat``,
the same counter the benchmark reads for the worker) and its peak RSS. It runs on the event loop a
worker started from the same environment runs on (asyncio, or uvloop when ``FAUST_LOOP=uvloop``).
"""

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams.bench_proc import cpu_seconds, peak_rss_bytes

MAX_RECORDS = 5000


def points(value: bytes) -> int:
    """The toy rule: +10 for a pricing page, else +1."""
    url = orjson.loads(value).get("url")
    return 10 if isinstance(url, str) and "/pricing" in url else 1


def add_points(records: Iterable[Any], scores: dict[bytes, int], touched: dict[bytes, int]) -> None:
    """Add each record's points to its lead's score, and the new score to ``touched``."""
    for record in records:
        key = record.key
        touched[key] = scores[key] = scores.get(key, 0) + points(record.value)


def output_value(key: bytes, score: int) -> bytes:
    """The output record's value for a touched lead."""
    return orjson.dumps({"lead_id": key.decode(), "score": score})


async def run_loop(
    client: Mapping[str, Any], topics: Sequence[str], output: str, total: int, group: str
) -> dict[str, float]:
    """Consume ``total`` records and return the first and last samples (``client``: bootstrap servers
    and security, as :func:`streams.kafka_clients.client_options` gives them)."""
    consumer = AIOKafkaConsumer(
        *topics, **client, group_id=group, auto_offset_reset="earliest", enable_auto_commit=True
    )
    producer = AIOKafkaProducer(**client, acks="all")
    await consumer.start()
    await producer.start()
    scores: dict[bytes, int] = {}
    seen = 0
    first: tuple[float, int, float] | None = None
    try:
        while seen < total:
            batches = await consumer.getmany(timeout_ms=1000, max_records=MAX_RECORDS)
            touched: dict[bytes, int] = {}
            for records in batches.values():
                add_points(records, scores, touched)
                seen += len(records)
            for key, score in touched.items():
                await producer.send(output, key=key, value=output_value(key, score))
            if first is None and seen:
                first = (time.monotonic(), seen, cpu_seconds())
        await producer.flush()
        last = (time.monotonic(), seen, cpu_seconds())
    finally:
        await producer.stop()
        await consumer.stop()
    assert first is not None
    return {
        "first_t": first[0],
        "first_events": first[1],
        "first_cpu_s": first[2],
        "last_t": last[0],
        "last_events": last[1],
        "last_cpu_s": last[2],
        "leads": len(scores),
        "peak_rss_bytes": peak_rss_bytes(),
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Run the loop from command-line arguments and print its JSON result."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated")
    parser.add_argument("--output", required=True)
    parser.add_argument("--total", required=True, type=int)
    parser.add_argument("--group", required=True)
    args = parser.parse_args(argv)
    if os.environ.get("FAUST_LOOP") == "uvloop":  # the event loop a worker started here would run on
        import uvloop

        uvloop.install()
    from streams.kafka_clients import security_options
    from streams.settings import settings_from_env

    bootstrap = [s.strip() for s in args.bootstrap.split(",")]
    client = {"bootstrap_servers": bootstrap, **security_options(settings_from_env().security)}
    result = asyncio.run(run_loop(client, args.topics.split(","), args.output, args.total, args.group))
    sys.stdout.write(orjson.dumps(result).decode() + "\n")


if __name__ == "__main__":
    main()
