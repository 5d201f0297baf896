"""``leadscore bench``: the service's throughput, CPU, latency, recovery, decay and scaling, on the
local broker, against a raw aiokafka loop, in one go.

Parts (each can be skipped with ``--skip``):

- ``baseline``: the raw aiokafka loop (``streams.bench_baseline``) as its own process, on the input;
- ``leadscore``: ``python -m streams worker`` with its production settings, started after the input
  was produced (catch-up throughput), its CPU, peak RSS and changelog messages per event;
- ``latency``: event -> MQL latency under a paced producer at 25/50/75% of the worker's rate (on
  the same worker, after it caught up; needs ``leadscore``);
- ``scaling``: 1, 2 and 4 workers of a new consumer group on the same input;
- ``core``: the scoring core alone on the same input, in-process, without Kafka: the CPU per event
  of scoring and of encoding the changed states, and the states' size (``streams.bench_core``),
  and of reading the records from Kafka-format record batches: with the worker's and the baseline's
  parts, the floor of one worker process (``streams.bench_floor``);
- ``recovery``: a table of ``--recovery-leads`` leads built from one profile event each, the worker
  SIGKILLed and restarted with its data dir (time to ready, split into the group's wait for the dead
  member's session and the restore), then stopped cleanly and started on a fresh data dir (a full
  changelog restore);
- ``decay``: a decay tick over ``--recovery-leads`` leads, 1% due: due index against full scan;
- ``collector``: one ``leadscore collect`` process, pixel and API requests/s (``wrk``), p99 at 50%
  of each maximum, every accepted event found on Kafka (``streams.bench_collector``).

Every run has its own topic prefix and app ids (``bench-<stamp>``); its topics are deleted at the
end, worker logs stay in ``var/bench-<stamp>/``. Results: ``<out>/latest.json``, ``latest.md``,
``latest.png`` and a copy of each named after the run.
"""

import asyncio
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from streams.kafka_clients import client_options, security_variables

if TYPE_CHECKING:
    from streams.bench_proc import Throughput

PARTS = ("baseline", "leadscore", "latency", "scaling", "core", "recovery", "decay", "collector")
LATENCY_FRACTIONS = (0.25, 0.5, 0.75)
SCALING_WORKERS = (1, 2, 4)
OUTPUT_TOPICS = ("mql_handoff", "lead_nurture", "dead_letters", "ticks")  # per group when input is shared
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
CHANGELOG_SETTLE_S = 1.0
COMMIT_WAIT_S = 4.0  # Faust commits every 2.8 s by default
READY_TIMEOUT_S = 900.0
PROFILE_S = 15.0
LATENCY_PAUSE_S = 3.0
MIN_FREE_DISK = 5 * 2**30


def _say(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')}  {text}", flush=True)


def parse_skip(text: str) -> frozenset[str]:
    """The parts named in a comma list; raises ``ValueError`` for an unknown one."""
    names = frozenset(part.strip() for part in text.split(",") if part.strip())
    unknown = sorted(names - set(PARTS))
    if unknown:
        raise ValueError(f"unknown part(s) {', '.join(unknown)}; parts are {', '.join(PARTS)}")
    return names


@dataclass(frozen=True)
class BenchOptions:
    """What to run, and how big."""

    leads: int = 100_000
    events: int = 1_000_000
    recovery_leads: int = 1_000_000
    latency_seconds: float = 15.0
    skip: frozenset[str] = frozenset()
    # The rate the paced levels are fractions of (0: the worker's measured catch-up events/s).
    latency_rate: float = 0.0
    out: Path = Path("bench/results")
    seed: int = 1
    profile: bool = False
    bootstrap: str = DEFAULT_BOOTSTRAP
    security: Mapping[str, str] = field(default_factory=dict, repr=False)  # not in to_json: may hold a password

    def runs(self, part: str) -> bool:
        """Whether a part runs (latency also needs the leadscore run)."""
        if part == "latency" and "leadscore" in self.skip:
            return False
        return part not in self.skip

    def to_json(self) -> dict[str, Any]:
        """As a JSON object."""
        return {
            "leads": self.leads,
            "events": self.events,
            "recovery_leads": self.recovery_leads,
            "latency_seconds": self.latency_seconds,
            "latency_rate": self.latency_rate,
            "skip": sorted(self.skip),
            "out": str(self.out),
            "seed": self.seed,
            "profile": self.profile,
            "bootstrap": self.bootstrap,
            "partitions": 8,
            "latency_fractions": list(LATENCY_FRACTIONS),
            "scaling_workers": list(SCALING_WORKERS),
        }


@dataclass
class Run:
    """One benchmark run's names and directories."""

    stamp: str
    bootstrap: str
    run_dir: Path
    errors: dict[str, str] = field(default_factory=dict)
    security: dict[str, str] = field(default_factory=dict, repr=False)  # LEADSCORE_SECURITY_PROTOCOL, ...

    @property
    def name(self) -> str:
        """Every topic and app id of the run starts with this."""
        return f"bench-{self.stamp}"

    def env(self, app: str, topic_prefix: str = "", outputs: str = "", data: str | None = None) -> dict[str, str]:
        """A worker's ``LEADSCORE_*`` settings: production defaults, the run's names, 8 partitions.
        ``outputs`` suffixes the output and tick topics (a group of its own on shared input)."""
        env = {
            **self.security,
            "LEADSCORE_BOOTSTRAP": self.bootstrap,
            "LEADSCORE_TOPIC_PREFIX": topic_prefix or f"{self.name}.",
            "LEADSCORE_APP_ID": f"{self.name}-{app}",
            "LEADSCORE_PARTITIONS": "8",
            "LEADSCORE_STORE": "rocksdb://",
            "LEADSCORE_CONSUMPTION": "batch",
            "LEADSCORE_DATA_DIR": str(self.run_dir / "data" / (data or app)),
        }
        if outputs:
            from streams.settings import TopicNames

            defaults = TopicNames()
            for name in OUTPUT_TOPICS:
                env[f"LEADSCORE_TOPIC_{name.upper()}"] = getattr(defaults, name) + outputs
        return env


def settings_of(env: Mapping[str, str]) -> Any:
    """The service settings a worker with these variables would have."""
    from streams.settings import settings_from_env

    return settings_from_env(env)


# -- parts -------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What parts share: the run, the options, the input and the leadscore worker."""

    run: Run
    options: BenchOptions
    report: dict[str, Any]
    total: int = 0
    worker: Any = None
    records: list[Any] = field(default_factory=list)


def _catch_up_timeout(events: int) -> float:
    return max(180.0, events / 2000)


def part_input(ctx: Context) -> None:
    """Generate the realistic catch-up input and produce it before any consumer starts."""
    from streams.bench_input import catch_up_input, produce
    from streams.bench_kafka import create_topic, keep_forever
    from streams.topics import ensure_topics

    settings = settings_of(ctx.run.env("main"))
    began = time.monotonic()
    data = catch_up_input(
        ctx.options.seed, ctx.options.leads, ctx.options.events, int(time.time() * 1000), settings.topics
    )
    generated = time.monotonic() - began
    _say(f"input: {len(data.records):,} events of {data.leads:,} leads generated in {generated:.1f} s; producing")
    asyncio.run(ensure_topics(settings))
    asyncio.run(keep_forever(client_options(settings), settings.topics.inbound()))
    asyncio.run(create_topic(client_options(settings), f"{ctx.run.name}.baseline-scores", settings.partitions))
    began = time.monotonic()
    count = asyncio.run(produce(client_options(settings), data.records, settings.partitions))
    produced = time.monotonic() - began
    ctx.total = count
    ctx.records = data.records
    ctx.report["input"] = {
        "events": count,
        "leads": data.leads,
        "partitions": settings.partitions,
        "by_topic": {topic.removeprefix(f"{ctx.run.name}."): n for topic, n in sorted(data.by_topic.items())},
        "mean_value_bytes": round(data.mean_value_bytes, 1),
        "generate_s": round(generated, 2),
        "produce_s": round(produced, 2),
        "produce_events_per_s": round(count / produced, 1),
        "mix": "streams.synthetic journeys (the demo generator's personas), all in the past, in occurred_at order",
    }
    _say(f"input: produced in {produced:.1f} s ({count / produced:,.0f}/s)")


def part_baseline(ctx: Context) -> None:
    """The raw aiokafka loop as its own process."""
    import orjson

    from streams.bench_proc import BenchError, Sample, throughput
    from streams.huge_pages import environment_like_worker

    settings = settings_of(ctx.run.env("main"))
    command = [
        sys.executable,
        "-m",
        "streams.bench_baseline",
        "--bootstrap",
        ctx.run.bootstrap,
        "--topics",
        ",".join(settings.topics.inbound()),
        "--output",
        f"{ctx.run.name}.baseline-scores",
        "--total",
        str(ctx.total),
        "--group",
        f"{ctx.run.name}-baseline",
    ]
    _say("baseline: raw aiokafka loop")
    env = environment_like_worker(os.environ, settings)  # the worker's heap: a like-for-like ratio
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=_catch_up_timeout(ctx.total), check=False, env=env
    )
    if done.returncode != 0:
        raise BenchError(f"the baseline exited with {done.returncode}: {done.stderr[-2000:]}")
    raw = orjson.loads(done.stdout.strip().splitlines()[-1])
    first = Sample(raw["first_t"], raw["first_events"], raw["first_cpu_s"])
    last = Sample(raw["last_t"], raw["last_events"], raw["last_cpu_s"])
    result = throughput(first, last).to_json()
    ctx.report["baseline"] = {
        **result,
        "peak_rss_bytes": raw["peak_rss_bytes"],
        "leads": raw["leads"],
        "method": (
            "separate process (python -m streams.bench_baseline): getmany(max_records=5000), orjson, dict of "
            "scores, one output record per touched lead per batch (acks=all, flushed at the end); CPU from its "
            "own /proc/self/stat (utime+stime) at its first batch and after its last, as the worker's is read"
        ),
    }
    _say(f"baseline: {result['events_per_s']:,.0f} events/s, {result['cpu_us_per_event']:.1f} us CPU/event")


def _event_loop(pid: int) -> str:
    try:
        maps = Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return "unknown"
    return "uvloop" if "uvloop" in maps else "asyncio"


def _worker_metrics(worker: Any) -> dict[str, float]:
    names = {
        "mql_events": "leadscore_mql_events_total",
        "nurture_events": "leadscore_nurture_events_total",
        "dead_letters": "leadscore_dead_letters_total",
        "duplicates": "leadscore_duplicate_events_total",
        "ticks": "leadscore_ticks_total",
        "rebalances": "leadscore_rebalances_total",
    }
    return {key: worker.metric(name) or 0.0 for key, name in names.items()}


def cpu_by_step(result: "Throughput", step_cpu: Mapping[str, float]) -> dict[str, float]:
    """The worker's CPU per event in each step of ``leadscore_step_cpu_seconds_total`` (all counted
    within the measured window, which starts before the first batch), and ``rest``: the remainder
    of its process CPU per event (Kafka clients, event loop, Faust). With the threads' CPU of the
    window, the rest split by thread: ``rest_main``, the main thread's CPU outside the steps (the
    steps run on it), and the other threads' and RocksDB's background threads' CPU."""
    from streams.metrics import CPU_STEPS

    if not step_cpu or result.cpu_us_per_event <= 0:
        return {}
    events = result.cpu_s * 1e6 / result.cpu_us_per_event  # the events of the measured window
    steps = {step: step_cpu.get(step, 0.0) * 1e6 / events for step in CPU_STEPS}
    steps["rest"] = result.cpu_us_per_event - sum(steps.values())
    main, rocksdb, other = (cpu * 1e6 / events for cpu in result.threads_cpu_s)
    if main > 0:
        steps |= {"rest_main": main - sum(steps[s] for s in CPU_STEPS), "other_threads": other, "rocksdb": rocksdb}
    return {step: round(us, 2) for step, us in steps.items()}


def part_leadscore(ctx: Context) -> None:
    """The worker, started after the input was produced; it stays up for the latency part."""
    from streams.bench_kafka import end_offsets_sum
    from streams.bench_proc import STEP_CPU, Worker, faults_and_system_cpu, measure_catch_up, peak_rss_bytes

    env = ctx.run.env("main")
    worker = ctx.worker = Worker("main", env, ctx.run.run_dir / "main.log").start()
    _say(f"leadscore: worker pid {worker.pid}, consuming {ctx.total:,} events")
    profiler: list[subprocess.Popen[bytes] | None] = []

    def on_first() -> None:
        if ctx.options.profile:
            from streams.bench_native import start_native_profiler
            from streams.bench_profile import start_profiler

            profiler.append(start_profiler(worker.pid, ctx.run.run_dir / "profile.txt", PROFILE_S))
            profiler.append(start_native_profiler(worker.pid, ctx.run.run_dir / "perf.data", PROFILE_S))

    result = measure_catch_up([worker], ctx.total, _catch_up_timeout(ctx.total), on_first)
    steps = cpu_by_step(result, worker.metric_by_label(STEP_CPU, "step"))
    rss = peak_rss_bytes(worker.pid)
    faults, system_cpu_s = faults_and_system_cpu(worker.pid)
    time.sleep(CHANGELOG_SETTLE_S)  # the last batch's changelog records are awaited after the count
    changelog = asyncio.run(
        end_offsets_sum(client_options(settings_of(env)), f"{env['LEADSCORE_APP_ID']}-leads-changelog", 8)
    )
    base = ctx.report.get("baseline", {}).get("events_per_s")
    ctx.report["leadscore"] = {
        **result.to_json(),
        "ratio_to_baseline": round(result.events_per_s / base, 3) if base else None,
        "peak_rss_bytes": rss,
        "changelog_messages": changelog,
        "changelog_per_event": round(changelog / max(ctx.total, 1), 4),
        "cpu_us_per_event_by_step": steps,
        **_worker_metrics(worker),
        "event_loop": _event_loop(worker.pid),
        # Since the worker started (its start-up is a small part): fresh pages cost a fault each.
        "minor_faults": faults,
        "system_cpu_s": round(system_cpu_s, 2),
        "heap_huge_pages": bool(worker.metric("leadscore_heap_huge_pages")),
        "source_digest": worker.source,
        "worker_settings": env,
        "method": (
            "python -m streams worker as its own process; /metrics leadscore_events_consumed_total (counted "
            "once a batch's outputs and states are written) and leadscore_step_cpu_seconds_total polled every "
            "0.2 s: events and CPU (/proc/<pid>/stat utime+stime) from the last poll before any batch was begun "
            "(step CPU still 0) to the poll that reached the total, over the time between them"
        ),
    }
    _say(
        f"leadscore: {result.events_per_s:,.0f} events/s, {result.cpu_us_per_event:.1f} us CPU/event, "
        f"{changelog / max(ctx.total, 1):.3f} changelog messages/event; {faults:,} page faults and "
        f"{system_cpu_s:.1f} s system CPU since start, heap on huge pages: "
        f"{'yes' if ctx.report['leadscore']['heap_huge_pages'] else 'no'}"
    )
    _finish_profile(ctx, profiler)


def _finish_profile(ctx: Context, profiler: list["subprocess.Popen[bytes] | None"]) -> None:
    if not ctx.options.profile:
        return
    from streams.bench_native import native_summary
    from streams.bench_profile import summarize

    spy, native = [*profiler, None, None][:2]
    if spy is None:
        ctx.report["profile"] = {"error": "py-spy not found (pip install py-spy into the virtualenv)"}
    else:
        spy.wait(PROFILE_S + 60)
        path = ctx.run.run_dir / "profile.txt"
        text = path.read_text() if path.exists() else ""
        ctx.report["profile"] = {"file": str(path), "seconds": PROFILE_S, **summarize(text)}
    if native is None:
        ctx.report["native_profile"] = {"error": "perf not found (the Linux perf tool)"}
    else:
        native.wait(PROFILE_S + 60)
        data = ctx.run.run_dir / "perf.data"
        ctx.report["native_profile"] = {"file": str(data), "seconds": PROFILE_S, **native_summary(data)}


def part_latency(ctx: Context) -> None:
    """Paced phases against the caught-up leadscore worker."""
    from scoring.engine import Scorer
    from scoring.rules import parse_rules
    from streams.bench_latency import measure_latency

    settings = settings_of(ctx.run.env("main"))
    rate = ctx.options.latency_rate or float(ctx.report["leadscore"]["events_per_s"])
    scorer = Scorer(parse_rules(settings.rules_text(), str(settings.rules_file)))
    time.sleep(LATENCY_PAUSE_S)  # let the worker settle after the catch-up (ticks, commits, compaction)
    given = " (given by --latency-rate)" if ctx.options.latency_rate else ""
    _say(f"latency: paced at {', '.join(f'{f:.0%}' for f in LATENCY_FRACTIONS)} of {rate:,.0f} events/s{given}")
    consumed = int(ctx.worker.metric("leadscore_events_consumed_total") or ctx.total)
    result = asyncio.run(
        measure_latency(
            settings, ctx.worker, consumed, rate, LATENCY_FRACTIONS, ctx.options.latency_seconds, scorer, ctx.run.stamp
        )
    )
    ctx.report["latency"] = result
    for level in result["levels"]:
        _say(
            f"latency: {level['fraction']:.0%} ({level['achieved_rate']:,.0f}/s): {level['samples']} samples, "
            f"p50 {level['p50_ms']:.1f} ms, p95 {level['p95_ms']:.1f} ms, p99 {level['p99_ms']:.1f} ms"
        )


def _stop_main(ctx: Context) -> None:
    if ctx.worker is not None:
        if "leadscore" in ctx.report:
            ctx.report["leadscore"]["peak_rss_bytes_after_latency"] = _peak(ctx.worker)
        ctx.worker.stop()
        ctx.worker = None


def _peak(worker: Any) -> int:
    from streams.bench_proc import peak_rss_bytes

    try:
        return peak_rss_bytes(worker.pid)
    except OSError:
        return 0


def _scaling_run(ctx: Context, count: int) -> dict[str, Any]:
    from streams.bench_input import Record, produce
    from streams.bench_kafka import keep_forever
    from streams.bench_proc import REBALANCES, Worker, measure_catch_up, sample, stop_all, wait_stable
    from streams.topics import ensure_topics

    app = f"scale{count}"
    env = ctx.run.env(app, topic_prefix=f"{ctx.run.name}-s{count}.")
    settings = settings_of(env)
    asyncio.run(ensure_topics(settings))  # before the workers, which would race to create them
    asyncio.run(keep_forever(client_options(settings), settings.topics.inbound()))
    workers = [
        Worker(
            f"{app}-{i}",
            {**env, "LEADSCORE_DATA_DIR": str(ctx.run.run_dir / "data" / f"{app}-{i}")},
            ctx.run.run_dir / f"{app}-{i}.log",
        )
        for i in range(count)
    ]
    try:
        for worker in workers:
            worker.start()
        settled = wait_stable(workers, READY_TIMEOUT_S)
        rebalances = [w.metric(REBALANCES) or 0.0 for w in workers]
        inbound = dict(zip(settings_of(ctx.run.env("main")).topics.inbound(), settings.topics.inbound(), strict=True))
        records = (Record(inbound[r.topic], r.key, r.value, r.timestamp_ms) for r in ctx.records)
        produced = time.monotonic()
        asyncio.run(produce(client_options(settings), records, settings.partitions))
        produced = time.monotonic() - produced
        start = sample(workers)
        result = measure_catch_up(
            workers, ctx.total, _catch_up_timeout(ctx.total), start=start if start.events < ctx.total else None
        )
        per_worker = [w.metric("leadscore_events_consumed_total") or 0.0 for w in workers]
        during = [(w.metric(REBALANCES) or 0.0) - before for w, before in zip(workers, rebalances, strict=True)]
        rss = max(_peak(w) for w in workers)
    finally:
        stop_all(workers)
    return {
        "workers": count,
        **result.to_json(),
        "group_settled_s": round(settled, 2),
        "produce_s": round(produced, 2),
        "consumed_while_producing": int(start.events),
        "peak_rss_bytes": rss,
        "per_worker_events": [int(n) for n in per_worker],
        "rebalances_during_run": [int(n) for n in during],
        "source_digest": sorted({w.source for w in workers}),
    }


def part_scaling(ctx: Context) -> None:
    """1, 2 and 4 workers of one group each over 8 partitions: started first, then the same input
    produced to their own topics; measured from the end of production to the last event."""
    runs: list[dict[str, Any]] = []
    for count in SCALING_WORKERS:
        _say(f"scaling: {count} worker(s)")
        run = _scaling_run(ctx, count)
        run["ratio_to_one"] = round(run["events_per_s"] / runs[0]["events_per_s"], 3) if runs else 1.0
        runs.append(run)
        _say(f"scaling: {count} worker(s): {run['events_per_s']:,.0f} events/s, per worker {run['per_worker_events']}")
    cores = os.cpu_count() or 1
    note = f"{cores} cores: the workers share them with the broker and each other"
    if cores < 4:
        note += "; 4 workers cannot run in parallel here, so '4 workers >= 3x one' is not applicable"
    ctx.report["scaling"] = {
        "cores": cores,
        "events": ctx.total,
        "input": "the leadscore run's input, produced again to each run's own topics",
        "runs": runs,
        "note": note,
        "method": (
            "the workers start on empty topics and settle into one group (all ready, no rebalance for 3 s); "
            "the input is then produced; events/s and CPU (all workers) from the end of production (a backlog "
            "remains) to the poll where the summed leadscore_events_consumed_total reaches the total"
        ),
    }


def part_recovery(ctx: Context) -> None:
    """Build a table of N leads, SIGKILL, restart with the data dir, then with a fresh one."""
    from streams.bench_input import produce, profile_records
    from streams.bench_kafka import end_offsets_sum
    from streams.bench_proc import Worker, free_port, measure_catch_up
    from streams.topics import ensure_topics

    leads = ctx.options.recovery_leads
    # Static membership, as the README advises for production: a restarted worker takes its
    # partitions back at once instead of waiting for the dead member's session to expire.
    env = {
        **ctx.run.env("rec", topic_prefix=f"{ctx.run.name}-rec.", data="rec-a"),
        "LEADSCORE_GROUP_INSTANCE_ID": "bench-recovery-0",
    }
    settings = settings_of(env)
    asyncio.run(ensure_topics(settings))
    _say(f"recovery: producing {leads:,} profile events")
    records = profile_records(leads, int(time.time() * 1000), settings.topics.lead_profiles)
    asyncio.run(produce(client_options(settings), records, settings.partitions))
    logs = ctx.run.run_dir
    port = free_port()  # one URL for the one static member: Faust checks it against the kept assignment
    builder = Worker("rec-build", env, logs / "rec-build.log", web_port=port).start()
    try:
        empty_start = builder.wait_ready(READY_TIMEOUT_S)
        built = measure_catch_up([builder], leads, _catch_up_timeout(leads))
        time.sleep(COMMIT_WAIT_S)
    finally:
        builder.stop(signal.SIGKILL)
    changelog = asyncio.run(
        end_offsets_sum(client_options(settings), f"{env['LEADSCORE_APP_ID']}-leads-changelog", settings.partitions)
    )
    _say(f"recovery: {leads:,} leads built at {built.events_per_s:,.0f}/s; {changelog:,} changelog messages; killed")
    same = _restart(Worker("rec-same", env, logs / "rec-same.log", web_port=port), signal.SIGTERM)
    _say(f"recovery: ready after {same['ready_s']:.1f} s with the same data dir")
    fresh_env = {**env, "LEADSCORE_DATA_DIR": str(ctx.run.run_dir / "data" / "rec-b")}
    fresh = _restart(Worker("rec-fresh", fresh_env, logs / "rec-fresh.log", web_port=port), signal.SIGKILL)
    _say(f"recovery: ready after {fresh['ready_s']:.1f} s with a fresh data dir")
    ctx.report["recovery"] = {
        "leads": leads,
        "changelog_messages": changelog,
        "empty_start_s": round(empty_start, 2),
        "build": built.to_json(),
        "same_data_dir": same,
        "fresh_data_dir": fresh,
        "method": (
            "one profile event per lead; the worker builds the table, waits for a commit and is SIGKILLed; a new "
            "worker starts on the same data dir (RocksDB keeps its changelog offsets); it is stopped once ready, "
            "then a worker starts on a fresh data dir: a full changelog restore. Every worker has the same "
            "LEADSCORE_GROUP_INSTANCE_ID (static membership), so a restarted one takes the partitions back at once; "
            "without it, after a SIGKILL the group waits for the dead member's session to expire "
            "(LEADSCORE_SESSION_TIMEOUT, 60 s) before the assignment. ready_s = process start to /readyz 200 "
            "(polled every 0.2 s); from the worker's log: assigned_s = process start to its first partition "
            "assignment, "
            "changelog_restore_s = assignment to Faust's 'Restore complete!', due_index_rebuild_s = from there "
            "to 'lead table recovered' (the scan of every state that rebuilds the due index)"
        ),
    }


def _restart(worker: Any, stop_with: int) -> dict[str, Any]:
    """Start a worker on an existing table; time it to ready, and its steps from its log."""
    from streams.bench_proc import cpu_seconds, log_marks, peak_rss_bytes

    worker.start()
    try:
        ready = worker.wait_ready(READY_TIMEOUT_S)
        cpu, rss = cpu_seconds(worker.pid), peak_rss_bytes(worker.pid)
    finally:
        worker.stop(stop_with)
    marks = log_marks(worker.log_path.read_text(errors="replace"), worker.started_wall - 0.5)

    def between(start: str | None, end: str) -> float | None:
        first = worker.started_wall if start is None else marks.get(start)
        return None if first is None or end not in marks else round(marks[end] - first, 2)

    return {
        "ready_s": round(ready, 2),
        "source_digest": worker.source,
        "assigned_s": between(None, "assigned"),
        "changelog_restore_s": between("assigned", "changelog_restored"),
        "due_index_rebuild_s": between("changelog_restored", "due_index_rebuilt"),
        "cpu_s": round(cpu, 2),
        "peak_rss_bytes": rss,
    }


def part_core(ctx: Context) -> None:
    """The scoring core alone, and reading the records, in-process, on the run's input."""
    from scoring.engine import Scorer
    from scoring.rules import parse_rules
    from streams.bench_core import core_bench, input_kinds, partition_batches, summary_line
    from streams.bench_floor import baseline_own_cost, read_cost

    settings = settings_of(ctx.run.env("main"))
    scorer = Scorer(parse_rules(settings.rules_text(), str(settings.rules_file)))
    kinds = input_kinds(settings.topics)
    batches = partition_batches(ctx.records, kinds, settings.partitions)
    _say(f"core: scoring {sum(len(b) for b in batches):,} events in-process")
    result = core_bench(scorer, batches, int(time.time() * 1000))
    result["read_us_per_event"] = read_cost(batches, kinds)["read_us_per_event"]
    result["baseline_own_us_per_event"] = baseline_own_cost(batches)["baseline_own_us_per_event"]
    ctx.report["core"] = result
    _say(f"core: {summary_line(result)}")


def part_decay(ctx: Context) -> None:
    """The decay tick, in-process."""
    from scoring.engine import Scorer
    from scoring.rules import parse_rules
    from streams.bench_decay import decay_bench

    settings = settings_of(ctx.run.env("main"))
    scorer = Scorer(parse_rules(settings.rules_text(), str(settings.rules_file)))
    _say(f"decay: {ctx.options.recovery_leads:,} leads, 1% due")
    result = decay_bench(scorer, ctx.options.recovery_leads)
    ctx.report["decay"] = result
    _say(
        f"decay: due index {result['due_index']['tick_s'] * 1000:.1f} ms, full scan "
        f"{result['full_scan']['tick_s'] * 1000:.0f} ms for {result['due_index']['due']:,} due"
    )


# -- the run -----------------------------------------------------------------------------------------


def _attempt(ctx: Context, part: str, fn: Callable[[Context], None]) -> bool:
    """Run a part; record its error instead of stopping the whole benchmark."""
    try:
        fn(ctx)
        return True
    except Exception as exc:
        ctx.run.errors[part] = f"{type(exc).__name__}: {exc}"
        _say(f"{part} FAILED: {ctx.run.errors[part]}")
        return False


def _run_parts(ctx: Context) -> None:
    opts = ctx.options
    needs_input = any(opts.runs(p) for p in ("baseline", "leadscore", "scaling", "core"))
    if needs_input and not _attempt(ctx, "input", part_input):
        return
    steps: list[tuple[str, Callable[[Context], None]]] = [
        ("baseline", part_baseline),
        ("leadscore", part_leadscore),
        ("latency", part_latency),
    ]
    try:
        for part, fn in steps:
            if opts.runs(part) and (part != "latency" or "leadscore" in ctx.report):
                _attempt(ctx, part, fn)
    finally:
        _stop_main(ctx)
    if opts.runs("scaling"):
        _attempt(ctx, "scaling", part_scaling)
    if opts.runs("core"):
        _attempt(ctx, "core", part_core)
    ctx.records = []  # the input is no longer needed: free it before the big tables
    for part, fn in (("recovery", part_recovery), ("decay", part_decay)):
        if opts.runs(part):
            _attempt(ctx, part, fn)
    if opts.runs("collector"):
        from streams.bench_collector import part_collector

        _attempt(ctx, "collector", part_collector)


def _clean_up(run: Run) -> None:
    from streams.bench_kafka import delete_topics

    try:
        deleted = asyncio.run(delete_topics(client_options(settings_of(run.env("main"))), run.name))
        _say(f"deleted {len(deleted)} topics {run.name}*")
    except Exception as exc:
        _say(f"could not delete the run's topics: {type(exc).__name__}: {exc}")
    shutil.rmtree(run.run_dir / "data", ignore_errors=True)


def write_results(report: dict[str, Any], out: Path, stamp: str) -> list[Path]:
    """Write JSON, Markdown and PNG as ``latest.*`` and ``bench-<stamp>.*``; return the paths."""
    import orjson

    from streams.bench_report import chart, markdown

    out.mkdir(parents=True, exist_ok=True)
    written = []
    data = orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    text = markdown(report)
    for name in ("latest", f"bench-{stamp}"):
        (out / f"{name}.json").write_bytes(data + b"\n")
        written.append(out / f"{name}.json")
        if name == "latest":
            (out / "latest.md").write_text(text)
            written.append(out / "latest.md")
        if chart(report, out / f"{name}.png"):
            written.append(out / f"{name}.png")
    return written


def source_digests_in(value: Any) -> set[str]:
    """Every ``source_digest`` in the report: more than one means the source changed during the run."""
    if isinstance(value, dict):
        found = set()
        for key, item in value.items():
            if key == "source_digest":
                found |= set(item) if isinstance(item, list) else {str(item)}
            else:
                found |= source_digests_in(item)
        return found
    if isinstance(value, list):
        return set().union(*(source_digests_in(item) for item in value)) if value else set()
    return set()


def _ensure_broker(bootstrap: str) -> Any:
    from streams.bench_proc import BenchError
    from streams.demo import DemoError, ensure_broker

    try:
        return ensure_broker(bootstrap)
    except DemoError as exc:
        raise BenchError(str(exc)) from None


def run_bench(options: BenchOptions) -> tuple[dict[str, Any], list[Path], int]:
    """Run the benchmark; return the report, the files written and an exit code."""
    from streams.bench_report import machine, targets

    logging.getLogger("aiokafka").setLevel(logging.ERROR)  # leader elections of new topics are retried
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run = Run(stamp, options.bootstrap, (Path("var") / f"bench-{stamp}").resolve(), security=dict(options.security))
    run.run_dir.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    report: dict[str, Any] = {"run": run.name, "started_at": stamp, "options": options.to_json(), "machine": machine()}
    if report["machine"]["disk_free_bytes"] < MIN_FREE_DISK:
        _say(f"warning: only {report['machine']['disk_free_bytes'] / 2**30:.1f} GiB free on disk")
    broker = _ensure_broker(options.bootstrap)
    _say(f"run {run.name}: logs in {run.run_dir}")
    ctx = Context(run, options, report)
    try:
        _run_parts(ctx)
    finally:
        _clean_up(run)
        if broker is not None:
            broker.stop()
    report["source_digests"] = sorted(source_digests_in(report))
    report["targets"] = [t.to_json() for t in targets(report)]
    report["errors"] = run.errors
    report["duration_s"] = round(time.monotonic() - began, 1)
    written = write_results(report, options.out, stamp)
    return report, written, 1 if run.errors else 0


@click.command()
@click.option("--leads", default=100_000, show_default=True, help="Leads of the catch-up input.")
@click.option("--events", default=1_000_000, show_default=True, help="Events of the catch-up input.")
@click.option(
    "--recovery-leads", default=1_000_000, show_default=True, help="Leads of the recovery table (and the decay bench)."
)
@click.option("--latency-seconds", default=15.0, show_default=True, help="Seconds of each paced latency phase.")
@click.option(
    "--latency-rate",
    default=0.0,
    help="Events/s the paced latency levels are fractions of (default: the worker's measured maximum); "
    "a fixed rate compares runs at equal load.",
)
@click.option("--skip", default="", help=f"Comma list of parts to skip: {', '.join(PARTS)}.")
@click.option("--out", default="bench/results", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=1, show_default=True, help="Seed of the synthetic input.")
@click.option(
    "--profile",
    is_flag=True,
    help="py-spy (Python frames) and, where installed, perf (native and kernel code) the worker for 15 s "
    "of the catch-up run (slows it down).",
)
def bench_command(
    leads: int,
    events: int,
    recovery_leads: int,
    latency_seconds: float,
    latency_rate: float,
    skip: str,
    out: Path,
    seed: int,
    profile: bool,
) -> None:
    """Benchmark the service against a raw aiokafka loop on the local broker (LEADSCORE_BOOTSTRAP)."""
    from streams.bench_proc import BenchError
    from streams.bench_report import markdown

    try:
        skipped = parse_skip(skip)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--skip") from None
    if min(leads, events, recovery_leads) <= 0 or latency_seconds <= 0 or latency_rate < 0:
        raise click.BadParameter("sizes and --latency-seconds must be positive, --latency-rate not negative")
    bootstrap = os.environ.get("LEADSCORE_BOOTSTRAP", DEFAULT_BOOTSTRAP)
    security = security_variables(os.environ)  # handed to the run's clients and workers, never reported
    options = BenchOptions(
        leads, events, recovery_leads, latency_seconds, skipped, latency_rate, out, seed, profile, bootstrap, security
    )
    try:
        report, written, code = run_bench(options)
    except BenchError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("\n" + markdown(report))
    for path in written:
        click.echo(f"wrote {path}")
    sys.exit(code)
