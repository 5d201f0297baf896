"""The benchmark's core part: the scoring core alone on the catch-up input."""

import pytest

from scoring.engine import Scorer
from scoring.partitioner import key_partition
from scoring.state import LeadState, encode_state
from streams.bench_core import core_bench, input_kinds, partition_batches, state_shape, summary_line
from streams.bench_input import catch_up_input
from streams.settings import TopicNames

pytestmark = pytest.mark.unit

NOW = 1_800_000_000_000


def test_partition_batches_hold_every_record_once_on_its_partition_in_order() -> None:
    data = catch_up_input(3, 60, 1200, NOW, TopicNames())
    batches = partition_batches(data.records, input_kinds(TopicNames()), 4, batch=100)
    flat = [record for batch in batches for record in batch]
    assert sorted((r.key, r.value) for r in flat) == sorted((r.key, r.value) for r in data.records)
    assert all(0 < len(batch) <= 100 for batch in batches)
    for batch in batches:
        assert {r.partition for r in batch} == {key_partition(batch[0].key or b"", 4)}
        assert all(key_partition(r.key or b"", 4) == r.partition for r in batch)
    for partition in range(4):
        offsets = [r.offset for r in flat if r.partition == partition]
        assert offsets == list(range(len(offsets)))  # each partition's records in input order
    assert all(r.kind is not None for r in flat)


def test_core_bench_scores_every_event_and_measures_what_it_wrote(scorer: Scorer) -> None:
    data = catch_up_input(3, 60, 1200, NOW, TopicNames())
    batches = partition_batches(data.records, input_kinds(TopicNames()), 4, batch=50)
    result = core_bench(scorer, batches, NOW)
    assert result["events"] == len(data.records)
    assert result["batch_records"] == 50
    # Every lead with an event is written at least once, and at most once per batch it is in.
    assert 0 < result["leads"] <= data.leads
    assert result["leads"] / result["events"] <= result["states_per_event"] <= 1
    assert result["score_us_per_event"] > 0
    assert result["mean_written_bytes"] > 100
    assert result["mean_state_objects"] > 10
    assert f"{result['events']:,} events" in summary_line(result)


def test_state_shape_counts_bytes_and_objects() -> None:
    small = LeadState("a", seen={"e1": 5})
    larger = LeadState("a", seen={"e1": 5, "e2": 6, "e3": 7})
    assert state_shape([larger])["mean_state_objects"] - state_shape([small])["mean_state_objects"] == 4
    sizes = len(encode_state(small)) + len(encode_state(larger))
    assert state_shape([small, larger])["mean_state_bytes"] == sizes / 2
