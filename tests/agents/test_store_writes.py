"""The lead tables' RocksDB writes skip the write-ahead log, with the persisted changelog offset
in the same write batch (streams/faust_internals.py ``write_store``): a crash loses unflushed
states and their offset together, so a restart restores exactly them from the changelog."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import rocksdict

from streams.faust_internals import release_databases

pytestmark = pytest.mark.agents

OFFSET_KEY = b"__faust\0offset__"

# A child process that writes through ``write_store`` to a store of one RocksDB database, then
# dies without closing it (as a SIGKILL would: no flush, no destructor).
WRITER = textwrap.dedent(
    """
    import os, sys, time
    from types import SimpleNamespace
    import rocksdict
    from streams import faust_internals

    path, limit = sys.argv[1], int(sys.argv[2])
    faust_internals.UNFLUSHED_LIMIT_BYTES = limit
    db = rocksdict.Rdict(path, rocksdict.Options(raw_mode=True))
    store = SimpleNamespace(_db_for_partition=lambda p: db, _key_index={}, offset_key=b"__faust\\0offset__")
    table = SimpleNamespace(data=store)
    faust_internals.write_store(table, 0, [(b"first", b"x" * 200)], 10)
    if limit <= 200:  # the first write passed the limit: wait for its background flush
        deadline = time.monotonic() + 20
        while not db.live_files() and time.monotonic() < deadline:
            time.sleep(0.05)
    faust_internals.write_store(table, 0, [(b"second", b"y" * 10)], 11)
    os._exit(0)
    """
)


def crash_after_writes(path: Path, limit: int) -> dict[bytes, bytes | None]:
    """Run the writer, then read back what survived its death."""
    subprocess.run([sys.executable, "-c", WRITER, str(path), str(limit)], check=True, timeout=60)
    db = rocksdict.Rdict(str(path), rocksdict.Options(raw_mode=True))
    try:
        return {key: db.get(key) for key in (OFFSET_KEY, b"first", b"second")}
    finally:
        db.close()


def test_a_crash_before_a_flush_loses_the_states_and_their_offset_together(tmp_path: Path) -> None:
    survived = crash_after_writes(tmp_path / "db", limit=1 << 30)

    # Lost together: a restart restores both writes from the changelog, from before offset 10.
    # (Had the offset been written with the log, it would say 11 and the states would be missing.)
    assert survived == {OFFSET_KEY: None, b"first": None, b"second": None}


def test_a_flush_past_the_limit_keeps_a_prefix_of_the_writes_with_its_offset(tmp_path: Path) -> None:
    survived = crash_after_writes(tmp_path / "db", limit=100)

    # The first write was flushed (it passed the limit); the second, written after, was not:
    # the persisted offset says 10, so the restart restores the second from the changelog.
    assert survived == {OFFSET_KEY: b"10", b"first": b"x" * 200, b"second": None}


def test_letting_a_database_go_flushes_what_was_written_without_the_log(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from streams.faust_internals import write_store

    path = str(tmp_path / "db")
    databases = [rocksdict.Rdict(path, rocksdict.Options(raw_mode=True))]
    store = SimpleNamespace(_db_for_partition=lambda p: databases[0], _key_index={b"lead-2": 3}, offset_key=OFFSET_KEY)
    write_store(SimpleNamespace(data=store), 3, [(b"lead-1", b"state"), (b"lead-2", None)], 42)
    assert store._key_index == {}  # a write leaves Faust's read index alone; a delete drops its entry

    release_databases(databases)

    reopened = rocksdict.Rdict(path, rocksdict.Options(raw_mode=True))
    try:
        assert reopened.get(b"lead-1") == b"state"
        assert reopened.get(OFFSET_KEY) == b"42"
        assert reopened.get(b"lead-2") is None
    finally:
        reopened.close()


def test_stored_values_reads_the_given_partitions_without_the_offset_record(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from streams.faust_internals import stored_values, write_store

    databases = {p: rocksdict.Rdict(str(tmp_path / f"p{p}"), rocksdict.Options(raw_mode=True)) for p in (0, 1, 2)}
    store = SimpleNamespace(_db_for_partition=databases.__getitem__, _key_index={}, offset_key=OFFSET_KEY)
    table = SimpleNamespace(data=store)
    for partition in (0, 1, 2):
        write_store(
            table, partition, [(f"k{partition}-{i}".encode(), f"v{partition}-{i}".encode()) for i in range(3)], 7
        )
    try:
        assert sorted(stored_values(table, [2, 0])) == [b"v0-0", b"v0-1", b"v0-2", b"v2-0", b"v2-1", b"v2-2"]
    finally:
        for database in databases.values():
            database.close()
