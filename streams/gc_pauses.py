"""Garbage-collector pauses of the worker: timed, counted, and kept out of the scoring path.

A worker keeps hundreds of thousands of decoded lead states in its per-partition caches; a full
(generation 2) collection walks every one of them and stops the event loop for the whole walk:
about 0.9 s for 300,000 states on a 2-core machine of this project's kind, long enough to own the
p99 of event -> MQL latency. Lead states hold no reference cycles. :func:`configure` stops the
automatic full collections and runs one every ``interval_s`` instead (0: automatic, as stock
Python does), so at most one such pause lands per interval. (With Python's default thresholds a
worker ran 27 full collections in a 40,000-lead, 400,000-event catch-up: 5 s of its 35 s of CPU.)

The young collections cost too, and not for the garbage: a catch-up builds new lead states
(dicts, lists, strings) batch after batch, and each young collection walks the ones built since
the last, then a middle-generation collection walks them again: 1.2 s of a 1,000,000-event
catch-up's 16 s of CPU, for almost nothing freed (165 objects in 150 collections between
batches, counted over a catch-up and its paced traffic; everything else is freed by its
reference count). So with timed full collections, the consumer calls :func:`between_batches`
between two polls, when what the last batches built and dropped is gone: once ``FREEZE_AFTER``
allocations have been made since, it freezes what is left (``gc.freeze``: no walk at all; a
frozen object still goes when its reference count drops to zero, as the last poll's records do), and
the automatic young collections wait for ``SAFETY_YOUNG_THRESHOLD`` allocations (they run only
if polls stop coming). :func:`collect_fully` walks the frozen objects too: a cycle frozen before
it became garbage is freed by the next full collection, at most ``interval_s`` later.
"""

import gc
import logging
import time
from typing import Any

from prometheus_client import Histogram

log = logging.getLogger(__name__)
# A pause at least this long is logged (a warning: it delays every partition of the worker).
LONG_PAUSE_S = 0.1
# Allocations between young collections (Python's default: 700) where full collections are automatic.
YOUNG_THRESHOLD = 10_000
# With timed full collections: allocations after which the consumer freezes what is alive between
# two polls, and after which a young collection runs by itself (only if polls stop coming).
FREEZE_AFTER = 10_000
SAFETY_YOUNG_THRESHOLD = 500_000
# The gen-2 threshold that keeps automatic full collections from ever running.
_NEVER = 1 << 30
# Whether young objects are frozen between batches (set by :func:`configure`).
_freezing = False


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
    with ``interval_s`` > 0, automatic full collections off (:func:`collect_fully` runs them) and
    young objects frozen between batches (:func:`between_batches`); with 0, Python's automatic
    collections, the young ones every ``YOUNG_THRESHOLD`` allocations instead of 700 (fewer, still
    short: at 50,000 the middle generation's collections took 0.14-0.22 s in the benchmark's
    worker)."""
    global _freezing
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_thresholds(interval_s))
    _freezing = interval_s > 0


def reset() -> None:
    """Python's own policy again: default thresholds, nothing frozen (tests, the benchmark)."""
    global _freezing
    _freezing = False
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)


def _thresholds(interval_s: float) -> tuple[int, int, int]:
    """The collector's thresholds in a worker whose full collections run every ``interval_s``
    seconds (0: automatically)."""
    if interval_s > 0:
        return SAFETY_YOUNG_THRESHOLD, 10, _NEVER
    return YOUNG_THRESHOLD, 10, 10


def between_batches() -> None:
    """Called between two polls: freeze the objects alive now once ``FREEZE_AFTER`` allocations
    have been made since the last freeze (a no-op unless :func:`configure` set timed full
    collections). Frozen objects are still freed by their reference counts."""
    if _freezing and gc.get_count()[0] >= FREEZE_AFTER:
        gc.freeze()


def collect_fully() -> int:
    """Run one full collection now, over the frozen objects too (frozen again afterwards where
    young objects are frozen between batches; with Python's automatic collections nothing alive
    is frozen, so later automatic full collections still walk it); return the objects it freed."""
    gc.unfreeze()
    freed = gc.collect(2)
    if _freezing:
        gc.freeze()
    return freed
