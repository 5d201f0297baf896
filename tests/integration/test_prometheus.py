"""A real Prometheus server scraping a real worker, with the project's alert rules loaded.

The worker runs as a subprocess against the test broker and scores a lead's journey; Prometheus
(Debian's `prometheus` package, installed by `bash deploy/install-tools.sh`) scrapes its /metrics
every second under the job name the alerts expect. Without the binaries these tests fail.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.kafka import journey, produce, run
from tests.integration.worker import WorkerProcess, free_port
from tests.unit.test_alert_rules import alert_rules

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES_GLOB = REPO_ROOT / "deploy" / "prometheus" / "rules" / "*.yml"
JOURNEY_EVENTS = 5


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not on PATH: run `bash deploy/install-tools.sh` (installs Debian's prometheus package)")
    return path


def wait_for(what: str, condition: Callable[[], Any], timeout_s: float, detail: Callable[[], str]) -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``detail()`` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not within {timeout_s} s\n{detail()}")
        time.sleep(0.5)


@pytest.fixture(scope="module")
def scored_worker(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    """One worker for the module (starting one takes seconds), having scored a lead's journey."""
    tmp = tmp_path_factory.mktemp("prometheus-worker")
    names = f"t{uuid.uuid4().hex[:10]}."
    worker = WorkerProcess(
        env={
            "LEADSCORE_BOOTSTRAP": bootstrap,
            "LEADSCORE_TOPIC_PREFIX": names,
            "LEADSCORE_APP_ID": names.rstrip(".") + "-app",
            "LEADSCORE_PARTITIONS": "4",
            "LEADSCORE_DATA_DIR": str(tmp / "data"),
            "LEADSCORE_TICK_INTERVAL": "0.2",
        },
        log_path=tmp / "worker.log",
    ).start()
    try:
        run(produce(bootstrap, journey(names, "lead-p", int(time.time() * 1000))))
        wait_for(
            "the worker consuming the journey",
            lambda: worker.metric("leadscore_events_consumed_total") >= JOURNEY_EVENTS,
            60,
            worker.log,
        )
        yield worker
    finally:
        worker.stop()


@dataclass
class PrometheusServer:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def api(self, path: str, **params: str) -> Any:
        """GET an HTTP API path; its ``data`` (the API's status must be success)."""
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(self.url + path + query, timeout=5) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("/api/v1/query", query=expr)["result"]
        return result

    def ready(self) -> bool:
        if self.process.poll() is not None:
            pytest.fail(f"prometheus exited with {self.process.returncode}; log:\n{self.log()}")
        try:
            with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False


@pytest.fixture
def prometheus(scored_worker: WorkerProcess, tmp_path: Path) -> Iterator[PrometheusServer]:
    """Prometheus scraping the worker every second as job "leadscore", with the project's rules."""
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES_GLOB)],
        "scrape_configs": [
            {
                "job_name": "leadscore",
                "metrics_path": "/metrics",
                "static_configs": [{"targets": [f"127.0.0.1:{scored_worker.web_port}"]}],
            }
        ],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [
                binary("prometheus"),
                f"--config.file={config_file}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = PrometheusServer(process, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_for("prometheus ready", server.ready, 30, server.log)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def value(result: list[dict[str, Any]]) -> float | None:
    """The value of a one-sample instant vector, None when empty."""
    if not result:
        return None
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def test_prometheus_scrapes_the_worker_and_evaluates_the_alerts(prometheus: PrometheusServer) -> None:
    def detail() -> str:
        return f"targets: {prometheus.api('/api/v1/targets')}\nlog:\n{prometheus.log()}"

    wait_for('up{job="leadscore"} == 1', lambda: value(prometheus.query('up{job="leadscore"}')) == 1, 30, detail)
    consumed = wait_for(
        "the worker's consumed events in Prometheus",
        lambda: value(prometheus.query("sum(leadscore_events_consumed_total)")),
        30,
        detail,
    )
    assert consumed >= JOURNEY_EVENTS
    info = prometheus.query('leadscore_build_info{job="leadscore"}')
    assert [s["metric"]["version"] for s in info] == ["0.1.0"]

    # Every alert rule loaded and evaluated against the real series without an error (a bad
    # vector match, say, shows up only with real data).
    def evaluated_rules() -> list[dict[str, Any]] | None:
        rules = [r for g in prometheus.api("/api/v1/rules")["groups"] for r in g["rules"] if r["type"] == "alerting"]
        return rules if rules and all(r["health"] != "unknown" for r in rules) else None

    rules = wait_for("the alert rules evaluated", evaluated_rules, 30, prometheus.log)
    assert sorted(r["name"] for r in rules) == sorted(rule["alert"] for rule in alert_rules())  # every alert loaded
    assert {r["name"]: r["health"] for r in rules} == {r["name"]: "ok" for r in rules}, rules
    # A healthy worker: not even a pending alert.
    time.sleep(2)
    alerts = prometheus.api("/api/v1/alerts")["alerts"]
    assert alerts == [], alerts


def test_promtool_accepts_the_workers_metrics(scored_worker: WorkerProcess) -> None:
    status, text = scored_worker.get("/metrics")
    assert status == 200
    assert isinstance(text, str)
    assert "leadscore_events_consumed_total{" in text
    result = subprocess.run(
        [binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True, timeout=60, check=False
    )
    # promtool lists lint problems (a counter without _total, a unit not in base units, ...) on
    # its output: there must be none.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_metrics_can_be_restricted_to_named_samples(scored_worker: WorkerProcess) -> None:
    status, everything = scored_worker.get("/metrics")
    assert status == 200
    status, text = scored_worker.get(
        "/metrics?name[]=leadscore_events_consumed_total&name[]=leadscore_rebalances_total"
    )
    assert status == 200
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert samples
    assert {line.split("{")[0].split(" ")[0] for line in samples} == {
        "leadscore_events_consumed_total",
        "leadscore_rebalances_total",
    }
    assert len(text) < len(everything) / 10


def test_the_worker_counts_the_cpu_of_each_step_of_scoring(scored_worker: WorkerProcess) -> None:
    status, text = scored_worker.get("/metrics?name[]=leadscore_step_cpu_seconds_total")
    assert status == 200
    assert isinstance(text, str)
    seconds = {
        line.split('step="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("leadscore_step_cpu_seconds_total{")
    }
    assert set(seconds) == {"read", "score", "encode", "store"}
    assert all(value > 0 for value in seconds.values()), seconds


def test_the_worker_observes_how_old_its_batches_are_when_scoring_starts(scored_worker: WorkerProcess) -> None:
    batches = scored_worker.metric("leadscore_fetch_delay_seconds_count")
    seconds = scored_worker.metric("leadscore_fetch_delay_seconds_sum")
    assert batches >= 1
    assert 0 <= seconds / batches < 30  # the journey was produced moments before: seconds, not ms as s
