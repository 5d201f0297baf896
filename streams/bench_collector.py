"""The collector part of ``leadscore bench``: one ``leadscore collect`` process on the local broker.

- the maximum pixel and API requests/s, each driven by ``wrk`` (closed loop: ``WRK_CONNECTIONS``
  connections as fast as the collector answers) for the latency phase's duration;
- p50/p95/p99 latency at 50% of each maximum, from an open-loop paced client (a request's latency
  counts from when it was due, so a stalled collector cannot hide its queue);
- every accepted event found on Kafka: the collector's accepted counters against the topics' end
  offsets (none lost, none doubled).

Pixel requests carry one of ``TOKENS`` signed lead tokens (a web visit each, keyed by the lead);
API requests POST one content download each to ``/v1/events``.
"""

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

THREADS = 2
WRK_CONNECTIONS = 32
PACED_CONNECTIONS = 64
TOKENS = 1000
SECRET = "bench-token-secret"  # noqa: S105 (a throw-away secret of the bench run)
WRITE_KEY = "bench-write-key"
CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
READY_TIMEOUT_S = 90.0
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {text}", flush=True)


def parse_wrk(output: str) -> dict[str, Any]:
    """Requests/s, total requests, errors and latency percentiles (ms) from ``wrk --latency`` output."""
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    total = re.search(r"(\d+) requests in ", output)
    if rate is None or total is None:
        raise ValueError(f"not wrk output: {output[-500:]!r}")
    percentiles = {
        f"p{int(float(p))}_ms": round(float(value) * _UNITS[unit], 3)
        for p, value, unit in re.findall(r"^\s+(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    }
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "requests_per_s": float(rate.group(1)),
        "requests": int(total.group(1)),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": sum(int(n) for n in errors.groups()) if errors else 0,
        **percentiles,
    }


def pixel_script(tokens: list[str]) -> str:
    """The wrk script of pixel requests: a page view of one of the leads, a browser's User-Agent."""
    listed = ",".join(f'"{t}"' for t in tokens)
    return f"""
local tokens = {{{listed}}}
local i = 0
request = function()
  i = i + 1
  local path = "/t.gif?u=https%3A%2F%2Fwww.example.com%2Fpricing&e=" .. math.random(1, 2147483647)
    .. "&lt=" .. tokens[(i % #tokens) + 1]
  return wrk.format("GET", path, {{["User-Agent"] = "{CHROME}"}})
end
"""


def api_script(now_ms: int) -> str:
    """The wrk script of API requests: one content download per POST, of one of 1,000 leads."""
    return f"""
local i = 0
local headers = {{["Authorization"] = "Bearer {WRITE_KEY}", ["Content-Type"] = "application/json"}}
request = function()
  i = i + 1
  local body = string.format(
    '{{"type":"content_download","event_id":"b-%d-%d","lead_id":"bench-lead-%d","occurred_at":{now_ms},'
      .. '"asset_id":"a1","asset_type":"guide"}}',
    math.random(1, 2147483647), i, i % 1000)
  return wrk.format("POST", "/v1/events", headers, body)
end
"""


def _wrk(url: str, script: Path, seconds: float) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        from streams.bench_proc import BenchError

        raise BenchError("wrk is not installed (bash deploy/install-tools.sh installs Debian's wrk)")
    command = [wrk, f"-t{THREADS}", f"-c{WRK_CONNECTIONS}", f"-d{max(1, round(seconds))}s", "--latency", "-s"]
    done = subprocess.run([*command, str(script), url], capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        from streams.bench_proc import BenchError

        raise BenchError(f"wrk failed ({done.returncode}): {done.stderr[-1000:]}")
    return parse_wrk(done.stdout)


async def _paced(base: str, kind: str, rate: float, seconds: float, tokens: list[str]) -> dict[str, Any]:
    """Open loop at ``rate`` requests/s: each request's latency runs from when it was due."""
    import aiohttp

    now_ms = int(time.time() * 1000)
    latencies: list[float] = []
    failures = 0
    count = max(1, int(rate * seconds))
    connector = aiohttp.TCPConnector(limit=PACED_CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def one(i: int, due: float) -> None:
            nonlocal failures
            try:
                if kind == "pixel":
                    url = f"{base}/t.gif?u=https%3A%2F%2Fwww.example.com%2Fpricing&e=p{i}&lt={tokens[i % len(tokens)]}"
                    async with session.get(url, headers={"User-Agent": CHROME}) as answer:
                        await answer.read()
                        ok = answer.status == 200
                else:
                    event: dict[str, Any] = {"type": "content_download", "event_id": f"paced-{now_ms}-{i}"}
                    event |= {"lead_id": f"bench-lead-{i % 1000}", "occurred_at": now_ms}
                    event |= {"asset_id": "a1", "asset_type": "guide"}
                    headers = {"Authorization": f"Bearer {WRITE_KEY}"}
                    async with session.post(f"{base}/v1/events", json=event, headers=headers) as answer:
                        await answer.read()
                        ok = answer.status == 202
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            if ok:
                latencies.append((time.perf_counter() - due) * 1000)
            else:
                failures += 1

        began = time.perf_counter()
        tasks = []
        for i in range(count):
            due = began + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - began
    latencies.sort()

    def pct(q: float) -> float | None:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 2) if latencies else None

    return {
        "target_rate": round(rate, 1),
        "achieved_rate": round(len(latencies) / elapsed, 1),
        "samples": len(latencies),
        "failures": failures,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
    }


def _accepted(base: str, source: str) -> float:
    from streams.demo import http_get

    status, body = http_get(f"{base}/metrics")
    if status != 200:
        return float("nan")
    pattern = re.compile(rf'^leadscore_collector_events_accepted_total{{[^}}]*source="{source}"[^}}]*}} ([\d.e+]+)$')
    return sum(float(m.group(1)) for line in body.decode().splitlines() if (m := pattern.match(line)))


def _start(run: Any, prefix: str, port: int) -> "subprocess.Popen[bytes]":
    from streams.bench_proc import BenchError, clean_env
    from streams.demo import http_get

    settings = {
        **run.security,  # LEADSCORE_SECURITY_PROTOCOL etc. of the run, if any
        "LEADSCORE_BOOTSTRAP": run.bootstrap,
        "LEADSCORE_TOPIC_PREFIX": prefix,
        "LEADSCORE_PARTITIONS": "8",
        "LEADSCORE_COLLECTOR_PORT": str(port),
        "LEADSCORE_COLLECTOR_TOKEN_SECRET": SECRET,
        "LEADSCORE_COLLECTOR_WRITE_KEYS": WRITE_KEY,
        "LEADSCORE_COLLECTOR_RATE": "1000000000",  # the bench measures the collector, not its limiter
        "LEADSCORE_COLLECTOR_BURST": "1000000000",
        "LEADSCORE_LOG_LEVEL": "warning",
    }
    log_path = run.run_dir / "collector.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "collect"],
            env=clean_env(os.environ, settings),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"the collector exited with {proc.returncode}; log {log_path}")
        if http_get(f"http://127.0.0.1:{port}/readyz")[0] == 200:
            return proc
        time.sleep(0.3)
    proc.kill()
    raise BenchError(f"the collector was not ready within {READY_TIMEOUT_S:g} s; log {log_path}")


def part_collector(ctx: Any) -> None:
    """Run the collector part; its results go to ``ctx.report["collector"]``."""
    from collector.tokens import sign_lead_token
    from streams.bench_kafka import end_offsets_sum
    from streams.bench_proc import free_port

    run, seconds = ctx.run, max(3.0, float(ctx.options.latency_seconds))
    prefix, port = f"{run.name}.collector.", free_port()
    base = f"http://127.0.0.1:{port}"
    tokens = [sign_lead_token(f"bench-lead-{i}", SECRET) for i in range(TOKENS)]
    (run.run_dir / "pixel.lua").write_text(pixel_script(tokens))
    (run.run_dir / "api.lua").write_text(api_script(int(time.time() * 1000)))
    proc = _start(run, prefix, port)
    result: dict[str, Any] = {"connections": WRK_CONNECTIONS, "threads": THREADS, "seconds": seconds}
    try:
        for kind, route in (("pixel", "/t.gif"), ("api", "/v1/events")):
            _say(f"collector: {kind} at the maximum rate (wrk, {WRK_CONNECTIONS} connections, {seconds:g} s)")
            top = _wrk(base + route, run.run_dir / f"{kind}.lua", seconds)
            rate = top["requests_per_s"] * 0.5
            _say(f"collector: {kind} {top['requests_per_s']:,.0f} requests/s; paced at {rate:,.0f}/s")
            paced = asyncio.run(_paced(base, kind, rate, seconds, tokens))
            result[kind] = {"max": top, "at_half": paced}
        from streams.kafka_clients import client_options
        from streams.settings import settings_from_env

        client = client_options(settings_from_env({**run.security, "LEADSCORE_BOOTSTRAP": run.bootstrap}))
        for kind, topic in (("pixel", "web-visits"), ("api", "content-downloads")):
            accepted = _accepted(base, kind)
            on_kafka = asyncio.run(end_offsets_sum(client, prefix + topic, 8))
            result[kind] |= {"accepted": int(accepted), "on_kafka": on_kafka, "lost": int(accepted) - on_kafka}
            _say(f"collector: {kind}: {int(accepted):,} accepted, {on_kafka:,} on {topic}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    ctx.report["collector"] = result


def markdown_lines(report: dict[str, Any]) -> list[str]:
    """The collector's table for the bench's Markdown (empty when the part did not run)."""
    part = report.get("collector")
    if not part or "pixel" not in part or "api" not in part:
        return []
    lines = [
        "",
        "| collector (one process) | max requests/s | p99 ms at max | at 50%: requests/s | p50 ms | p99 ms "
        "| accepted | on Kafka | lost |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for kind, name in (("pixel", "pixel GET /t.gif"), ("api", "API POST /v1/events")):
        top, half = part[kind]["max"], part[kind]["at_half"]
        lines.append(
            f"| {name} | {top['requests_per_s']:,.0f} | {top.get('p99_ms', 'n/a')} | {half['achieved_rate']:,.0f} "
            f"| {half['p50_ms']} | {half['p99_ms']} | {part[kind]['accepted']:,} | {part[kind]['on_kafka']:,} "
            f"| {part[kind]['lost']:,} |"
        )
    return lines
