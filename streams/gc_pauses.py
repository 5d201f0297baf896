"""Garbage-collector pauses of the worker: timed, counted, and kept out of the scoring path.

A worker keeps hundreds of thousands of decoded lead states in its per-partition caches; a full
(generation 2) collection walks every one of them and stops the event loop for the whole walk:
about 0.9 s for 300,000 states on a 2-core machine of this project's kind, long enough to own the
p99 of event -> MQL latency. Lead states hold no reference cycles, so the collections that matter
are the young ones (0 and 1), which stay automatic and cheap. :func:`defer_full_collections` stops
the automatic full collections and runs one every ``interval_s`` instead (0: automatic, as stock
Python does), so at most one such pause lands per interval.
"""

import gc
import logging
import time
from typing import Any

from prometheus_client import Histogram

log = logging.getLogger(__name__)
# A pause at least this long is logged (a warning: it delays every partition of the worker).
LONG_PAUSE_S = 0.1
# The gen-2 threshold that keeps automatic full collections from ever running.
_NEVER = 1 << 30


def time_pauses(histogram: Histogram) -> None:
    """Observe every collection's duration in ``histogram`` (label ``generation``); log long ones."""
    started: list[float] = [0.0, 0.0]

    def on_collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
            started[1] = time.process_time()
            return
        pause = time.perf_counter() - started[0]
        cpu = time.process_time() - started[1]
        generation = int(info.get("generation", -1))
        histogram.labels(str(generation)).observe(pause)
        if pause >= LONG_PAUSE_S:
            log.warning(
                "long garbage-collector pause",
                extra={
                    "generation": generation,
                    "pause_ms": round(pause * 1000, 1),
                    "cpu_ms": round(cpu * 1000, 1),
                    "freed": info.get("collected"),
                },
            )

    gc.callbacks.append(on_collection)


def defer_full_collections(interval_s: float) -> None:
    """Turn off automatic full collections (``interval_s`` > 0): :func:`collect_fully` then runs them."""
    if interval_s > 0:
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, _NEVER)


def collect_fully() -> int:
    """Run one full collection now; return the objects it freed."""
    return gc.collect(2)
