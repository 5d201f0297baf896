"""``leadscore demo``: a broker if none answers, a worker, live synthetic traffic, and the MQL and
nurture events printed as they happen.

Every run uses its own topic prefix and app id (``demo-<epoch seconds>``), so it starts from
clean topics and an empty lead table; the worker's log and data live in ``var/demo-<epoch>/``.
Only lead ids are printed, never profile data.
"""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from streams.clock import Clock
from streams.demo_traffic import produce_traffic
from streams.kafka_clients import client_options
from streams.local_kafka import LocalKafka, LocalKafkaConfig, LocalKafkaError, port_in_use, tail
from streams.settings import PREFIX, Settings, SettingsError, settings_from_env
from streams.synthetic import DAY_MS, TimedEvent

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
PREFERRED_WEB_PORT = 6066
READY_TIMEOUT_S = 90.0
SUMMARY_INTERVAL_S = 15.0
WORKER_STOP_TIMEOUT_S = 30.0
TICK_INTERVAL_S = 0.5
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class DemoError(Exception):
    """The demo cannot go on; the message says why and where to look."""


def _say(text: str) -> None:
    """Print one line prefixed with the wall-clock time."""
    print(f"{time.strftime('%H:%M:%S')}  {text}", flush=True)


# -- the broker ------------------------------------------------------------------------------------


def _split_server(server: str) -> tuple[str, int]:
    host, _, port = server.strip().rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise DemoError(f"LEADSCORE_BOOTSTRAP: {server!r} is not host:port") from None


def broker_answers(bootstrap: str, timeout_s: float = 1.0) -> bool:
    """Whether any of the bootstrap servers accepts a TCP connection."""
    for server in bootstrap.split(","):
        try:
            with socket.create_connection(_split_server(server), timeout_s):
                return True
        except OSError:
            continue
    return False


def ensure_broker(bootstrap: str) -> LocalKafka | None:
    """Start the local broker if nothing answers on ``bootstrap``; return it if this call started it."""
    if broker_answers(bootstrap):
        return None
    host, port = _split_server(bootstrap.split(",")[0])
    if host not in LOCAL_HOSTS:
        raise DemoError(f"no Kafka broker answers on {bootstrap}, and it is not a local address to start one on")
    print(f"No Kafka broker answers on {bootstrap}; starting a local one (the first start downloads its jars).")
    try:
        kafka = LocalKafka(LocalKafkaConfig(port=port))
        result = kafka.start()
    except LocalKafkaError as exc:
        raise DemoError(str(exc)) from None
    print(result.describe(), flush=True)
    return None if result.already_running else kafka


# -- the plan and the worker --------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoPlan:
    """Names, directories and settings of one demo run, shared by the worker and the demo."""

    stamp: int
    run_dir: Path
    env: dict[str, str]
    settings: Settings

    @property
    def log_file(self) -> Path:
        """The worker's log."""
        return self.run_dir / "worker.log"

    @property
    def web_url(self) -> str:
        """The worker's web address."""
        return f"http://{self.settings.web_host}:{self.settings.web_port}"


def free_port(preferred: int, host: str = "127.0.0.1") -> int:
    """``preferred`` if nothing listens there, else a free port chosen by the system."""
    if not port_in_use(host, preferred):
        return preferred
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def plan_demo(speed: float, bootstrap: str, base_env: Mapping[str, str], var_dir: Path = Path("var")) -> DemoPlan:
    """Choose the run's topic prefix, app id, clock, data directory and web port."""
    stamp = int(time.time())
    while (var_dir / f"demo-{stamp}").exists():
        stamp += 1
    run_dir = (var_dir / f"demo-{stamp}").resolve()
    env = dict(base_env)
    env.update(
        {
            f"{PREFIX}BOOTSTRAP": bootstrap,
            f"{PREFIX}TOPIC_PREFIX": f"demo-{stamp}.",
            f"{PREFIX}APP_ID": f"leadscore-demo-{stamp}",
            f"{PREFIX}CLOCK_SPEED": repr(float(speed)),
            f"{PREFIX}CLOCK_EPOCH_MS": str(int(time.time() * 1000)),
            f"{PREFIX}TICK_INTERVAL": str(TICK_INTERVAL_S),
            f"{PREFIX}STORE": "rocksdb://",
            f"{PREFIX}DATA_DIR": str(run_dir / "data"),
            f"{PREFIX}WEB_HOST": "127.0.0.1",
            f"{PREFIX}WEB_PORT": str(free_port(PREFERRED_WEB_PORT)),
        }
    )
    try:
        settings = settings_from_env(env)
    except SettingsError as exc:
        raise DemoError(str(exc)) from None
    return DemoPlan(stamp=stamp, run_dir=run_dir, env=env, settings=settings)


def start_worker(plan: DemoPlan) -> "subprocess.Popen[bytes]":
    """Start ``python -m streams worker`` with the plan's environment, its output to the log."""
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    with plan.log_file.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "streams", "worker"],
            env=plan.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the demo only; the demo stops the worker in order
        )


def stop_worker(proc: "subprocess.Popen[bytes]", timeout_s: float = WORKER_STOP_TIMEOUT_S) -> int:
    """SIGTERM the worker, wait, then SIGKILL it; return its exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def _worker_failed(proc: "subprocess.Popen[bytes]", plan: DemoPlan, when: str) -> DemoError:
    return DemoError(
        f"the worker exited with code {proc.returncode} {when}; its log is {plan.log_file}. "
        f"Last lines:\n{tail(plan.log_file)}"
    )


def http_get(url: str, timeout_s: float = 2.0) -> tuple[int | None, bytes]:
    """(status, body) of a GET to our own worker; status ``None`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (our own worker's URL)
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, b""
    except (urllib.error.URLError, OSError):
        return None, b""


async def wait_ready(proc: "subprocess.Popen[bytes]", plan: DemoPlan, stop: asyncio.Event, timeout_s: float) -> bool:
    """Wait until the worker's ``/readyz`` answers 200; ``False`` if the demo was stopped first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not stop.is_set():
        if proc.poll() is not None:
            raise _worker_failed(proc, plan, "before it was ready")
        status, _ = await asyncio.to_thread(http_get, f"{plan.web_url}/readyz")
        if status == 200:
            return True
        if loop.time() > deadline:
            raise DemoError(
                f"the worker did not answer 200 on {plan.web_url}/readyz within {timeout_s:g} s; "
                f"see its log {plan.log_file}"
            )
        await _sleep_or_stop(stop, 0.5)
    return False


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


# -- what the demo shows ---------------------------------------------------------------------------------


@dataclass
class Stats:
    """What the demo counted."""

    leads: int = 0
    events: int = 0
    mql: int = 0
    nurture: int = 0
    dead_letters: int | None = None

    def on_event(self, event: TimedEvent) -> None:
        """Count an event handed to the producer (a journey's first event starts a lead)."""
        self.events += 1
        if event.payload["event_id"] == f"{event.lead_id}-0":
            self.leads += 1

    def line(self, clock: Clock) -> str:
        """A one-line summary."""
        dead = "?" if self.dead_letters is None else str(self.dead_letters)
        return (
            f"leads {self.leads}  events sent {self.events}  MQLs {self.mql}  nurtures {self.nurture}  "
            f"dead letters {dead}  (simulated {_date(clock.now_ms())})"
        )


def _date(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def format_mql(payload: Mapping[str, Any]) -> str:
    """An MQL event as one line: the score, its split, and the top engagement rules."""
    rows = [row for row in payload.get("breakdown", []) if row.get("kind") == "engagement"]
    top = sorted(rows, key=lambda row: -float(row["points"]))[:3]
    reasons = ", ".join(f"{row['rule']} {float(row['points']):.1f}" for row in top)
    crossing = int(payload.get("crossing", 1))
    label = "MQL" if crossing == 1 else f"MQL#{crossing}"
    return (
        f"{label:<8} {payload['lead_id']}  score {float(payload['score']):.2f} = fit "
        f"{float(payload['fit_score']):.2f} + engagement {float(payload['engagement_score']):.2f}   {reasons}"
    )


def format_nurture(payload: Mapping[str, Any], mql_date: str | None) -> str:
    """A return to nurture as one line."""
    after = f" after the MQL of {mql_date}" if mql_date else ""
    return (
        f"{'NURTURE':<8} {payload['lead_id']}  score {float(payload['score']):.2f} < "
        f"{float(payload['threshold']):g} ({payload['reason']}){after}"
    )


def metric_total(text: str, name: str) -> float | None:
    """The sum over all label sets of one metric in Prometheus text; ``None`` if absent."""
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and line[len(name) : len(name) + 1] in ("{", " ")
    ]
    return sum(values) if values else None


async def _refresh_dead_letters(stats: Stats, plan: DemoPlan) -> None:
    status, body = await asyncio.to_thread(http_get, f"{plan.web_url}/metrics")
    if status == 200:
        total = metric_total(body.decode(errors="replace"), "leadscore_dead_letters_total")
        stats.dead_letters = int(total or 0)


async def watch_outputs(settings: Settings, stats: Stats) -> None:
    """Print one line per MQL and nurture event the worker sends."""
    topics = settings.topics
    consumer = AIOKafkaConsumer(
        topics.mql_handoff,
        topics.lead_nurture,
        **client_options(settings),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    mql_dates: dict[str, str] = {}
    try:
        async for message in consumer:
            payload = orjson.loads(message.value)
            lead_id = str(payload["lead_id"])
            if message.topic == topics.mql_handoff:
                stats.mql += 1
                mql_dates[lead_id] = str(payload["crossed_at"])[:10]
                _say(format_mql(payload))
            else:
                stats.nurture += 1
                _say(format_nurture(payload, mql_dates.pop(lead_id, None)))
    finally:
        await consumer.stop()


async def report_periodically(stats: Stats, plan: DemoPlan, clock: Clock) -> None:
    """Print a summary line every ``SUMMARY_INTERVAL_S`` seconds."""
    while True:
        await asyncio.sleep(SUMMARY_INTERVAL_S)
        await _refresh_dead_letters(stats, plan)
        _say(f"{'SUMMARY':<8} {stats.line(clock)}")


async def watch_worker(proc: "subprocess.Popen[bytes]", plan: DemoPlan) -> None:
    """Raise as soon as the worker exits."""
    while proc.poll() is None:  # noqa: ASYNC110 (a child process has no event to await)
        await asyncio.sleep(1.0)
    raise _worker_failed(proc, plan, "during the demo")


# -- the run ------------------------------------------------------------------------------------------


def _print_plan(plan: DemoPlan, leads_per_minute: int) -> None:
    settings = plan.settings
    day_s = DAY_MS / 1000 / settings.clock_speed
    print(f"Demo run demo-{plan.stamp}: topics {settings.topic_prefix}*, app id {settings.app_id}")
    print(
        f"Clock {settings.clock_speed:g}x: a simulated day passes in {day_s:.1f} s, 30 days (the default "
        f"half-life) in {30 * day_s:.0f} s; {leads_per_minute} new leads per real minute"
    )
    print(f"Worker log: {plan.log_file}")
    print(f"Worker web port {settings.web_port}: {plan.web_url}/metrics")
    print(f"Explain a lead from another shell: leadscore explain <lead> --url {plan.web_url}", flush=True)


async def _run_tasks(
    plan: DemoPlan,
    proc: "subprocess.Popen[bytes]",
    stats: Stats,
    leads_per_minute: int,
    duration_s: float,
    stop: asyncio.Event,
) -> None:
    settings = plan.settings
    clock = Clock(settings.clock_speed, settings.clock_epoch_ms)
    tasks = [
        asyncio.create_task(produce_traffic(settings, leads_per_minute, 0, None, stats.on_event)),
        asyncio.create_task(watch_outputs(settings, stats)),
        asyncio.create_task(report_periodically(stats, plan, clock)),
        asyncio.create_task(watch_worker(proc, plan)),
    ]
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stopper], timeout=duration_s or None, return_when="FIRST_COMPLETED")
    finally:
        for task in [*tasks, stopper]:
            task.cancel()
        await asyncio.gather(*tasks, stopper, return_exceptions=True)
    for task in tasks:
        if task in done and not task.cancelled() and task.exception() is not None:
            error = task.exception()
            raise error if isinstance(error, DemoError) else DemoError(f"{type(error).__name__}: {error}")
    await _refresh_dead_letters(stats, plan)


async def _live(
    plan: DemoPlan, proc: "subprocess.Popen[bytes]", stats: Stats, leads_per_minute: int, duration_s: float
) -> None:
    """Wait for the worker, then run traffic, the output watcher and the summaries until stopped."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        began = time.monotonic()
        print("Waiting for the worker to be ready...", flush=True)
        if not await wait_ready(proc, plan, stop, READY_TIMEOUT_S):
            return
        how_long = f"for {duration_s:g} s" if duration_s else "until Ctrl-C"
        _say(f"Worker ready after {time.monotonic() - began:.1f} s; sending traffic {how_long}")
        await _run_tasks(plan, proc, stats, leads_per_minute, duration_s, stop)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def run_demo(leads_per_minute: int, speed: float, duration_s: float) -> int:
    """Run the demo; return 0 on success, 1 on failure (with a message on stderr)."""
    broker: LocalKafka | None = None
    proc: subprocess.Popen[bytes] | None = None
    stats = Stats()
    plan: DemoPlan | None = None
    page = None
    code = 0
    try:
        if leads_per_minute <= 0:
            raise DemoError("--leads-per-minute must be positive")
        bootstrap = os.environ.get(f"{PREFIX}BOOTSTRAP", DEFAULT_BOOTSTRAP)
        broker = ensure_broker(bootstrap)
        plan = plan_demo(speed, bootstrap, os.environ)
        from streams.demo_collector import DemoPage

        page = DemoPage(plan)  # a collector and a page with its pixel, showing a lead's live score
        _print_plan(plan, leads_per_minute)
        proc = start_worker(plan)
        page.start()
        page.announce()
        asyncio.run(_live(plan, proc, stats, leads_per_minute, duration_s))
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr, flush=True)
        code = 1
    except KeyboardInterrupt:
        print("Interrupted.", flush=True)
    finally:
        if page is not None:
            page.stop()
        code = max(code, _shut_down(proc, plan, broker, stats, failed=code != 0))
    return code


def _shut_down(
    proc: "subprocess.Popen[bytes] | None",
    plan: DemoPlan | None,
    broker: LocalKafka | None,
    stats: Stats,
    failed: bool,
) -> int:
    """Stop the worker and the broker this demo started; print the final summary."""
    code = 0
    if proc is not None and plan is not None:
        _say("Stopping the worker...")
        try:
            exit_code = stop_worker(proc)
        except KeyboardInterrupt:  # a second Ctrl-C: do not wait for a graceful stop
            proc.kill()
            exit_code = proc.wait()
        if exit_code not in (0, -signal.SIGTERM) and not failed:
            print(f"the worker exited with code {exit_code}; see {plan.log_file}", file=sys.stderr, flush=True)
        clock = Clock(plan.settings.clock_speed, plan.settings.clock_epoch_ms)
        _say(f"{'FINAL':<8} {stats.line(clock)}")
    if broker is not None:
        try:
            broker.stop()
            print(f"Stopped the local Kafka broker on {broker.config.address} that the demo started.", flush=True)
        except LocalKafkaError as exc:
            print(f"could not stop the local Kafka broker: {exc}", file=sys.stderr, flush=True)
            code = 1
    return code
