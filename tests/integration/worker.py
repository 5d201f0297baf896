"""A leadscore worker as a separate process, for tests against the real broker."""

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class WorkerProcess:
    """One ``leadscore worker`` subprocess with its own environment, log and web port."""

    env: dict[str, str]
    log_path: Path
    web_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self, ready_timeout_s: float = 90.0, wait_ready: bool = True) -> "WorkerProcess":
        env = {**os.environ, **self.env, "LEADSCORE_WEB_PORT": str(self.web_port)}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        return self.wait_ready(ready_timeout_s) if wait_ready else self

    def wait_ready(self, timeout_s: float = 90.0) -> "WorkerProcess":
        """Wait until the started worker's /readyz answers 200; raise if it exits or does not."""
        assert self.process is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited with {self.process.returncode}; log:\n{self.log()}")
            if self.get("/readyz")[0] == 200:
                return self
            time.sleep(0.3)
        raise RuntimeError(f"worker not ready after {timeout_s} s; log:\n{self.log()}")

    def get(self, path: str) -> tuple[int, Any]:
        """GET a path of the worker's web server: (status, decoded JSON or text); 0 if it does not answer."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=5) as response:
                body = response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            body, status = exc.read(), exc.code
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return 0, None
        try:
            return status, orjson.loads(body)
        except orjson.JSONDecodeError:
            return status, body.decode()

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30.0) -> int:
        """Stop the worker with ``sig`` (SIGKILL for a crash); returns its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

    def log_digest(self, warnings: int = 40, tail: int = 30) -> str:
        """The log's last warning and error lines, then its last lines: what a failure report shows."""
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        levels = ('"level":"warn', '"level":"error', '"level":"crit', "WARN", "ERROR", "CRIT", "Traceback")
        flagged = [line for line in lines if any(level in line for level in levels)]
        return "\n".join(["-- warnings and errors:", *flagged[-warnings:], "-- last lines:", *lines[-tail:]])

    def metric(self, name: str, labels: str = "") -> float:
        """The value of one sample of the worker's /metrics (0 when absent)."""
        status, text = self.get("/metrics")
        assert status == 200, text
        total = 0.0
        for line in str(text).splitlines():
            if line.startswith(name + (("{" + labels) if labels else "")) and not line.startswith("#"):
                sample, value = line.rsplit(" ", 1)
                if sample == name or sample.startswith(name + "{"):
                    total += float(value)
        return total
