"""Operational signals of a worker: consumer lag, progress per partition, rebalances, recovery."""

import logging
import time
from typing import TYPE_CHECKING

from scoring.compiled import COMPILED_MODULES, is_compiled
from streams.core_build import stale_reason
from streams.faust_internals import committed_offset, held_records, highwater
from streams.gc_pauses import collect_fully

if TYPE_CHECKING:
    from streams.app import Service

log = logging.getLogger(__name__)
LAG_INTERVAL_S = 5.0


def update_lag(service: "Service") -> None:
    """Set the lag gauges, and the held records of the inbound ones, of every partition this worker
    owns; and the lead states held back from the table."""
    app, metrics = service.app, service.metrics
    now = time.time()
    metrics.states_held_back.set(sum(len(held.states) for held in service.unwritten.values()))
    held = held_records(app)
    for tp in app.assignor.assigned_actives():
        labels = (tp.topic, str(tp.partition))
        if tp.topic in service.topic_kinds:
            metrics.records_held.labels(*labels).set(held.get(tp, 0))
        end, committed = highwater(app, tp), committed_offset(app, tp)
        if end is None:
            continue
        lag = max(end - (committed or 0), 0)
        metrics.consumer_lag.labels(*labels).set(lag)
        progress = service.progress.get((tp.topic, tp.partition))
        age = now - progress[1] if lag and progress and progress[1] else 0.0
        metrics.consumer_lag_seconds.labels(*labels).set(max(age, 0.0))


def report_scoring_core() -> None:
    """Log whether the scoring core runs compiled (the gauge ``leadscore_scoring_core_compiled``
    says it too), and warn if a compiled build in place is older than its sources."""
    compiled = is_compiled()
    log.info(
        "scoring core compiled" if compiled else "scoring core interpreted (pure-Python sources)",
        extra={"scoring_core_compiled": compiled, "compiled_modules": len(COMPILED_MODULES) if compiled else 0},
    )
    stale = stale_reason()
    if stale is not None:
        log.warning(stale)


def register_monitoring(service: "Service") -> None:
    """Register the lag timer, the rebalance and recovery signals, and the start-up report of the
    scoring core."""
    app = service.app

    @app.task  # type: ignore[untyped-decorator]
    async def scoring_core_at_start() -> None:
        report_scoring_core()

    @app.timer(interval=LAG_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def report_lag() -> None:
        update_lag(service)

    if service.settings.gc_full_interval_s > 0:

        @app.timer(interval=service.settings.gc_full_interval_s)  # type: ignore[untyped-decorator]
        async def full_collection() -> None:
            collect_fully()  # the only full collection: automatic ones are off (streams/gc_pauses.py)

    @app.on_partitions_assigned.connect  # type: ignore[untyped-decorator]
    async def on_assigned(sender: object, assigned: object, **_: object) -> None:
        service.metrics.rebalances.inc()
        service.metrics.recovery_in_progress.set(1)
        service.recovered = False  # /readyz is false until the table is recovered again
        service.forget_all_states()  # the store is the truth again after a rebalance
