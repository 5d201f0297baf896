"""The real broker for integration tests, and workers as separate processes.

The broker is the one named by LEADSCORE_TEST_BOOTSTRAP, else a testcontainers Kafka where a
Docker engine answers, else the project's own local broker (started here if needed).
"""

import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from tests.integration.collector import CollectorProcess
from tests.integration.kafka import bootstrap_from_env, docker_answers
from tests.integration.worker import WorkerProcess


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    named = bootstrap_from_env()
    if named:
        yield named
        return
    if docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer() as kafka:  # not exercised on machines without Docker
            yield kafka.get_bootstrap_server()
        return
    from streams.local_kafka import LocalKafka

    result = LocalKafka().start()
    yield result.address


@pytest.fixture
def names() -> str:
    """A prefix of topic names and app ids that no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test shows the warnings and the last lines of each worker's log it started."""
    report = yield
    workers: list[WorkerProcess] = getattr(item, "leadscore_workers", [])
    if report.failed and report.when == "call":
        for index, worker in enumerate(workers):
            report.sections.append((f"worker {index} log ({worker.log_path})", worker.log_digest()))
    return report


@pytest.fixture
def worker_factory(
    bootstrap: str, names: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start workers of one app (same topics, same consumer group); stopped after the test."""
    started: list[WorkerProcess] = []
    request.node.leadscore_workers = started

    def start(index: int = 0, wait_ready: bool = True, **env: str) -> WorkerProcess:
        base = {
            "LEADSCORE_BOOTSTRAP": bootstrap,
            "LEADSCORE_TOPIC_PREFIX": names,
            "LEADSCORE_APP_ID": names.rstrip(".") + "-app",
            "LEADSCORE_PARTITIONS": "4",
            "LEADSCORE_DATA_DIR": str(tmp_path / f"data-{index}"),
            "LEADSCORE_TICK_INTERVAL": "0.2",
        }
        worker = WorkerProcess(env={**base, **env}, log_path=tmp_path / f"worker-{index}.log")
        started.append(worker)
        return worker.start(wait_ready=wait_ready)

    yield start
    for worker in started:
        if worker.process is not None:
            worker.stop()


@pytest.fixture
def collector_factory(bootstrap: str, names: str, tmp_path: Path) -> Iterator[Callable[..., CollectorProcess]]:
    """Start collectors on the test's topics (``leadscore collect``); stopped after the test."""
    started: list[CollectorProcess] = []

    def start(index: int = 0, wait_ready: bool = True, **env: str) -> CollectorProcess:
        base = {
            "LEADSCORE_BOOTSTRAP": bootstrap,
            "LEADSCORE_TOPIC_PREFIX": names,
            "LEADSCORE_PARTITIONS": "4",
        }
        collector = CollectorProcess(env={**base, **env}, log_path=tmp_path / f"collector-{index}.log")
        started.append(collector)
        return collector.start(wait_ready=wait_ready)

    yield start
    for collector in started:
        if collector.process is not None:
            collector.stop()
