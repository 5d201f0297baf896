"""Reading a partition's topics in step by time: the horizon, the cut and the merge."""

import math
from dataclasses import dataclass

from streams.time_sync import horizon, in_time_order, split_at


@dataclass(frozen=True)
class Rec:
    topic: str
    offset: int
    timestamp: int


def run(topic: str, *stamps: int) -> list[Rec]:
    return [Rec(topic, offset, stamp) for offset, stamp in enumerate(stamps)]


def test_the_horizon_is_the_oldest_newest_record_of_the_unfinished_partitions() -> None:
    available = {"visits": run("visits", 1, 5, 9), "webinars": run("webinars", 2, 30), "profiles": run("profiles", 50)}
    assert horizon(available, ["visits", "webinars"], {}) == 9
    assert horizon(available, ["webinars", "profiles"], {}) == 30  # partitions read to their end do not count


def test_nothing_is_held_when_every_partition_is_read_to_its_end() -> None:
    assert horizon({"visits": run("visits", 1, 2)}, [], {}) == math.inf


def test_an_unfinished_partition_with_nothing_fetched_now_counts_with_its_newest_before() -> None:
    # Its next records, on the way, are no older than the newest fetched from it before.
    assert horizon({"visits": run("visits", 1, 20)}, ["visits", "webinars"], {"webinars": 7}) == 7
    assert horizon({"visits": run("visits", 1, 2), "webinars": []}, ["webinars"], {"webinars": 7}) == 7


def test_an_unfinished_partition_never_fetched_from_holds_everything() -> None:
    # Its first records, on the way, may be older than any record fetched.
    assert horizon({"visits": run("visits", 1, 2)}, ["visits", "webinars"], {"visits": 2}) == -math.inf


def test_the_cut_scores_the_prefix_up_to_the_horizon_and_holds_the_rest() -> None:
    records = run("webinars", 2, 8, 9, 30, 31)
    now, later = split_at(records, 9)
    assert [r.timestamp for r in now] == [2, 8, 9]
    assert [r.timestamp for r in later] == [30, 31]
    assert split_at(records, math.inf) == (records, [])
    assert split_at(records, -math.inf) == ([], records)


def test_the_cut_never_scores_a_record_before_one_ahead_of_it() -> None:
    # A producer's clock went back: the record stamped 3 sits behind one stamped 40.
    now, later = split_at(run("visits", 1, 40, 3), 10)
    assert [r.timestamp for r in now] == [1]
    assert [r.timestamp for r in later] == [40, 3]


def test_the_merge_orders_the_topics_by_time() -> None:
    merged = in_time_order([run("visits", 1, 5, 9), run("webinars", 2, 6), run("profiles", 5)])
    assert [(r.topic, r.timestamp) for r in merged] == [
        ("visits", 1),
        ("webinars", 2),
        ("visits", 5),  # equal times keep the topics' order
        ("profiles", 5),
        ("webinars", 6),
        ("visits", 9),
    ]


def test_the_merge_keeps_each_partitions_own_order() -> None:
    merged = in_time_order([run("visits", 1, 40, 3, 50), run("webinars", 20, 45)])
    assert [(r.topic, r.offset) for r in merged] == [
        ("visits", 0),
        ("webinars", 0),
        ("visits", 1),
        ("visits", 2),  # stamped 3, but after the visit stamped 40 in its partition
        ("webinars", 1),
        ("visits", 3),
    ]
