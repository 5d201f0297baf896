"""Waiting on a worker process: for a condition, for its view of a lead, or for one of its metrics."""

import time
from collections.abc import Callable
from typing import Any

from tests.integration.worker import WorkerProcess

WAIT_S = 120.0
POLL_S = 0.3


def wait_until(condition: Callable[[], bool], what: str, worker: WorkerProcess, timeout_s: float = 90.0) -> None:
    """Poll ``condition`` until it holds; fail with ``what`` and the worker's log when it does not in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(POLL_S)
    raise AssertionError(f"timed out waiting for {what}; worker log:\n{worker.log()}")


def counts(lead: dict[str, Any]) -> dict[str, int]:
    """A lead view's engagement rules by how often each counted."""
    return {row["rule"]: row["count"] for row in lead["breakdown"] if row["kind"] == "engagement"}


def wait_for_lead(
    worker: WorkerProcess, lead_id: str, done: Callable[[dict[str, Any]], bool], timeout_s: float = WAIT_S
) -> dict[str, Any]:
    """Poll the worker's lead view until ``done`` holds (the last answer is returned either way)."""
    deadline = time.monotonic() + timeout_s
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, answer = worker.get(f"/leads/{lead_id}")
        if status == 200:
            body = answer
            if done(body):
                break
        time.sleep(POLL_S)
    return body


def wait_for_metric(worker: WorkerProcess, name: str, labels: str, at_least: float, timeout_s: float = WAIT_S) -> float:
    """Poll one sample of the worker's /metrics until it reaches ``at_least``; its last value."""
    deadline = time.monotonic() + timeout_s
    value = worker.metric(name, labels)
    while value < at_least and time.monotonic() < deadline:
        time.sleep(POLL_S)
        value = worker.metric(name, labels)
    return value
