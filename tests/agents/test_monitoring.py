"""The lag timer's gauges (streams/monitoring.py ``update_lag``) read from the consumer's own
bookkeeping: Faust's committed offsets, the fetcher's end offsets, the batch consumer's held records."""

from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from streams.metrics import Metrics
from streams.monitoring import update_lag

pytestmark = pytest.mark.agents

VISITS, WEBINARS, TICKS = TP("web-visits", 3), TP("webinar-attendance", 3), TP("leadscore-ticks", 3)


def worker(held: dict[TP, list[object]], ends: dict[TP, int], committed: dict[TP, int]) -> Any:
    """A service whose app owns ``VISITS``, ``WEBINARS`` and ``TICKS``, with a batch consumer that
    holds ``held`` and has fetched up to ``ends``."""
    consumer = SimpleNamespace(_held=held, _committed_offset=committed, highwater=ends.__getitem__)
    assignor = SimpleNamespace(assigned_actives=lambda: {VISITS, WEBINARS, TICKS})
    app = SimpleNamespace(consumer=consumer, assignor=assignor)
    kinds = {VISITS.topic: object(), WEBINARS.topic: object()}
    return SimpleNamespace(app=app, metrics=Metrics("test", "test"), topic_kinds=kinds, progress={}, unwritten={})


def gauge(service: Any, name: str, tp: TP) -> float | None:
    value: float | None = service.metrics.registry.get_sample_value(name, {"topic": tp.topic, "partition": "3"})
    return value


def test_held_records_are_reported_per_inbound_partition_and_drop_to_zero_once_scored() -> None:
    service = worker({VISITS: [object()] * 7}, {VISITS: 100, WEBINARS: 50, TICKS: 9}, {VISITS: 40, WEBINARS: 50})
    update_lag(service)
    assert gauge(service, "leadscore_records_held", VISITS) == 7
    assert gauge(service, "leadscore_records_held", WEBINARS) == 0
    assert gauge(service, "leadscore_records_held", TICKS) is None  # not an inbound topic
    assert gauge(service, "leadscore_consumer_lag", VISITS) == 60

    service.app.consumer._held = {}
    update_lag(service)
    assert gauge(service, "leadscore_records_held", VISITS) == 0


def test_agent_consumption_has_no_held_records() -> None:
    service = worker({}, {VISITS: 1, WEBINARS: 1, TICKS: 1}, {})
    del service.app.consumer._held
    update_lag(service)
    assert gauge(service, "leadscore_records_held", VISITS) == 0


def test_the_lead_states_held_back_from_the_table_are_reported() -> None:
    service = worker({}, {VISITS: 1, WEBINARS: 1, TICKS: 1}, {})
    service.unwritten = {3: SimpleNamespace(states=dict.fromkeys([b"a", b"b"])), 5: SimpleNamespace(states={b"c": 0})}
    update_lag(service)
    assert service.metrics.registry.get_sample_value("leadscore_states_held_back") == 3
    service.unwritten = {}
    update_lag(service)
    assert service.metrics.registry.get_sample_value("leadscore_states_held_back") == 0
