"""Benchmark processes: a worker subprocess, and what is measured of a process from ``/proc``.

CPU is a process's ``utime + stime`` from ``/proc/<pid>/stat`` and peak RSS its ``VmHWM`` from
``/proc/<pid>/status``, read the same way for the worker (by the benchmark) and for the baseline
(by itself).
"""

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from streams.demo import http_get, metric_total
from streams.settings import PREFIX

CONSUMED = "leadscore_events_consumed_total"
REBALANCES = "leadscore_rebalances_total"
STEP_CPU = "leadscore_step_cpu_seconds_total"
POLL_S = 0.2


class BenchError(Exception):
    """A benchmark part cannot go on; the message says why and where to look."""


def _stat_fields(pid: int | str) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name (the first is the state)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int | str = "self") -> float:
    """A process's user + system CPU time so far, from ``/proc/<pid>/stat``."""
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


THREAD_GROUPS = ("main", "rocksdb", "other")


def thread_cpu_seconds(pid: int | str) -> tuple[float, float, float]:
    """A process's CPU time so far by thread group (:data:`THREAD_GROUPS`): its main thread (the
    event loop), RocksDB's background threads (named ``rocksdb:*``), and every other thread (a
    worker's Kafka consumer thread among them); threads that ended are in none of them."""
    groups = [0.0, 0.0, 0.0]
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            comm = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            cpu = cpu_seconds(f"{pid}/task/{tid}")
        except FileNotFoundError:  # the thread ended between the listing and the read: in no group
            continue
        groups[0 if tid == str(pid) else 1 if comm.startswith("rocksdb") else 2] += cpu
    return groups[0], groups[1], groups[2]


def faults_and_system_cpu(pid: int | str = "self") -> tuple[int, float]:
    """A process's minor page faults and system CPU seconds so far, from ``/proc/<pid>/stat``."""
    fields = _stat_fields(pid)
    return int(fields[7]), int(fields[12]) / os.sysconf("SC_CLK_TCK")


def peak_rss_bytes(pid: int | str = "self") -> int:
    """A process's peak resident set size (``VmHWM``), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SOURCE_ROOT = Path(__file__).resolve().parent.parent
SOURCE_DIRS = ("agents", "scoring", "streams")


def source_digest(root: Path = SOURCE_ROOT) -> str:
    """A short hash of the service's source (``agents/``, ``scoring/``, ``streams/`` but the benchmark's
    own modules): which code a worker started from, when the working tree changes during a run."""
    digest = hashlib.sha256()
    for folder in SOURCE_DIRS:
        for path in sorted((root / folder).glob("*")):
            if path.suffix in (".py", ".toml") and not path.name.startswith("bench"):
                digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def clean_env(base: Mapping[str, str], settings: Mapping[str, str]) -> dict[str, str]:
    """``base`` without any ``LEADSCORE_*`` variable, plus ``settings``: a run's workers see only
    the benchmark's settings and the service's defaults."""
    env = {k: v for k, v in base.items() if not k.startswith(PREFIX)}
    env.update(settings)
    return env


@dataclass
class Worker:
    """One ``python -m streams worker`` subprocess."""

    name: str
    settings: dict[str, str]
    log_path: Path
    web_port: int = field(default_factory=free_port)
    proc: "subprocess.Popen[bytes] | None" = None
    started_at: float = 0.0  # monotonic
    started_wall: float = 0.0  # epoch seconds, to place the worker's log lines
    source: str = ""  # source_digest() when it started

    @property
    def url(self) -> str:
        """The worker's web address."""
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def pid(self) -> int:
        """The process id (the worker must have been started)."""
        if self.proc is None:
            raise BenchError(f"worker {self.name} was not started")
        return self.proc.pid

    def start(self) -> "Worker":
        """Start the process, its output appended to its log."""
        settings = {**self.settings, f"{PREFIX}WEB_HOST": "127.0.0.1", f"{PREFIX}WEB_PORT": str(self.web_port)}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        data_dir = self.settings.get(f"{PREFIX}DATA_DIR")
        if data_dir:  # Faust creates the data dir itself, but not its parents
            Path(data_dir).parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streams", "worker"],
                env=clean_env(os.environ, settings),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started_at, self.started_wall = time.monotonic(), time.time()
        self.source = source_digest()
        return self

    def check_alive(self) -> None:
        """Raise if the process exited."""
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-3000:]
            raise BenchError(f"worker {self.name} exited with {self.proc.returncode}; log {self.log_path}:\n{tail}")

    def ready(self) -> bool:
        """Whether ``/readyz`` answers 200."""
        return http_get(f"{self.url}/readyz")[0] == 200

    def wait_ready(self, timeout_s: float, interval_s: float = POLL_S) -> float:
        """Wait until ready; return the seconds since the process started."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if self.ready():
                return time.monotonic() - self.started_at
            time.sleep(interval_s)
        raise BenchError(f"worker {self.name} not ready within {timeout_s:g} s; log {self.log_path}")

    def metric(self, name: str) -> float | None:
        """One metric of ``/metrics`` summed over its labels; ``None`` if it does not answer."""
        return self.metrics(name).get(name)

    def metrics(self, *names: str) -> dict[str, float]:
        """Metrics of ``/metrics``, each summed over its labels, in one request for only these (cheap
        to render; 0.0 for a metric absent, an empty dict if the worker does not answer)."""
        status, body = http_get(f"{self.url}/metrics?" + "&".join(f"name[]={name}" for name in names))
        if status != 200:
            return {}
        text = body.decode(errors="replace")
        return {name: metric_total(text, name) or 0.0 for name in names}

    def metric_by_label(self, name: str, label: str) -> dict[str, float]:
        """One metric of ``/metrics`` per value of ``label`` (empty if it does not answer)."""
        status, body = http_get(f"{self.url}/metrics?name[]={name}")
        if status != 200:
            return {}
        found: dict[str, float] = {}
        pattern = re.compile(rf'{re.escape(label)}="([^"]*)"')
        for line in body.decode(errors="replace").splitlines():
            match = pattern.search(line) if line.startswith(name + "{") else None
            if match:
                found[match[1]] = found.get(match[1], 0.0) + float(line.rsplit(" ", 1)[1])
        return found

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> None:
        """Signal the process and wait; SIGKILL it if it does not stop in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def stop_all(workers: Sequence[Worker], sig: int = signal.SIGTERM) -> None:
    """Signal every worker at once, then wait for each."""
    for worker in workers:
        if worker.proc is not None and worker.proc.poll() is None:
            worker.proc.send_signal(sig)
    for worker in workers:
        worker.stop(signal.SIGKILL if sig == signal.SIGKILL else sig)


@dataclass(frozen=True)
class Sample:
    """One poll: monotonic time, events consumed so far and CPU seconds so far (all processes)."""

    t: float
    events: float
    cpu_s: float
    busy_s: float = 0.0  # the workers' leadscore_step_cpu_seconds_total: > 0 once a batch was begun
    answered: bool = True  # every worker answered on /metrics
    threads_cpu_s: tuple[float, float, float] = (0.0, 0.0, 0.0)  # by THREAD_GROUPS, all processes


@dataclass(frozen=True)
class Throughput:
    """Events per second and CPU per event between two samples."""

    events: int
    seconds: float
    events_per_s: float
    cpu_s: float
    cpu_us_per_event: float
    threads_cpu_s: tuple[float, float, float] = (0.0, 0.0, 0.0)  # by THREAD_GROUPS

    def to_json(self) -> dict[str, Any]:
        """The numbers, rounded for the report (the CPU by thread only where threads were read)."""
        threads = {group: round(cpu, 3) for group, cpu in zip(THREAD_GROUPS, self.threads_cpu_s, strict=True)}
        return {
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "events_per_s": round(self.events_per_s, 1),
            "cpu_s": round(self.cpu_s, 3),
            "cpu_us_per_event": round(self.cpu_us_per_event, 2),
            **({"cpu_s_by_thread": threads} if any(self.threads_cpu_s) else {}),
        }


def throughput(first: Sample, last: Sample) -> Throughput:
    """Events and CPU after the first sample, over the time between the two."""
    events = last.events - first.events
    seconds = max(last.t - first.t, 1e-9)
    cpu = last.cpu_s - first.cpu_s
    a, b = first.threads_cpu_s, last.threads_cpu_s
    by_thread = (b[0] - a[0], b[1] - a[1], b[2] - a[2])
    return Throughput(int(last.events), seconds, events / seconds, cpu, cpu / max(events, 1) * 1e6, by_thread)


def sample(workers: Sequence[Worker]) -> Sample:
    """Events consumed and the CPU of the batch steps (summed over the workers' ``/metrics``), and
    the workers' process CPU, now."""
    readings = [w.metrics(CONSUMED, STEP_CPU) for w in workers]
    threads = [thread_cpu_seconds(w.pid) for w in workers]
    return Sample(
        time.monotonic(),
        sum(r.get(CONSUMED, 0.0) for r in readings),
        sum(cpu_seconds(w.pid) for w in workers),
        sum(r.get(STEP_CPU, 0.0) for r in readings),
        all(readings),
        (sum(t[0] for t in threads), sum(t[1] for t in threads), sum(t[2] for t in threads)),
    )


def measure_catch_up(
    workers: Sequence[Worker],
    total: int,
    timeout_s: float,
    on_first: Callable[[], None] | None = None,
    start: Sample | None = None,
) -> Throughput:
    """Poll the workers every 0.2 s until their ``leadscore_events_consumed_total`` (summed, counted
    once a batch is written) reaches ``total``; measure from ``start``, else from the last poll
    before any batch was begun (``leadscore_step_cpu_seconds_total`` still 0), so that the window
    holds all the work on the events and little else (from the first poll that finds one begun if
    none answered before). ``on_first`` is called at the first poll that finds a batch begun."""
    deadline = time.monotonic() + timeout_s
    first = start
    begun = False
    while True:
        began = time.monotonic()
        now = sample(workers)
        if not begun and now.busy_s > 0:
            begun = True
            if first is None:  # no idle poll answered before the work began: from this one
                first = now
            if on_first is not None:
                on_first()
        elif not begun and start is None and now.answered:
            first = now
        if first is not None and now.events >= total:
            return throughput(first, now)
        for worker in workers:
            worker.check_alive()
        if began > deadline:
            raise BenchError(f"workers consumed {now.events:.0f} of {total} events within {timeout_s:g} s")
        time.sleep(max(POLL_S - (time.monotonic() - began), 0.0))


def wait_stable(workers: Sequence[Worker], timeout_s: float, quiet_s: float = 3.0) -> float:
    """Wait until every worker is ready and no rebalance happened for ``quiet_s``; return the seconds
    since the first one started."""
    began = min(w.started_at for w in workers)
    deadline = time.monotonic() + timeout_s
    last: list[float] | None = None
    changed = time.monotonic()
    while time.monotonic() < deadline:
        for worker in workers:
            worker.check_alive()
        counts = [w.metric(REBALANCES) or 0.0 for w in workers]
        if counts != last:
            last, changed = counts, time.monotonic()
        ready = all(w.ready() for w in workers)
        if ready and min(counts) >= 1 and time.monotonic() - changed >= quiet_s:
            return time.monotonic() - began
        time.sleep(0.5)
    raise BenchError(f"{len(workers)} workers did not settle into one group within {timeout_s:g} s")


# The worker's log lines that mark the steps of a start (JSON lines, see streams/logs.py).
LOG_MARKS = {
    "assigned": "Executing _on_partitions_assigned",
    "changelog_restored": "Restore complete!",
    "due_index_rebuilt": "lead table recovered",
}


def log_marks(log_text: str, after_epoch_s: float) -> dict[str, float]:
    """Epoch seconds of the first line of each of :data:`LOG_MARKS` logged after ``after_epoch_s``."""
    found: dict[str, float] = {}
    for line in log_text.splitlines():
        try:
            entry = orjson.loads(line)
            at = datetime.fromisoformat(str(entry["ts"]).replace("Z", "+00:00")).timestamp()
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        if at < after_epoch_s:
            continue
        message = str(entry.get("message", ""))
        for name, mark in LOG_MARKS.items():
            if name not in found and mark in message:
                found[name] = at
    return found
