"""The collector part of ``leadscore bench`` on the real broker, short: positive rates, latencies,
and every accepted event found on Kafka. No timing thresholds (speed lives in the bench's report)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.integration.worker import ROOT

pytestmark = pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (bash deploy/install-tools.sh installs Debian's wrk)"
)
OTHER_PARTS = "baseline,leadscore,latency,scaling,core,recovery,decay"


@pytest.mark.timeout(600)
def test_collector_bench_counts_every_accepted_event(bootstrap: str, tmp_path: Path) -> None:
    env = {**os.environ, "LEADSCORE_BOOTSTRAP": bootstrap}
    command = [sys.executable, "-m", "streams", "bench", "--skip", OTHER_PARTS, "--latency-seconds", "3"]
    done = subprocess.run(
        [*command, "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=540
    )
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-5000:]
    report = orjson.loads((tmp_path / "latest.json").read_bytes())
    assert report["errors"] == {}
    for kind in ("pixel", "api"):
        part = report["collector"][kind]
        assert part["max"]["requests_per_s"] > 0
        assert part["max"]["non_2xx"] == 0
        assert part["at_half"]["samples"] > 0
        assert part["at_half"]["p99_ms"] > 0
        assert part["accepted"] > part["max"]["requests"] * 0.9  # wrk's own count misses the last in flight
        assert part["on_kafka"] == part["accepted"]
        assert part["lost"] == 0
    assert "| pixel GET /t.gif |" in (tmp_path / "latest.md").read_text()
