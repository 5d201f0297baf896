"""Faust's RocksDB store lets go of revoked partitions' databases without a full garbage
collection each time (streams/faust_internals.py ``release_databases``)."""

import gc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import rocksdict
from faust.types import TP

from streams.faust_internals import install_cheap_revocation, release_databases

pytestmark = pytest.mark.agents


@pytest.fixture
def collections(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the full collections ``release_databases`` runs."""
    runs: list[int] = []
    collect = gc.collect

    def counted(*args: Any) -> int:
        runs.append(1)
        return collect(*args)

    monkeypatch.setattr(gc, "collect", counted)
    return runs


def reopens(path: Path) -> bool:
    """Whether the database at ``path`` can be opened, i.e. no live handle holds its lock."""
    try:
        rocksdict.Rdict(str(path)).close()
    except Exception:
        return False
    return True


def test_a_database_nothing_else_holds_closes_without_a_collection(tmp_path: Path, collections: list[int]) -> None:
    databases = [rocksdict.Rdict(str(tmp_path / "p0")), rocksdict.Rdict(str(tmp_path / "p1"))]
    assert not reopens(tmp_path / "p0")  # the lock is held while it is open

    release_databases(databases)

    assert collections == []
    assert reopens(tmp_path / "p0")
    assert reopens(tmp_path / "p1")


def test_a_database_held_by_a_reference_cycle_is_collected(tmp_path: Path, collections: list[int]) -> None:
    cycle: dict[str, Any] = {"db": rocksdict.Rdict(str(tmp_path / "p0"))}
    cycle["self"] = cycle
    databases = [cycle["db"]]
    del cycle

    release_databases(databases)

    assert collections == [1]
    assert reopens(tmp_path / "p0")


def test_a_database_held_by_a_cycle_frozen_between_batches_is_collected(tmp_path: Path, collections: list[int]) -> None:
    cycle: dict[str, Any] = {"db": rocksdict.Rdict(str(tmp_path / "p0"))}
    cycle["self"] = cycle
    gc.freeze()  # as the consumer does between two polls (streams/gc_pauses.py between_batches)
    try:
        databases = [cycle["db"]]
        del cycle

        release_databases(databases)

        assert collections == [1]
        assert reopens(tmp_path / "p0")  # a plain gc.collect() does not look at frozen objects
    finally:
        gc.unfreeze()


def test_the_store_releases_its_revoked_partitions_only(tmp_path: Path, collections: list[int]) -> None:
    from faust.stores.rocksdb import Store

    install_cheap_revocation()
    store: Any = SimpleNamespace(_dbs={p: rocksdict.Rdict(str(tmp_path / f"p{p}")) for p in range(3)})
    table: Any = SimpleNamespace(changelog_topic=SimpleNamespace(topics={"app-leads-changelog"}))

    Store.revoke_partitions(store, table, {TP("app-leads-changelog", 1), TP("other-changelog", 2)})

    assert sorted(store._dbs) == [0, 2]
    assert reopens(tmp_path / "p1")
    assert not reopens(tmp_path / "p0")
    assert collections == []
    store._dbs.clear()
