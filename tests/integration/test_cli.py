"""The command line against the real broker: send (events, anonymous visits, identify), explain."""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from tests.integration.kafka import read_until, run
from tests.integration.waits import counts, wait_for_lead
from tests.integration.worker import ROOT, WorkerProcess


def leadscore(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", *args], cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True
    )


def test_send_routes_lines_by_type_and_explain_shows_the_breakdown(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str, tmp_path: Path
) -> None:
    worker = worker_factory()
    env = {"LEADSCORE_BOOTSTRAP": bootstrap, "LEADSCORE_TOPIC_PREFIX": names, "LEADSCORE_PARTITIONS": "4"}
    now = int(time.time() * 1000)
    lines: list[dict[str, object]] = [
        {"type": "lead_profile", "seniority": "vp", "company_size": 1200, "industry": "fintech", "country": "GB"},
        {"type": "web_visit", "url": "/pricing"},
        {"type": "web_visit", "url": "/pricing"},
        {"type": "web_visit", "url": "/demo"},
        {"type": "content_download", "asset_id": "a1", "asset_type": "api_docs"},
    ]
    events = [
        {**line, "event_id": f"s{i}", "lead_id": "lead-s", "occurred_at": now + i} for i, line in enumerate(lines)
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b'\n{"type": "tweet", "lead_id": "x"}\n')
    refused = leadscore("send", str(bad), env=env)
    assert refused.returncode == 1
    assert "bad.jsonl:6: unknown type 'tweet'" in refused.stderr

    good = tmp_path / "good.jsonl"
    good.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    sent = leadscore("send", str(good), env=env)
    assert sent.returncode == 0, sent.stderr
    assert f"3 events -> {names}web-visits" in sent.stdout
    records = run(read_until(bootstrap, [names + "mql-handoff"], lambda r: len(r) >= 1, timeout_s=60))
    assert [r.key for r in records] == [b"lead-s"]  # nothing of the refused file was sent

    explained = leadscore("explain", "lead-s", "--url", worker.url, env=env)
    assert explained.returncode == 0, explained.stdout
    assert "lead lead-s: MQL" in explained.stdout
    assert "pricing_page x2" in explained.stdout
    unknown = leadscore("explain", "nobody", "--url", worker.url, env=env)
    assert unknown.returncode == 1
    assert "not known" in unknown.stdout


def test_send_parks_anonymous_visits_and_an_identify_line_releases_them_to_the_lead(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str, tmp_path: Path
) -> None:
    worker = worker_factory()
    env = {"LEADSCORE_BOOTSTRAP": bootstrap, "LEADSCORE_TOPIC_PREFIX": names, "LEADSCORE_PARTITIONS": "4"}
    now = int(time.time() * 1000)
    visits = tmp_path / "visits.jsonl"
    lines = [
        {"type": "web_visit", "event_id": f"a{i}", "anonymous_id": "anon-cli", "occurred_at": now + i} for i in (1, 2)
    ]
    visits.write_bytes(b"\n".join(orjson.dumps({**line, "url": "/pricing"}) for line in lines) + b"\n")
    sent = leadscore("send", str(visits), env=env)
    assert sent.returncode == 0, sent.stderr
    assert f"2 events -> {names}web-visits" in sent.stdout
    deadline = time.monotonic() + 90
    while worker.metric("leadscore_identity_events_total", 'outcome="parked"') < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert worker.metric("leadscore_identity_events_total", 'outcome="parked"') == 2
    assert worker.get("/leads/lead-cli")[0] == 404

    identify = tmp_path / "identify.jsonl"
    identify.write_bytes(orjson.dumps({"type": "identify", "anonymous_id": "anon-cli", "lead_id": "lead-cli"}) + b"\n")
    sent = leadscore("send", str(identify), env=env)
    assert sent.returncode == 0, sent.stderr
    assert f"1 events -> {names}lead-identities" in sent.stdout
    lead = wait_for_lead(worker, "lead-cli", lambda body: counts(body).get("pricing_page", 0) >= 2)
    assert counts(lead) == {"page_view": 2, "pricing_page": 2}
    assert worker.metric("leadscore_identity_links_total", 'result="linked"') == 1
