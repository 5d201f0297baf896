"""The demo's collector and page: ``leadscore demo`` starts a collector and serves a page with the
pixel and a signed link; the page's pixel call scores the demo lead on the demo's fast clock, and
the worker lets the page read the lead's live score (CORS for the page's origin only). A headless
Chromium, when installed, shows that score in the page."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import orjson

from collector.pixel import GIF
from tests.integration.collector import CHROME
from tests.integration.test_collector_browser import FLAGS

BOOTSTRAP = os.environ.get("LEADSCORE_TEST_BOOTSTRAP", "127.0.0.1:9092")


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=10) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
    except (urllib.error.URLError, OSError):
        return 0, {}, b""


def test_demo_page_pixel_feeds_a_live_score(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEADSCORE_")}
    env["LEADSCORE_BOOTSTRAP"] = BOOTSTRAP
    command = [sys.executable, "-m", "streams", "demo", "--duration", "120", "--leads-per-minute", "30"]
    demo = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert demo.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        page_url = ""
        while time.monotonic() < deadline and not page_url:
            line = demo.stdout.readline().decode()
            if not line:
                break
            lines.append(line)
            if line.startswith("  http://") and "collector-page.html" in line:
                page_url = line.strip()
        assert page_url, "".join(lines)
        params = {k: v[0] for k, v in parse_qs(urlsplit(page_url).query).items()}
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(page_url))
        status, _, page = _get(page_url)
        assert status == 200
        assert b"/t.gif?" in page

        # What the page's snippet does in a browser: the pixel with the page and the signed token.
        pixel = f"{params['collector']}/t.gif?u={origin}/pricing&lt={params['lt']}"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and _get(f"{params['worker']}/readyz")[0] != 200:
            time.sleep(0.5)
        status, _, body = _get(pixel, {"User-Agent": CHROME})
        assert (status, body) == (200, GIF)

        lead_url = f"{params['worker']}/leads/{params['lead']}"
        state: dict[str, object] = {}
        headers: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, headers, body = _get(lead_url)
            if status == 200:
                state = orjson.loads(body)
                break
            time.sleep(0.5)
        assert state, "".join(lines)
        assert float(str(state["engagement_score"])) > 0  # stamped on the demo's clock, so not decayed away
        assert headers.get("Access-Control-Allow-Origin") == origin

        chromium = shutil.which("chromium")
        if chromium is not None:  # the page itself shows the live score
            browser = [chromium, *FLAGS, f"--user-data-dir={tmp_path / 'chromium'}", f"--user-agent={CHROME}"]
            browser += ["--virtual-time-budget=8000", "--dump-dom", page_url]
            done = subprocess.run(browser, capture_output=True, timeout=180, check=False)
            dom = done.stdout.decode(errors="replace")
            assert re.search(r'<span id="score">\d+\.\d\d</span>', dom), dom[-2000:]
    finally:
        demo.send_signal(signal.SIGINT)
        try:
            rest, _ = demo.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            demo.kill()
            rest, _ = demo.communicate()
    output = "".join(lines) + rest.decode(errors="replace")
    assert demo.returncode == 0, output[-4000:]
    collector = re.search(r"Collector: (http://\S+)", output)
    assert collector is not None
    assert _get(collector.group(1) + "/livez")[0] == 0, "the demo left its collector running"
