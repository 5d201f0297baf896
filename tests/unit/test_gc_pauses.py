"""The worker's garbage-collector policy: pauses timed, automatic full collections deferred."""

import gc
import logging
import weakref
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Histogram

from streams import gc_pauses
from streams.gc_pauses import (
    FREEZE_AFTER,
    SAFETY_YOUNG_THRESHOLD,
    YOUNG_THRESHOLD,
    between_batches,
    collect_fully,
    configure,
    reset,
    time_pauses,
)

pytestmark = pytest.mark.unit


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds, callbacks = gc.get_threshold(), list(gc.callbacks)
    yield
    reset()
    gc.set_threshold(*thresholds)
    gc.callbacks[:] = callbacks


class Node:
    """A GC-tracked object that can be watched with a weak reference."""

    def __init__(self) -> None:
        self.other: object = None


def tracked(value: object) -> bool:
    """Whether the collector would walk ``value`` (frozen objects are left out)."""
    return any(o is value for o in gc.get_objects())


def allocate(count: int) -> list[list[int]]:
    """``count`` GC-tracked containers, alive while the result is."""
    return [[] for _ in range(count)]


def test_every_collection_is_observed_by_generation(restored_gc: None) -> None:
    registry = CollectorRegistry()
    histogram = Histogram("pauses", "test", ["generation"], registry=registry)
    time_pauses(histogram)
    gc.collect(0)
    collect_fully()
    assert (registry.get_sample_value("pauses_count", {"generation": "0"}) or 0) >= 1
    assert (registry.get_sample_value("pauses_count", {"generation": "2"}) or 0) >= 1


def test_a_long_pause_is_logged_without_personal_data(
    restored_gc: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(gc_pauses, "LONG_PAUSE_S", 0.0)
    time_pauses(Histogram("pauses", "test", ["generation"], registry=CollectorRegistry()))
    with caplog.at_level(logging.WARNING, logger="streams.gc_pauses"):
        collect_fully()
    records = [r for r in caplog.records if r.getMessage() == "long garbage-collector pause"]
    assert records
    assert records[-1].generation == 2  # type: ignore[attr-defined]


def test_deferred_full_collections_never_run_by_themselves(restored_gc: None) -> None:
    configure(600)
    assert gc.get_threshold()[:2] == (SAFETY_YOUNG_THRESHOLD, 10)
    assert gc.get_threshold()[2] >= 1 << 30


def test_interval_zero_keeps_automatic_full_collections(restored_gc: None) -> None:
    configure(0)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)


def test_start_up_objects_are_frozen(restored_gc: None) -> None:
    before: list[object] = []
    assert tracked(before)
    configure(600)
    assert gc.get_freeze_count() > 0
    assert not tracked(before)  # frozen objects are not scanned


def test_what_a_batch_left_alive_is_frozen_between_batches_once_enough_was_allocated(restored_gc: None) -> None:
    configure(600)
    few = allocate(10)
    between_batches()
    assert tracked(few)  # too few allocations since the last freeze: left to the next look
    many = allocate(FREEZE_AFTER)
    between_batches()
    assert not tracked(few)
    assert not tracked(many)
    assert gc.get_count()[0] < FREEZE_AFTER


def test_nothing_is_frozen_between_batches_where_full_collections_are_automatic(restored_gc: None) -> None:
    configure(0)
    alive = allocate(FREEZE_AFTER)
    between_batches()
    assert tracked(alive)


def test_a_cycle_frozen_before_it_became_garbage_is_freed_by_the_next_full_collection(restored_gc: None) -> None:
    configure(600)
    node = Node()
    node.other = node
    watch = weakref.ref(node)
    padding = allocate(FREEZE_AFTER)
    between_batches()
    del node, padding
    gc.collect()  # an ordinary collection does not walk frozen objects
    assert watch() is not None
    assert collect_fully() >= 1
    assert watch() is None
    assert gc.get_freeze_count() > 0  # what is left stays frozen


def test_a_full_collection_leaves_survivors_to_the_automatic_collections_where_they_run(restored_gc: None) -> None:
    configure(0)
    alive = allocate(10)
    collect_fully()  # e.g. release_databases freeing a database held by a cycle
    assert tracked(alive)


def test_reset_restores_python_s_own_policy(restored_gc: None) -> None:
    configure(600)
    reset()
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0
    alive = allocate(FREEZE_AFTER)
    between_batches()
    assert tracked(alive)


def test_a_full_collection_frees_reference_cycles(restored_gc: None) -> None:
    configure(600)
    for _ in range(100):
        cycle: list[object] = []
        cycle.append(cycle)
    del cycle
    assert collect_fully() >= 1
