"""The worker's garbage-collector policy: pauses timed, automatic full collections deferred."""

import gc
import logging
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Histogram

from streams import gc_pauses
from streams.gc_pauses import YOUNG_THRESHOLD, collect_fully, configure, time_pauses

pytestmark = pytest.mark.unit


@pytest.fixture
def restored_gc() -> Iterator[None]:
    thresholds, callbacks = gc.get_threshold(), list(gc.callbacks)
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.callbacks[:] = callbacks


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
    assert gc.get_threshold()[:2] == (YOUNG_THRESHOLD, 10)
    assert gc.get_threshold()[2] >= 1 << 30


def test_interval_zero_keeps_automatic_full_collections(restored_gc: None) -> None:
    configure(0)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)


def test_start_up_objects_are_frozen(restored_gc: None) -> None:
    before = object()
    configure(600)
    assert gc.get_freeze_count() > 0
    assert not any(o is before for o in gc.get_objects())  # frozen objects are not scanned


def test_a_full_collection_frees_reference_cycles(restored_gc: None) -> None:
    configure(600)
    for _ in range(100):
        cycle: list[object] = []
        cycle.append(cycle)
    del cycle
    assert collect_fully() >= 1
