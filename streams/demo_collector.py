"""The demo's collector and page: ``leadscore collect`` on the demo's topics and clock, and
deploy/collector-page.html served locally with a signed link for one demo lead, whose page shows
the lead's live score (it polls the worker's ``/leads/{id}``, allowed by LEADSCORE_WORKER_CORS_ORIGIN)."""

import functools
import http.server
import secrets
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from streams.settings import PREFIX

DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy"
PAGE = "collector-page.html"
PREFERRED_COLLECTOR_PORT = 6070
PREFERRED_PAGE_PORT = 8070
DEMO_LEAD = "demo-visitor"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


class DemoPage:
    """The collector process and the page server of one demo run."""

    def __init__(self, plan: Any) -> None:
        from streams.demo import free_port

        self.plan = plan
        self.collector_port = free_port(PREFERRED_COLLECTOR_PORT)
        self.page_port = free_port(PREFERRED_PAGE_PORT)
        self.secret = secrets.token_urlsafe(24)
        self.proc: subprocess.Popen[bytes] | None = None
        self.server: http.server.ThreadingHTTPServer | None = None
        # The worker (started after this) lets the page read the demo lead's score.
        plan.env[f"{PREFIX}WORKER_CORS_ORIGIN"] = self.origin

    @property
    def origin(self) -> str:
        """Where the page is served from."""
        return f"http://127.0.0.1:{self.page_port}"

    @property
    def collector_url(self) -> str:
        """The collector's address."""
        return f"http://127.0.0.1:{self.collector_port}"

    @property
    def log_file(self) -> Path:
        """The collector's log."""
        return Path(self.plan.run_dir) / "collector.log"

    def page_url(self) -> str:
        """The page as a signed e-mail link would open it: the lead token and where to find things."""
        from collector.tokens import sign_lead_token

        query = {
            "collector": self.collector_url,
            "lt": sign_lead_token(DEMO_LEAD, self.secret),
            "worker": self.plan.web_url,
            "lead": DEMO_LEAD,
        }
        return f"{self.origin}/{PAGE}?{urlencode(query)}"

    def start(self) -> None:
        """Start the collector and the page server."""
        env = {
            **self.plan.env,
            f"{PREFIX}COLLECTOR_HOST": "127.0.0.1",
            f"{PREFIX}COLLECTOR_PORT": str(self.collector_port),
            f"{PREFIX}COLLECTOR_TOKEN_SECRET": self.secret,
        }
        Path(self.plan.run_dir).mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams", "collect"],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        handler = functools.partial(_QuietHandler, directory=str(DEPLOY_DIR))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.page_port), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def ready(self) -> bool:
        """Whether the collector answers ``/readyz`` with 200."""
        from streams.demo import http_get

        return http_get(f"{self.collector_url}/readyz")[0] == 200

    def announce(self, timeout_s: float = 60.0) -> None:
        """Wait for the collector (briefly), then print the page's address."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not self.ready():
            if self.proc is not None and self.proc.poll() is not None:
                print(f"the collector exited with {self.proc.returncode}; see {self.log_file}", flush=True)
                return
            time.sleep(0.3)
        print(f"Collector: {self.collector_url} (log {self.log_file})", flush=True)
        print(f"Open this page: its pixel scores lead {DEMO_LEAD!r}, live:\n  {self.page_url()}", flush=True)

    def stop(self) -> None:
        """Stop the page server and the collector."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
