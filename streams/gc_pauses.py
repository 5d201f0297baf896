"""Garbage-collector pauses of the worker: timed, counted, and kept out of the scoring path.

A worker keeps hundreds of thousands of decoded lead states in its per-partition caches; a full
(generation 2) collection walks every one of them and stops the event loop for the whole walk:
about 0.9 s for 300,000 states on a 2-core machine of this project's kind, long enough to own the
p99 of event -> MQL latency. Lead states hold no reference cycles, so the collections that matter
are the young ones (0 and 1), which stay automatic and cheap. :func:`configure` stops
the automatic full collections and runs one every ``interval_s`` instead (0: automatic, as stock
Python does), so at most one such pause lands per interval. (With Python's default thresholds a worker ran 27
full collections in a 40,000-lead, 400,000-event catch-up: 5 s of its 35 s of CPU.)
"""

import gc
import logging
import time
from typing import Any

from prometheus_client import Histogram

log = logging.getLogger(__name__)
# A pause at least this long is logged (a warning: it delays every partition of the worker).
LONG_PAUSE_S = 0.1
# Allocations between young collections (Python's default: 700).
YOUNG_THRESHOLD = 10_000
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


def configure(interval_s: float) -> None:
    """Set the worker's collection policy: what exists at start-up is frozen (never scanned again);
    young collections every ``YOUNG_THRESHOLD`` allocations instead of 700 (fewer, still short:
    at 50,000 the middle generation's collections took 0.14-0.22 s in the benchmark's worker);
    automatic full collections off when ``interval_s`` > 0 (:func:`collect_fully` runs them)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds(interval_s))


def thresholds(interval_s: float) -> tuple[int, int, int]:
    """The collector's thresholds in a worker whose full collections run every ``interval_s``
    seconds (0: automatically)."""
    return YOUNG_THRESHOLD, 10, _NEVER if interval_s > 0 else 10


def collect_fully() -> int:
    """Run one full collection now; return the objects it freed."""
    return gc.collect(2)
