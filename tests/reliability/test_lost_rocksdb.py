"""Scenario 5: the worker's local RocksDB directory deleted before a restart.

The worker is killed, its whole data directory removed, and it is started again while the
producer goes on. ``/readyz`` answers 503 (or nothing) until the table is rebuilt from the
changelog, and when it first answers 200 the leads scored before the loss are already served.
After: the rebuilt local table (read from the RocksDB files themselves once the worker stopped)
and the changelog both equal the replay of the input through the pure core.
"""

import random
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import rocksdict

from scoring.engine import Scorer
from scoring.state import LeadState, decode_state
from tests.integration.test_batch_reliability import create_topics, same_state, synthetic_input
from tests.integration.worker import WorkerProcess
from tests.reliability.harness import WORKER_ENV, Load, crossings, record_figures, soak, verify


def _wait_consumed(worker: WorkerProcess, count: int, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while worker.metric("leadscore_events_consumed_total") < count:
        assert time.monotonic() < deadline, f"the worker did not consume {count} events; log:\n{worker.log()}"
        time.sleep(0.5)


def _local_table(data_dir: Path) -> dict[str, LeadState]:
    """Every lead state in the worker's RocksDB files (one database per partition)."""
    table: dict[str, LeadState] = {}
    paths = sorted((data_dir / "v1" / "tables").glob("leads-*.db"))
    assert paths, f"no lead table under {data_dir}"
    for path in paths:
        db = rocksdict.Rdict(
            str(path), options=rocksdict.Options(raw_mode=True), access_type=rocksdict.AccessType.read_only()
        )
        try:
            for key, value in db.items():
                assert isinstance(key, bytes)  # raw mode
                assert isinstance(value, bytes)
                if not key.startswith(b"__faust"):  # Faust's own persisted-offset key
                    state = decode_state(value)
                    table[state.lead_id] = state
        finally:
            db.close()
    return table


def test_rocksdb_directory_deleted_before_a_restart(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str, scorer: Scorer, tmp_path: Path
) -> None:
    losses = soak(1, 5)
    data = synthetic_input(names, soak(1500, 5000))
    create_topics(bootstrap, names)
    data_dir = tmp_path / "data-0"
    worker = worker_factory(0, **WORKER_ENV)
    parts = [data[i * len(data) // (losses + 1) : (i + 1) * len(data) // (losses + 1)] for i in range(losses + 1)]
    Load(bootstrap, parts[0], duration_s=5).start().wait()
    not_ready_answers = 0
    for index in range(losses):
        _wait_consumed(worker, sum(len(p) for p in parts[: index + 1]))
        scored = sorted({(key or b"").decode() for part in parts[: index + 1] for _, key, _ in part})
        assert worker.stop(signal.SIGKILL) == -signal.SIGKILL
        shutil.rmtree(data_dir)
        load = Load(bootstrap, parts[index + 1], duration_s=10).start()
        worker = worker_factory(0, wait_ready=False, **WORKER_ENV)
        statuses: list[int] = []
        deadline = time.monotonic() + 180
        while (status := worker.get("/readyz")[0]) != 200:
            assert time.monotonic() < deadline, f"not ready after 180 s; log:\n{worker.log()}"
            statuses.append(status)
            time.sleep(0.05)
        assert 503 in statuses, f"/readyz never said 503 before the table was rebuilt: {set(statuses)}"
        not_ready_answers += statuses.count(503)
        sample = random.Random(index).sample(scored, 40)
        missing = [lead for lead in sample if worker.get(f"/leads/{lead}")[0] != 200]
        assert missing == [], f"ready, but leads scored before the loss are unknown: {missing[:5]}"
        load.wait()
    figures = verify(bootstrap, names, scorer, data)
    stalls = worker.metric("leadscore_commit_stalls_total")
    assert worker.stop(signal.SIGTERM) == 0, worker.log()
    local = _local_table(data_dir)
    differ = [
        lead for lead, state in figures.expected.items() if lead not in local or not same_state(local[lead], state)
    ]
    record_figures(
        "RocksDB directory deleted",
        figures,
        faults=losses,
        notes=f"/readyz 503 on {not_ready_answers} polls before 200; local table {len(local)} leads, "
        f"{len(differ)} differ from the replay; {stalls:.0f} stalled commits read again; {crossings(figures)}",
    )
    assert figures.problems == []
    assert set(local) == set(figures.expected)
    assert differ == []
