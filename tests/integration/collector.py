"""The collector as a separate process (``python -m streams collect``), and HTTP calls to it."""

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from tests.integration.worker import ROOT, free_port

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"


@dataclass
class Answer:
    """An HTTP answer: status, headers and body."""

    status: int
    headers: dict[str, str]
    cookies: list[str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class CollectorProcess:
    """One ``leadscore collect`` subprocess with its own environment, log and port."""

    env: dict[str, str]
    log_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, ready_timeout_s: float = 90.0, wait_ready: bool = True) -> "CollectorProcess":
        env = {**os.environ, **self.env, "LEADSCORE_COLLECTOR_PORT": str(self.port)}
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams", "collect"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + ready_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"collector exited with {self.process.returncode}; log:\n{self.log()}")
            status = self.request("GET", "/readyz").status
            if status == 200 or (status and not wait_ready):
                return self
            time.sleep(0.3)
        raise RuntimeError(f"collector not ready after {ready_timeout_s} s; log:\n{self.log()}")

    def request(
        self, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None
    ) -> Answer:
        """One HTTP call; status 0 when nothing answers."""
        request = urllib.request.Request(self.url + path, data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return Answer(
                    response.status,
                    dict(response.headers),
                    response.headers.get_all("Set-Cookie") or [],
                    response.read(),
                )
        except urllib.error.HTTPError as exc:
            return Answer(exc.code, dict(exc.headers), exc.headers.get_all("Set-Cookie") or [], exc.read())
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return Answer(0, {}, [], b"")

    def post_json(self, path: str, payload: Any, key: str | None = None) -> Answer:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return self.request("POST", path, orjson.dumps(payload), headers)

    def pixel(self, query: str, cookie: str = "") -> Answer:
        headers = {"User-Agent": CHROME} | ({"Cookie": cookie} if cookie else {})
        return self.request("GET", "/t.gif?" + query, headers=headers)

    def metric(self, name: str) -> float:
        text = self.request("GET", "/metrics").body.decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith(name) and not line.startswith("#")
        )

    def stop(self, timeout_s: float = 30.0) -> None:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


def cookie_value(answer: Answer, name: str) -> str | None:
    """The value a Set-Cookie header of the answer gives to ``name``."""
    for header in answer.cookies:
        first = header.split(";", 1)[0]
        key, _, value = first.partition("=")
        if key.strip() == name:
            return value.strip()
    return None
