"""Scenario 2: a SIGTERM rolling restart of two workers, and scaling 1 -> 3 -> 1, under load.

Partitions move between workers while a producer sends; after, no update is lost or counted
twice (the table equals the replay, every event is in its lead's seen set, every crossing has one
event id) and every partition of every inbound topic is committed to its end.
"""

import signal
import time
from collections.abc import Callable

import pytest

from scoring.engine import Scorer
from tests.integration.test_batch_reliability import create_topics, synthetic_input
from tests.integration.worker import WorkerProcess
from tests.reliability.harness import WORKER_ENV, Load, crossings, record_figures, soak, verify


def test_sigterm_rolling_restart_of_two_workers(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str, scorer: Scorer
) -> None:
    rounds = soak(1, 5)
    data = synthetic_input(names, soak(1000, 4000))
    create_topics(bootstrap, names)
    workers = [worker_factory(0, **WORKER_ENV), worker_factory(1, **WORKER_ENV)]
    load = Load(bootstrap, data, duration_s=rounds * 30.0).start()
    restarts = 0
    for _ in range(rounds):
        for index in (0, 1):
            time.sleep(2)
            assert workers[index].stop(signal.SIGTERM) == 0, workers[index].log()
            workers[index] = worker_factory(index, **WORKER_ENV)
            restarts += 1
    load.wait()
    figures = verify(bootstrap, names, scorer, data)
    record_figures(
        "SIGTERM rolling restart (2 workers)",
        figures,
        faults=restarts,
        notes=f"{figures.partitions} inbound partitions consumed to the end; {crossings(figures)}",
    )
    assert figures.problems == []


@pytest.mark.parametrize("consumption", ["batch", "agent"])
def test_scaling_one_three_one_under_load(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str, scorer: Scorer, consumption: str
) -> None:
    """Every rebalance moves partitions under load; the agent consumption lost records fetched
    just before one (streams/faust_internals.py, ``BatchConsumer._stock_path``)."""
    rounds = soak(1, 4)
    data = synthetic_input(names, soak(1000, 4000))
    create_topics(bootstrap, names)
    env = {**WORKER_ENV, "LEADSCORE_CONSUMPTION": consumption}
    first = worker_factory(0, **env)
    load = Load(bootstrap, data, duration_s=rounds * 35.0).start()
    moves = 0
    for _ in range(rounds):
        time.sleep(2)
        extra = [worker_factory(1, **env), worker_factory(2, **env)]  # 1 -> 3
        moves += 2
        time.sleep(3)
        for worker in extra:  # 3 -> 1
            assert worker.stop(signal.SIGTERM) == 0, worker.log()
            moves += 1
    assert first.process is not None
    assert first.process.poll() is None
    load.wait()
    figures = verify(bootstrap, names, scorer, data)
    record_figures(
        "scaling 1 -> 3 -> 1 workers" + ("" if consumption == "batch" else " (agent consumption)"),
        figures,
        faults=moves,
        notes=f"{figures.partitions} inbound partitions consumed to the end; {crossings(figures)}",
    )
    assert figures.problems == []
