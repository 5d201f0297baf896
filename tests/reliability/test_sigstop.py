"""Scenario 4: a worker frozen (SIGSTOP) past its session timeout under load, then thawed (SIGCONT).

While it is frozen, the group gives its partitions to the other worker; when it wakes up it may
still hold records it had fetched. Whatever it does then, no crossing gets a second event id, no
event is lost and the table still equals the replay. Run in both consumption modes: the batch
consumer drops such a batch unacked; the per-record agent's stream skips such records, and the
consumer neither acks them nor moves its read offset past the new assignment's seek
(streams/faust_internals.py, ``CleanAssignmentConsumer.ack`` and ``BatchConsumer._stock_path``).
"""

import os
import signal
import time
from collections.abc import Callable

import pytest

from scoring.engine import Scorer
from tests.integration.test_batch_reliability import create_topics, synthetic_input
from tests.integration.worker import WorkerProcess
from tests.reliability.harness import SESSION_TIMEOUT_S, WORKER_ENV, Load, crossings, lost_total, soak, verify
from tests.reliability.report import record

# Write-behind for live traffic too: under this load the default (5,000 records behind) never holds,
# and 1 held only when a fetch response came in between a poll and its scoring (none held in one
# CI run). A worker frozen while it holds states must neither write them after the thaw nor lose
# their input.
HOLDING = {"LEADSCORE_WRITE_BEHIND_MIN_LAG": "0"}


@pytest.mark.parametrize(("consumption", "holding"), [("batch", False), ("batch", True), ("agent", False)])
def test_worker_frozen_past_its_session_timeout(
    worker_factory: Callable[..., WorkerProcess],
    bootstrap: str,
    names: str,
    scorer: Scorer,
    consumption: str,
    holding: bool,
) -> None:
    freezes = soak(1, 5)
    data = synthetic_input(names, soak(1000, 4000))
    create_topics(bootstrap, names)
    env = {**WORKER_ENV, "LEADSCORE_CONSUMPTION": consumption, **(HOLDING if holding else {})}
    workers = [worker_factory(0, **env), worker_factory(1, **env)]
    frozen = workers[0]
    assert frozen.process is not None
    load = Load(bootstrap, data, duration_s=freezes * (SESSION_TIMEOUT_S * 2 + 25.0)).start()
    for _ in range(freezes):
        time.sleep(4)
        assert load.running, "the producer finished before the worker was frozen"
        before = workers[1].metric("leadscore_rebalances_total")
        os.kill(frozen.process.pid, signal.SIGSTOP)
        try:
            time.sleep(SESSION_TIMEOUT_S * 2 + 4)  # the group has moved its partitions by now
            moved = workers[1].metric("leadscore_rebalances_total")
        finally:
            os.kill(frozen.process.pid, signal.SIGCONT)
        assert moved > before, "the other worker was never given the frozen worker's partitions"
        time.sleep(8)
    load.wait()
    assert frozen.process.poll() is None, frozen.log()
    refused = frozen.metric("leadscore_zombie_writes_refused_total")
    held = sum(worker.metric("leadscore_state_writes_held_total") for worker in workers)
    figures = verify(bootstrap, names, scorer, data)
    mode = " (write-behind)" if holding else "" if consumption == "batch" else " (agent consumption)"
    record(
        "SIGSTOP past the session timeout" + mode,
        faults=freezes,
        sent=figures.sent,
        lost=lost_total(figures),
        duplicated_ids=figures.duplicated_ids,
        redeliveries=figures.redeliveries,
        dead_lettered=figures.dead_lettered,
        notes=f"2 workers, frozen {SESSION_TIMEOUT_S * 2 + 4} s each time (session {SESSION_TIMEOUT_S} s); "
        f"{crossings(figures)}; {refused:.0f} writes refused by the frozen worker after the thaw",
    )
    assert figures.problems == []
    assert (held > 0) is holding
