"""Scenario 1: kill -9 of a worker at random moments under load, restarted each time.

Ten kills in the bounded run (40 with ``LEADSCORE_SOAK=1``), each at a random moment while a
producer thread sends a realistic journey mix; the worker restarts on the same data directory.
After: every event scored or dead-lettered, the table equal to the replay, every crossing on
``mql-handoff`` under exactly one event id (redeliveries of that id counted).
"""

import signal
import time
from collections.abc import Callable

from scoring.engine import Scorer
from tests.integration.test_batch_reliability import create_topics, synthetic_input
from tests.integration.worker import WorkerProcess
from tests.reliability.harness import WORKER_ENV, Load, crossings, random_moments, record_figures, soak, verify


def test_kill_minus_nine_at_random_moments_under_load(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str, scorer: Scorer
) -> None:
    kills = soak(10, 40)
    data = synthetic_input(names, soak(1500, 6000))
    create_topics(bootstrap, names)
    worker = worker_factory(0, **WORKER_ENV)
    load = Load(bootstrap, data, duration_s=kills * 14.0).start()
    killed_while_loading = 0
    for pause in random_moments(1, kills, 0.5, 4.0):
        time.sleep(pause)
        killed_while_loading += load.running
        assert worker.stop(signal.SIGKILL) == -signal.SIGKILL
        worker = worker_factory(0, **WORKER_ENV)  # same data directory: RocksDB plus the changelog
    load.wait()
    figures = verify(bootstrap, names, scorer, data)
    record_figures(
        "kill -9 under load",
        figures,
        faults=kills,
        notes=f"{killed_while_loading} of {kills} kills while the producer ran; {crossings(figures)}",
    )
    assert figures.problems == []
    assert killed_while_loading >= kills // 2, "most kills must land while events flow"
