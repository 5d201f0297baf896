"""The plumbing: a minimal Faust worker, as a subprocess, between two topics of the real broker."""

import os
import subprocess
import sys
from pathlib import Path

from tests.integration.kafka import produce, read_until, run

ROOT = Path(__file__).resolve().parents[2]


def test_a_faust_worker_subprocess_consumes_one_topic_and_produces_another(
    bootstrap: str, names: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "SMOKE_APP_ID": names + "smoke",
        "SMOKE_BOOTSTRAP": bootstrap,
        "SMOKE_IN": names + "in",
        "SMOKE_OUT": names + "out",
    }
    log = (tmp_path / "smoke.log").open("wb")
    # The worker may start before or after the topics exist; the consumer reads from the earliest offset.
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.smoke_app", "--datadir", str(tmp_path), "worker", "-l", "info"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        run(produce(bootstrap, [(names + "in", b"k", b"hello kafka")]))
        records = run(read_until(bootstrap, [names + "out"], lambda r: len(r) >= 1, timeout_s=90))
        assert [r.value for r in records] == [b"HELLO KAFKA"], (tmp_path / "smoke.log").read_text()[-3000:]
    finally:
        worker.terminate()
        worker.wait(30)
