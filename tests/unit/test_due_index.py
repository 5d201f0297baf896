import time

from scoring.decay import settle_clock
from scoring.due_index import DueIndex
from streams.clock import Clock


def test_pop_due_returns_only_leads_due_in_that_partition() -> None:
    index = DueIndex()
    index.schedule(0, "a", 100)
    index.schedule(0, "b", 300)
    index.schedule(1, "c", 50)
    assert index.pop_due(0, 200) == ["a"]
    assert index.pop_due(0, 200) == []
    assert index.pop_due(1, 200) == ["c"]
    assert len(index) == 1


def test_rescheduling_makes_the_old_entry_stale() -> None:
    index = DueIndex()
    index.schedule(0, "a", 100)
    index.schedule(0, "a", 500)
    assert index.pop_due(0, 200) == []
    assert index.pop_due(0, 600) == ["a"]


def test_clearing_a_due_time() -> None:
    index = DueIndex()
    index.schedule(0, "a", 100)
    index.schedule(0, "a", None)
    assert index.pop_due(0, 1000) == []


def test_keep_only_forgets_revoked_partitions() -> None:
    index = DueIndex()
    index.schedule(0, "a", 100)
    index.schedule(1, "b", 100)
    index.keep_only([1])
    assert index.pop_due(0, 1000) == []
    assert index.pop_due(1, 1000) == ["b"]


def test_the_decay_clock_is_now_only_when_every_inbound_topic_is_read_to_its_end() -> None:
    now = 1_000_000
    assert settle_clock(now, []) == now
    assert settle_clock(now, [(True, None), (True, 5)]) == now
    # A topic still behind holds the clock at its newest record; the oldest such topic wins.
    assert settle_clock(now, [(True, 990_000), (False, 400_000), (False, 700_000)]) == 400_000
    # Never ahead of now, even for a record stamped in the future.
    assert settle_clock(now, [(False, 2_000_000)]) == now
    # Behind with nothing read yet: nothing may settle.
    assert settle_clock(now, [(True, 1), (False, None)]) == -1


def test_a_lead_due_while_its_partition_catches_up_waits_for_the_events_before_its_due_time() -> None:
    # The due index pops by the decay clock: a lead due at 500 stays put while the clock is held
    # at a newest record of 450, and is popped once the topic is read to its end.
    index = DueIndex()
    index.schedule(0, "a", 500)
    assert index.pop_due(0, settle_clock(1_000, [(False, 450)])) == []
    assert index.pop_due(0, settle_clock(1_000, [(True, 450)])) == ["a"]


def test_the_service_clock_maps_record_times_like_its_own_now() -> None:
    assert Clock().at(1_234.9) == 1_234
    fast = Clock(speed=60.0, epoch_ms=1_000)
    assert fast.at(1_000) == 1_000
    assert fast.at(2_000) == 61_000  # one wall second after the epoch: a minute of service time
    wall = time.time() * 1000
    assert abs(fast.now_ms() - fast.at(wall)) < 60 * 1_000  # within a second of wall time
