"""The benchmark's floor of one worker process: reading the records as the worker's fetcher does,
and the floor's arithmetic from the report's parts."""

from typing import Any

import pytest

from scoring.engine import InputRecord
from streams.bench_core import input_kinds, partition_batches
from streams.bench_floor import baseline_own_cost, fetched, floor, floor_line, read_cost, record_batch
from streams.bench_input import catch_up_input
from streams.bench_report import targets
from streams.faust_internals import InputRecordsOf
from streams.settings import TopicNames

pytestmark = pytest.mark.unit

NOW = 1_800_000_000_000


def test_the_input_read_back_from_record_batches_is_the_input() -> None:
    kinds = input_kinds(TopicNames())
    batches = partition_batches(catch_up_input(3, 40, 600, NOW, TopicNames()).records, kinds, 4, batch=100)
    of = InputRecordsOf(kinds)
    for batch in batches:
        for topic in {record.topic for record in batch}:
            sent = [r for r in batch if r.topic == topic]
            rows = [(r.offset, r.timestamp, r.key, r.value) for r in sent]
            got = fetched(topic, batch[0].partition, record_batch(rows), of)
            assert got == sent
            assert all(type(r) is InputRecord and r.timestamp > 0 for r in got)


def test_read_cost_reads_every_record() -> None:
    kinds = input_kinds(TopicNames())
    batches = partition_batches(catch_up_input(3, 40, 600, NOW, TopicNames()).records, kinds, 4, batch=100)
    result = read_cost(batches, kinds)
    assert result["records"] == 600
    assert result["read_us_per_event"] > 0


def test_the_baseline_s_own_work_is_timed_on_every_record() -> None:
    kinds = input_kinds(TopicNames())
    batches = partition_batches(catch_up_input(3, 40, 600, NOW, TopicNames()).records, kinds, 4, batch=100)
    result = baseline_own_cost(batches)
    assert result["records"] == 600
    assert result["baseline_own_us_per_event"] > 0


def _report() -> dict[str, Any]:
    return {
        "machine": {"cores": 2},
        "baseline": {"events_per_s": 100_000.0, "cpu_us_per_event": 8.0},
        "leadscore": {
            "events_per_s": 50_000.0,
            "ratio_to_baseline": 0.5,
            "cpu_us_per_event": 16.0,
            "changelog_per_event": 0.25,
            "changelog_messages": 250,
            "events": 1000,
            "cpu_us_per_event_by_step": {"score": 5.5, "read": 0.8, "encode": 1.5, "store": 0.5, "rest": 7.7},
        },
        "core": {"read_us_per_event": 1.0, "score_us_per_event": 4.5, "encode_us_per_state": 8.0},
    }


def test_the_floor_adds_reading_scoring_encoding_what_the_worker_wrote_and_storing() -> None:
    least = floor(_report())
    assert least == {
        "read": 1.0,
        "score": 4.5,
        "encode": 2.0,  # 8 us per state, 0.25 states written per event
        "store": 0.5,
        "us_per_event": 8.0,
        "max_ratio_to_baseline": 1.0,
        "worker_over_floor": 2.0,
    }


def test_the_floor_splits_the_baseline_into_its_own_work_and_its_clients() -> None:
    report = _report()
    report["core"]["baseline_own_us_per_event"] = 1.5
    least = floor(report)
    assert least is not None
    assert (least["baseline_own"], least["baseline_clients"]) == (1.5, 6.5)
    assert floor_line(least).endswith("takes 1.5 us/event in-process: its Kafka clients the other 6.5")
    assert "Kafka clients the other" not in floor_line(floor(_report()) or {})


@pytest.mark.parametrize("missing", ["core", "leadscore", "baseline"])
def test_no_floor_without_all_its_parts(missing: str) -> None:
    report = _report()
    del report[missing]
    assert floor(report) is None


def test_the_targets_give_the_floor_beside_the_ratio() -> None:
    row = next(t for t in targets(_report()) if t.name == "events/s vs baseline")
    assert row.measured == "0.50x (one process's floor allows at most 1.00x)"
    assert row.met is False
    without = _report()
    del without["core"]
    assert next(t for t in targets(without) if t.name == "events/s vs baseline").measured == "0.50x"
