"""Scenario 3: the broker stopped and started while workers run and a producer sends.

The test runs its own broker (``LocalKafka`` on a free port in 19500-19549, its controller 50
ports above, its own state directory), never the shared one. Two workers keep running through the
outage: they resume by themselves (no restart, no manual action) and nothing is lost.
"""

import time
from collections.abc import Callable

import pytest

from scoring.engine import Scorer
from streams.local_kafka import LocalKafka
from tests.integration.test_batch_reliability import create_topics, synthetic_input
from tests.integration.worker import WorkerProcess
from tests.reliability.harness import WORKER_ENV, Load, crossings, own_broker, record_figures, soak, verify

broker = own_broker("broker", range(19500, 19550))


@pytest.fixture(scope="module")
def bootstrap(broker: LocalKafka) -> str:
    """The workers of this module use the test's own broker."""
    return broker.config.address


def _ready_again(workers: list[WorkerProcess], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(w.get("/readyz")[0] == 200 for w in workers):
            return True
        time.sleep(0.5)
    return False


def test_broker_stopped_and_started_under_load(
    worker_factory: Callable[..., WorkerProcess], broker: LocalKafka, bootstrap: str, names: str, scorer: Scorer
) -> None:
    bounces = soak(1, 4)
    data = synthetic_input(names, soak(1000, 4000))
    create_topics(bootstrap, names)
    workers = [worker_factory(0, **WORKER_ENV), worker_factory(1, **WORKER_ENV)]
    load = Load(bootstrap, data, duration_s=bounces * 40.0).start()
    down_s = 0.0
    for _ in range(bounces):
        time.sleep(5)
        assert load.running, "the producer finished before the broker went down"
        assert broker.stop(), "the test's broker was not running"
        began = time.monotonic()
        time.sleep(10)
        broker.start()
        down_s += time.monotonic() - began
        assert _ready_again(workers, 180), [w.log() for w in workers]
    load.wait()
    for worker in workers:  # the same processes throughout: nobody restarted them
        assert worker.process is not None
        assert worker.process.poll() is None, worker.log()
    figures = verify(bootstrap, names, scorer, data)
    record_figures(
        "broker stopped and started",
        figures,
        faults=bounces,
        notes=(
            f"2 workers; broker down {down_s:.0f} s in all; {load.resent_chunks} producer chunks resent "
            f"({load.producers} producers, {load.producers_left_running} left running); "
            f"{crossings(figures)}"
        ),
    )
    assert figures.problems == []
