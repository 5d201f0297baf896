"""The identity sweep on the real broker, the worker as a separate process: with a window of three
minutes and a sweep every second, an anonymous visit parked 2 min 40 s after it happened is
deleted (a tombstone on the identity table's changelog) once it outlives the window, while a
fresh one stays in the table and is still released by its identify."""

import time
from collections.abc import Callable

from tests.integration.kafka import Received, produce, read_until, run
from tests.integration.test_identity import anonymous_visit, identify
from tests.integration.waits import counts, wait_for_lead
from tests.integration.worker import WorkerProcess

WAIT_S = 120.0
WINDOW_S = 180


def wait_metric(worker: WorkerProcess, name: str, labels: str, at_least: float) -> float:
    deadline = time.monotonic() + WAIT_S
    while (value := worker.metric(name, labels)) < at_least and time.monotonic() < deadline:
        time.sleep(0.5)
    return value


def last_values(records: list[Received]) -> dict[bytes | None, list[bytes | None]]:
    values: dict[bytes | None, list[bytes | None]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        values.setdefault(r.key, []).append(r.value)
    return values


def test_a_parked_visit_past_the_window_is_tombstoned_and_a_fresh_one_stays(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str
) -> None:
    worker = worker_factory(LEADSCORE_IDENTITY_WINDOW_DAYS=str(WINDOW_S / 86400), LEADSCORE_IDENTITY_SWEEP_INTERVAL="1")
    now = int(time.time() * 1000)
    visits = names + "web-visits"
    old = anonymous_visit("anon-old", "old-1", now - (WINDOW_S - 20) * 1000, "/pricing")  # 20 s left
    fresh = anonymous_visit("anon-fresh", "fresh-1", now, "/pricing")  # 3 min left
    run(produce(bootstrap, [(visits, b"anon-old", old), (visits, b"anon-fresh", fresh)]))
    assert wait_metric(worker, "leadscore_identity_events_total", 'outcome="parked"', 2) == 2
    assert worker.metric("leadscore_identity_swept_keys_total") == 0  # both within the window so far

    assert wait_metric(worker, "leadscore_identity_swept_keys_total", "", 1) == 1
    changelog = f"{names.rstrip('.')}-app-identities-changelog"
    records = run(
        read_until(bootstrap, [changelog], lambda rs: any(r.key == b"anon:anon-old" and r.value is None for r in rs))
    )
    values = last_values(records)
    assert values[b"anon:anon-old"][0] is not None  # parked first
    assert values[b"anon:anon-old"][-1] is None  # then a tombstone: gone from the table on recovery too
    assert None not in values[b"anon:anon-fresh"]  # the fresh key was never deleted
    assert worker.metric("leadscore_identity_sweeps_total") >= 1
    assert worker.metric("leadscore_identity_events_total", 'outcome="expired"') == 1

    # The fresh visit is still parked: its identify releases it; the swept one released nothing.
    identities = names + "lead-identities"
    run(
        produce(
            bootstrap,
            [
                (identities, b"anon:anon-old", identify("anon-old", "L-old", now + 1)),
                (identities, b"anon:anon-fresh", identify("anon-fresh", "L-fresh", now + 1)),
            ],
        )
    )
    lead = wait_for_lead(worker, "L-fresh", lambda body: counts(body).get("pricing_page", 0) >= 1)
    assert counts(lead) == {"page_view": 1, "pricing_page": 1}
    assert worker.metric("leadscore_identity_links_total", 'result="linked"') == 2
    assert worker.metric("leadscore_identity_events_total", 'outcome="forwarded"') == 1
    assert worker.get("/leads/L-old")[0] == 404
