"""A real browser: headless Chromium (Debian's ``chromium``, installed by deploy/install-tools.sh)
opens deploy/collector-page.html served locally, with a signed lead token in its link; the page's
pixel snippet calls the collector, the visit reaches ``web-visits`` and the lead's score rises in a
worker. Chromium runs with the flags that keep it off the network."""

import functools
import http.server
import shutil
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest

from collector.tokens import sign_lead_token
from tests.integration.collector import CHROME, CollectorProcess
from tests.integration.kafka import read_until, run
from tests.integration.waits import counts, wait_for_lead
from tests.integration.worker import ROOT, WorkerProcess

SECRET = "browser-secret"
WRITE_KEY = "wk-browser"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (bash deploy/install-tools.sh installs Debian's chromium)"
)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def page_server() -> Iterator[str]:
    """deploy/ served on a free local port."""
    handler = functools.partial(_Quiet, directory=str(ROOT / "deploy"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_headless_chromium_pixel_raises_the_leads_score(
    worker_factory: Callable[..., WorkerProcess],
    collector_factory: Callable[..., CollectorProcess],
    page_server: str,
    bootstrap: str,
    names: str,
    tmp_path: Path,
) -> None:
    assert CHROMIUM is not None
    worker = worker_factory()
    collector = collector_factory(LEADSCORE_COLLECTOR_TOKEN_SECRET=SECRET, LEADSCORE_COLLECTOR_WRITE_KEYS=WRITE_KEY)
    lead = f"lead-{uuid.uuid4().hex[:8]}"
    profile = {"type": "lead_profile", "event_id": f"{lead}-p", "lead_id": lead, "occurred_at": int(time.time() * 1000)}
    profile |= {"seniority": "director", "company_size": 800, "industry": "software", "country": "DE"}
    assert collector.post_json("/v1/events", profile, key=WRITE_KEY).status == 202
    before = wait_for_lead(worker, lead, lambda body: body.get("fit_score", 0) > 0)
    assert before, worker.log()
    assert "pricing_page" not in counts(before)

    link = urlencode({"collector": collector.url, "lt": sign_lead_token(lead, SECRET)})
    # Headless Chromium says "HeadlessChrome" in its User-Agent, which the collector rightly counts
    # as a bot; the test browser presents the User-Agent of the same Chrome with a screen.
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'chromium'}", f"--user-agent={CHROME}"]
    command += ["--virtual-time-budget=5000", "--dump-dom", f"{page_server}/collector-page.html?{link}"]
    done = subprocess.run(command, capture_output=True, timeout=180, check=False)
    dom = done.stdout.decode(errors="replace")
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
    assert "pixel: sent" in dom, (dom[-2000:], collector.log())

    visits = run(
        read_until(bootstrap, [names + "web-visits"], lambda rs: any(r.key == lead.encode() for r in rs), timeout_s=60)
    )
    [visit] = [r.json() for r in visits if r.key == lead.encode()]
    assert visit["url"] == f"{page_server}/collector-page.html"  # the token and settings are not in the URL
    assert visit["lead_id"] == lead

    after = wait_for_lead(worker, lead, lambda body: "pricing_page" in counts(body) or "page_view" in counts(body))
    assert after["score"] > before["score"], (before, after)
