"""The Prometheus alert rules (deploy/prometheus/rules) and scrape configuration, checked by promtool.

promtool comes with Prometheus (Debian's `prometheus` package); `bash deploy/install-tools.sh`
installs it. Without it these tests fail, they never skip: the rules would otherwise go unchecked.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.metrics import Metrics

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "deploy" / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
RULES_FILE = RULES_DIR / "leadscore.yml"
# Beside rules/, not in it: Prometheus loads every rules/*.yml as a rules file.
RULES_TEST_FILE = PROMETHEUS_DIR / "leadscore.test.yml"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RUNBOOK_URL = "https://github.com/leadscore/leadscore/blob/main/README.md#alerts"

EXPECTED_ALERTS = {
    "LeadscoreConsumerLagHigh",
    "LeadscorePartitionStalled",
    "LeadscoreDeadLetterRateHigh",
    "LeadscoreErrorRatio",
    "LeadscoreRebalanceStorm",
    "LeadscoreEndToEndLatencyP99",
    "LeadscoreWorkerDown",
    "LeadscoreWorkerAbsent",
    "LeadscoreTableRecoveryStuck",
    "LeadscoreDecayHeldBack",
}
# The alerts that promtool unit tests must show firing (leadscore.test.yml).
MUST_BE_TESTED_FIRING = {
    "LeadscoreConsumerLagHigh",
    "LeadscoreDeadLetterRateHigh",
    "LeadscoreWorkerDown",
}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not on PATH: run `bash deploy/install-tools.sh` (installs Debian's prometheus package)"
        )
    return path


def run(*args: str, stdin: str | None = None, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, input=stdin, capture_output=True, text=True, cwd=cwd, timeout=60, check=False)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    groups = load_yaml(RULES_FILE)["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_promtool_check_rules(promtool: str) -> None:
    result = run(promtool, "check", "rules", str(RULES_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in result.stdout


def test_promtool_unit_tests_of_the_rules_pass(promtool: str) -> None:
    result = run(promtool, "test", "rules", str(RULES_TEST_FILE))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_catch_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    # The lag threshold raised from 60 s to 10 minutes: the test that lag pages must now fail.
    rules = RULES_FILE.read_text(encoding="utf-8")
    lag = '(leadscore_consumer_lag_seconds{job="leadscore"})'
    broken = rules.replace(f"{lag} > 60\n", f"{lag} > 600\n")
    assert broken != rules
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / RULES_FILE.name).write_text(broken, encoding="utf-8")
    shutil.copy(RULES_TEST_FILE, tmp_path / RULES_TEST_FILE.name)
    result = run(promtool, "test", "rules", RULES_TEST_FILE.name, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "alertname: LeadscoreConsumerLagHigh" in output, output


def test_promtool_check_config(promtool: str) -> None:
    result = run(promtool, "check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_config_loads_the_rules_where_compose_mounts_them(promtool: str, tmp_path: Path) -> None:
    # docker-compose.yml mounts deploy/prometheus/rules at /etc/prometheus/rules; the same config
    # with that directory pointing at the repository must load (and check) every rule.
    config = load_yaml(PROMETHEUS_CONFIG)
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yml"]
    compose = load_yaml(REPO_ROOT / "docker-compose.yml")
    assert "./deploy/prometheus/rules:/etc/prometheus/rules:ro" in compose["services"]["prometheus"]["volumes"]
    # Every file there is copied: anything else matching *.yml (a promtool unit tests file, say)
    # would be loaded as rules and fail, as it would in the real Prometheus.
    rules_dir = tmp_path / "rules"
    rules_dir.mkdir()
    for path in RULES_DIR.iterdir():
        if path.is_file():
            shutil.copy(path, rules_dir / path.name)
    config["rule_files"] = [str(rules_dir / "*.yml")]
    relocated = tmp_path / "prometheus.yml"
    relocated.write_text(yaml.safe_dump(config), encoding="utf-8")
    result = run(promtool, "check", "config", str(relocated))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in result.stdout, result.stdout


def test_every_expected_alert_exists() -> None:
    names = [rule["alert"] for rule in alert_rules()]
    assert len(names) == len(set(names)), "an alert name is used twice"
    assert set(names) == EXPECTED_ALERTS


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: rule["alert"])
def test_every_alert_is_complete(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"\d+[smh]", str(rule.get("for", ""))), "every alert needs a `for:` duration"
    assert rule["labels"]["severity"] in {"page", "ticket"}
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    assert annotations["runbook_url"] == RUNBOOK_URL


def test_the_firing_of_the_key_alerts_is_tested() -> None:
    tested = {
        case["alertname"]
        for test in load_yaml(RULES_TEST_FILE)["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested >= MUST_BE_TESTED_FIRING
    # And a healthy service, checked for every alert, fires none.
    healthy = [t for t in load_yaml(RULES_TEST_FILE)["tests"] if "healthy" in t["name"]]
    assert healthy
    quiet = {case["alertname"] for t in healthy for case in t["alert_rule_test"] if not case.get("exp_alerts")}
    assert quiet == EXPECTED_ALERTS


def test_promtool_check_metrics_reports_lint_problems(promtool: str) -> None:
    # Control for tests/integration/test_prometheus.py, which asserts an empty report on the
    # worker's /metrics: the same command does report what it should.
    bad = (
        "# HELP foo Things.\n# TYPE foo counter\nfoo 1\n# HELP bar_milliseconds Time.\n# TYPE bar_milliseconds gauge\n"
    )
    result = run(promtool, "check", "metrics", stdin=bad + "bar_milliseconds 1\n")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert 'counter metrics should have "_total" suffix' in output, output
    assert 'use base unit "seconds"' in output, output


def exposed_metric_names() -> set[str]:
    """Every series name the worker's /metrics can carry, from its own collectors."""
    names: set[str] = set()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "info": ("_info",),
        "gauge": ("",),
    }
    for family in Metrics("0", "test").registry.collect():
        names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def test_alerts_use_only_metrics_the_worker_exposes() -> None:
    exposed = exposed_metric_names() | {"up"}
    for rule in alert_rules():
        used = set(re.findall(r"\b(leadscore_[a-z0-9_]+|up)\b", rule["expr"]))
        assert used, rule["alert"]
        assert used <= exposed, f"{rule['alert']} queries unknown metrics {sorted(used - exposed)}"
