from scoring.due_index import DueIndex


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
