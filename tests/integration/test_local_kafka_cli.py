"""The `kafka` CLI against a real JVM broker on a free port and its own state dir."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.local_kafka import pinned_version, probe

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("java") is None or shutil.which("mvn") is None,
        reason="needs Java 17+ and Maven",
    ),
]


def _free_port_pair() -> int:
    """A free port whose default controller port (port + 10000) is free too."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair found")


def _kafka(*args: str, state_dir: Path) -> subprocess.CompletedProcess[str]:
    code = "from streams.local_kafka import kafka_cli; kafka_cli()"
    return subprocess.run(
        [sys.executable, "-c", code, *args, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    port, state_dir = _free_port_pair(), tmp_path / "broker"
    try:
        yield port, state_dir
    finally:
        _kafka("stop", "--port", str(port), state_dir=state_dir)


def test_start_status_stop(broker: tuple[int, Path]) -> None:
    port, state_dir = broker
    address, version = f"127.0.0.1:{port}", pinned_version()

    first = _kafka("start", "--port", str(port), "--timeout", "120", state_dir=state_dir)
    assert first.returncode == 0, first.stderr
    assert f"Apache Kafka {version} is running on {address}" in first.stdout
    pid = int((state_dir / "kafka.pid").read_text())
    asyncio.run(probe(address, 10.0))

    second = _kafka("start", "--port", str(port), state_dir=state_dir)
    assert second.returncode == 0, second.stderr
    assert f"Apache Kafka {version} was already running on {address} (pid {pid}" in second.stdout

    running = _kafka("status", "--port", str(port), state_dir=state_dir)
    assert running.returncode == 0, running.stderr
    assert f"Apache Kafka {version} is running on {address} (pid {pid}" in running.stdout

    stopped = _kafka("stop", "--port", str(port), state_dir=state_dir)
    assert stopped.returncode == 0, stopped.stderr
    assert f"Stopped Apache Kafka on {address} (pid {pid})" in stopped.stdout
    assert not Path(f"/proc/{pid}").exists() or b"kafka.Kafka" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    assert not (state_dir / "kafka.pid").exists()

    after = _kafka("status", "--port", str(port), state_dir=state_dir)
    assert after.returncode == 3
    assert f"Apache Kafka is not running on {address}" in after.stdout

    again = _kafka("stop", "--port", str(port), state_dir=state_dir)
    assert again.returncode == 0
    assert "nothing to stop" in again.stdout
    assert os.path.getsize(state_dir / "kafka.log") > 0
