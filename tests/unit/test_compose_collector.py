"""The collector in the local stack: a valid Compose service (checked by the real Compose v2
binary, as tests/unit/test_compose.py does), its port, probe and command, and a Prometheus job."""

from pathlib import Path

import pytest

from tests.unit.test_compose import PROMETHEUS_CONFIG, compose_bin, load_yaml, resolved_config

pytestmark = pytest.mark.unit
__all__ = ["compose_bin"]  # the fixture, shared


def test_collector_service(compose_bin: Path) -> None:
    services = resolved_config(compose_bin)["services"]
    collector = services["collector"]
    assert collector["command"] == ["collect"]
    assert collector["image"] == services["worker"]["image"]
    assert collector["environment"]["LEADSCORE_BOOTSTRAP"] == "kafka:9092"
    assert collector["environment"]["LEADSCORE_COLLECTOR_HOST"] == "0.0.0.0"
    assert [p["target"] for p in collector["ports"]] == [int(collector["environment"]["LEADSCORE_COLLECTOR_PORT"])]
    assert "/readyz" in " ".join(collector["healthcheck"]["test"])
    assert collector["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_prometheus_scrapes_the_collector() -> None:
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]}
    targets = [t for sc in jobs["leadscore-collector"]["static_configs"] for t in sc["targets"]]
    assert targets == ["collector:6070"]
