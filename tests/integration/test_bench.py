"""``leadscore bench`` at a small size against the real broker: every section, positive numbers.

No timing thresholds: speed targets live only in the benchmark's own report. About two and a half
minutes, one of them the consumer group's 60 s session timeout after the SIGKILL of the recovery part.
"""

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.bench_kafka import create_topic, keep_forever
from tests.integration.kafka import run, topic_config
from tests.integration.worker import ROOT

pytestmark = pytest.mark.integration

SIZES = ["--leads", "2000", "--events", "20000", "--recovery-leads", "20000", "--latency-seconds", "3"]
LATENCY_RATE = 8000  # the paced levels' base, given: 2,000, 4,000 and 6,000 events/s


def _positive(section: dict[str, Any], *keys: str) -> None:
    for key in keys:
        assert section[key] > 0, (key, section)


@pytest.mark.timeout(900)
def test_small_bench_writes_every_section_with_positive_numbers(bootstrap: str, tmp_path: Path) -> None:
    env = {**os.environ, "LEADSCORE_BOOTSTRAP": bootstrap}
    env.pop("GLIBC_TUNABLES", None)  # the worker chooses its malloc tunables itself
    done = subprocess.run(
        [sys.executable, "-m", "streams", "bench", *SIZES, "--latency-rate", str(LATENCY_RATE), "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    report = orjson.loads((tmp_path / "latest.json").read_bytes())
    assert report["errors"] == {}
    assert report["machine"]["cores"] >= 1
    assert report["machine"]["kafka"]
    assert report["input"]["events"] == 20000
    _positive(report["baseline"], "events_per_s", "seconds", "peak_rss_bytes")
    _positive(report["leadscore"], "events_per_s", "cpu_us_per_event", "peak_rss_bytes", "changelog_messages")
    assert report["leadscore"]["ratio_to_baseline"] > 0
    _positive(report["leadscore"]["cpu_us_per_event_by_step"], "read", "score", "encode", "store", "other_threads")
    assert "rest_main" in report["leadscore"]["cpu_us_per_event_by_step"]
    _positive(report["leadscore"], "minor_faults", "system_cpu_s")
    usable = report["machine"]["libc"] == "glibc" and report["machine"]["transparent_huge_pages"] in (
        "madvise",
        "always",
    )
    assert report["leadscore"]["heap_huge_pages"] is usable
    assert [level["fraction"] for level in report["latency"]["levels"]] == [0.25, 0.5, 0.75]
    assert [level["target_rate"] for level in report["latency"]["levels"]] == [2000, 4000, 6000]
    for level in report["latency"]["levels"]:
        _positive(level, "achieved_rate", "samples", "p50_ms", "p95_ms", "p99_ms", "worker_cpu_us_per_event")
    assert [scaled["workers"] for scaled in report["scaling"]["runs"]] == [1, 2, 4]
    for scaled in report["scaling"]["runs"]:
        _positive(scaled, "events_per_s", "cpu_us_per_event", "peak_rss_bytes")
        assert sum(scaled["per_worker_events"]) >= 20000
    recovery = report["recovery"]
    assert recovery["changelog_messages"] >= 20000
    _positive(recovery["same_data_dir"], "ready_s")
    _positive(recovery["fresh_data_dir"], "ready_s", "assigned_s", "changelog_restore_s")
    core = report["core"]
    assert core["events"] == 20000
    _positive(core, "score_us_per_event", "encode_us_per_event", "states_per_event", "mean_state_bytes")
    _positive(core, "read_us_per_event", "baseline_own_us_per_event")
    assert "floor of one worker process" in (tmp_path / "latest.md").read_text()
    _positive(report["decay"]["due_index"], "due", "tick_s")
    _positive(report["decay"]["full_scan"], "due", "tick_s")
    assert {t["name"] for t in report["targets"]} >= {"events/s vs baseline", "worker CPU per event"}
    assert (tmp_path / "latest.md").read_text().count("|") > 20
    assert (tmp_path / "latest.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / f"bench-{report['started_at']}.json").exists()


def test_the_catch_up_input_is_kept_whatever_its_age(bootstrap: str, names: str) -> None:
    """The catch-up input is stamped with its events' times, months old: with the broker's default
    retention (7 days) it would be deleted under the worker."""
    topics = [f"{names}visits", f"{names}webinars"]
    client = {"bootstrap_servers": bootstrap}
    for topic in topics:
        run(create_topic(client, topic, 2))
    assert [run(topic_config(bootstrap, t, "retention.ms")) for t in topics] == [str(7 * 24 * 3600 * 1000)] * 2
    run(keep_forever(client, topics))
    assert [run(topic_config(bootstrap, t, "retention.ms")) for t in topics] == ["-1", "-1"]
