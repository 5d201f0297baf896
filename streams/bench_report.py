"""The benchmark's report: the machine, the issue's targets, a Markdown table and a PNG chart."""

import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from streams.bench_floor import floor, floor_line

PACKAGES = ("faust-streaming", "aiokafka", "orjson", "rocksdict", "uvloop", "matplotlib")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_bytes() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _git() -> dict[str, Any]:
    """The checked-out commit and how many files differ from it (read-only git commands)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False)
        status = subprocess.run(
            ["git", "status", "--porcelain"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    return {"commit": commit.stdout.strip() or None, "changed_files": len(status.stdout.splitlines())}


def _other_workers() -> int:
    """``streams worker`` processes already running (other users of the machine's cores)."""
    count = 0
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"streams" in args and b"worker" in args:
            count += 1
    return count


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory, disk, Python, package versions and the pinned Kafka version."""
    from streams.huge_pages import libc_name, thp_mode
    from streams.local_kafka import LocalKafkaError, pinned_version

    try:
        kafka: str | None = pinned_version()
    except LocalKafkaError:
        kafka = None
    return {
        "cores": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "memory_bytes": _memory_bytes(),
        "disk_free_bytes": shutil.disk_usage(".").free,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
        "kafka": kafka,
        "load_average_at_start": list(os.getloadavg()),
        "libc": libc_name(),
        "transparent_huge_pages": thp_mode(),
        "other_worker_processes_at_start": _other_workers(),
        "git": _git(),
    }


# -- targets ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One of the issue's targets and what the run measured (``met`` is None when not measured or
    not applicable)."""

    name: str
    target: str
    measured: str
    met: bool | None

    def to_json(self) -> dict[str, Any]:
        """As a JSON object."""
        return {"name": self.name, "target": self.target, "measured": self.measured, "met": self.met}


def _get(report: dict[str, Any], *path: str | int) -> Any:
    value: Any = report
    for key in path:
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return None
    return value


def _level(report: dict[str, Any], fraction: float) -> dict[str, Any] | None:
    for level in _get(report, "latency", "levels") or []:
        if abs(level["fraction"] - fraction) < 1e-9:
            return dict(level)
    return None


def _given_rate(report: dict[str, Any]) -> float:
    """The rate the paced levels were fractions of when given (``--latency-rate``); 0: the maximum."""
    return float(_get(report, "options", "latency_rate") or 0.0)


def _check(value: float | None, ok: bool) -> bool | None:
    return None if value is None else ok


def targets(report: dict[str, Any]) -> list[Target]:
    """The issue's targets, reported, never enforced."""
    ratio = _get(report, "leadscore", "ratio_to_baseline")
    cpu = _get(report, "leadscore", "cpu_us_per_event")
    least = floor(report)
    half = _level(report, 0.5)
    p99 = None if half is None else float(half["p99_ms"])
    given = _given_rate(report)
    at = f" (at 50% of a given {given:,.0f} events/s, not of the maximum)" if given and p99 is not None else ""
    restore = _get(report, "recovery", "fresh_data_dir", "ready_s")
    restart = _get(report, "recovery", "same_data_dir", "ready_s")
    leads_goal = f"{_get(report, 'options', 'recovery_leads') or 0:,} leads < 60 s"
    spread = _get(report, "decay", "due_index", "per_due_lead_spread")
    speedup = _get(report, "decay", "speedup")
    cores = _get(report, "machine", "cores") or 0
    runs = {run["workers"]: run for run in _get(report, "scaling", "runs") or []}
    scale = runs[4]["events_per_s"] / runs[1]["events_per_s"] if 1 in runs and 4 in runs else None
    fmt = "{:.2f}x"
    return [
        Target(
            "events/s vs baseline",
            ">= 1.0x (stretch 1.5x)",
            _show(ratio, fmt)
            + ("" if least is None else f" (one process's floor allows at most {least['max_ratio_to_baseline']:.2f}x)"),
            _check(ratio, (ratio or 0) >= 1.0),
        ),
        Target("worker CPU per event", "<= 17 us", _show(cpu, "{:.1f} us"), _check(cpu, (cpu or 1e9) <= 17)),
        Target(
            "p99 event->MQL at 50% of max rate",
            "< 250 ms",
            _show(p99, "{:.0f} ms") + at,
            _check(p99, (p99 or 1e9) < 250),
        ),
        Target(
            "recovery after a SIGKILL (same data dir, static membership)",
            leads_goal,
            _show(restart, "{:.1f} s"),
            _check(restart, (restart or 1e9) < 60),
        ),
        Target(
            "recovery of the lead table (fresh data dir)",
            leads_goal,
            _show(restore, "{:.1f} s"),
            _check(restore, (restore or 1e9) < 60),
        ),
        Target(
            "decay tick cost follows the due leads",
            "cost per due lead flat (0.1%/1%/10% due), index << scan",
            "n/a" if spread is None else f"per-lead cost spread {spread:.2f}x, {speedup:.0f}x faster than a scan",
            _check(spread, (spread or 1e9) <= 3 and (speedup or 0) > 10),
        ),
        Target(
            "4 workers vs 1",
            ">= 3x where cores allow",
            _show(scale, fmt) + ("" if cores >= 4 else f" ({cores} cores: not applicable)"),
            None if scale is None or cores < 4 else scale >= 3,
        ),
    ]


def _show(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else fmt.format(value)


# -- Markdown --------------------------------------------------------------------------------------


def _row(*cells: Any) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def _num(value: Any, fmt: str = "{:,.0f}") -> str:
    return "n/a" if value is None else fmt.format(value)


def _throughput_rows(report: dict[str, Any]) -> list[str]:
    rows = []
    for name, part in (("raw aiokafka baseline", "baseline"), ("leadscore worker", "leadscore")):
        data = report.get(part)
        if data:
            rows.append(
                _row(
                    name,
                    _num(data.get("events_per_s")),
                    _num(data.get("ratio_to_baseline", 1.0 if part == "baseline" else None), "{:.2f}"),
                    _num(data.get("cpu_us_per_event"), "{:.1f}"),
                    _num((data.get("peak_rss_bytes") or 0) / 2**20, "{:.0f}"),
                )
            )
    for run in _get(report, "scaling", "runs") or []:
        rows.append(
            _row(
                f"{run['workers']} worker(s)",
                _num(run["events_per_s"]),
                _num(run.get("ratio_to_one"), "{:.2f} x one"),
                _num(run["cpu_us_per_event"], "{:.1f}"),
                _num(run["peak_rss_bytes"] / 2**20, "{:.0f} (max)"),
            )
        )
    return rows


def _memory_note(report: dict[str, Any]) -> str:
    """The kernel's transparent huge page mode and whether the worker's heap was on them."""
    mode = _get(report, "machine", "transparent_huge_pages")
    on = _get(report, "leadscore", "heap_huge_pages")
    if mode is None and on is None:
        return ""
    worker = "" if on is None else f", the worker's malloc heap {'on' if on else 'not on'} them"
    return f" Transparent huge pages: {mode or 'unknown'}{worker}."


def markdown(report: dict[str, Any]) -> str:
    """The results as Markdown tables, for the README."""
    m = report["machine"]
    opts = report["options"]
    lines = [
        f"leadscore bench, {report['started_at']}: {m['cores']} cores ({m['cpu_model']}), Python {m['python']}, "
        f"Kafka {m['kafka']}, faust-streaming {m['packages'].get('faust-streaming')}, "
        f"aiokafka {m['packages'].get('aiokafka')}; {opts['leads']:,} leads, {opts['events']:,} events, "
        f"{report.get('input', {}).get('partitions', 8)} partitions.{_memory_note(report)}",
        "",
        _row("throughput (catch-up)", "events/s", "x baseline", "CPU us/event", "peak RSS MiB"),
        _row("---", "---:", "---:", "---:", "---:"),
        *_throughput_rows(report),
    ]
    levels = _get(report, "latency", "levels") or []
    if levels:
        header = ["event -> MQL", "events/s", "samples", "p50 ms", "p95 ms", "p99 ms", "input p99 ms"]
        header += ["worker CPU us/event", "worker CPU cores"]
        lines += ["", _row(*header), _row(*["---"] * len(header))]
        given = _given_rate(report)
        base = f"{given:,.0f}/s" if given else "max"
        for lv in levels:
            lines.append(
                _row(
                    f"{lv['fraction']:.0%} of {base}",
                    _num(lv["achieved_rate"]),
                    lv["samples"],
                    _num(lv["p50_ms"], "{:.1f}"),
                    _num(lv["p95_ms"], "{:.1f}"),
                    _num(lv["p99_ms"], "{:.1f}"),
                    _num(lv.get("input_p99_ms"), "{:.1f}"),
                    _num(lv.get("worker_cpu_us_per_event"), "{:.1f}"),
                    _num(lv.get("worker_cpu_share"), "{:.2f}"),
                )
            )
    lines += ["", _row("target", "goal", "measured", "met"), _row("---", "---", "---", "---")]
    for t in targets(report):
        lines.append(_row(t.name, t.target, t.measured, {True: "yes", False: "no", None: "-"}[t.met]))
    from streams.bench_collector import markdown_lines

    lines += markdown_lines(report)
    lines += ["", *_other_lines(report)]
    digests = report.get("source_digests") or []
    if len(digests) > 1:
        lines.append(f"- the service's source changed during this run: workers started from {', '.join(digests)}")
    return "\n".join(lines) + "\n"


def _steps(start: dict[str, Any]) -> str:
    return (
        f"assigned after {_num(start.get('assigned_s'), '{:.1f}')} s, changelog restored in "
        f"{_num(start.get('changelog_restore_s'), '{:.1f}')} s, due index rebuilt in "
        f"{_num(start.get('due_index_rebuild_s'), '{:.1f}')} s"
    )


def _other_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    lead = report.get("leadscore")
    if lead and "changelog_per_event" in lead:
        lines.append(
            f"- changelog messages per input event: {lead['changelog_per_event']:.3f} "
            f"({lead['changelog_messages']:,} for {lead['events']:,} events)"
        )
    steps = (lead or {}).get("cpu_us_per_event_by_step")
    if steps:
        lines.append(
            f"- the worker's CPU per event by step: scoring core {steps['score']:.1f} us, reading the batch and "
            f"its states {steps['read']:.1f}, encoding the changed states {steps['encode']:.1f}, RocksDB write "
            f"{steps['store']:.1f}, the rest (Kafka clients, event loop, Faust) {steps['rest']:.1f} "
            "(leadscore_step_cpu_seconds_total)"
            + (
                f"; the rest by thread: the main thread outside the steps {steps['rest_main']:.1f}, the other "
                f"threads (the Kafka consumer's) {steps['other_threads']:.1f}, RocksDB's background threads "
                f"{steps['rocksdb']:.1f} (/proc/<pid>/task)"
                if "rest_main" in steps
                else ""
            )
        )
    core = report.get("core")
    if core:
        from streams.bench_core import summary_line

        lines.append(f"- {summary_line(core)}")
    least = floor(report)
    if least:
        lines.append(f"- {floor_line(least)}")
    rec = report.get("recovery")
    if rec and "fresh_data_dir" in rec:
        same, fresh = rec["same_data_dir"], rec["fresh_data_dir"]
        lines.append(
            f"- recovery of {rec['leads']:,} leads ({rec['changelog_messages']:,} changelog messages), to /readyz "
            f"200: {same['ready_s']:.1f} s after a SIGKILL with the same data dir ({_steps(same)}); "
            f"{fresh['ready_s']:.1f} s with a fresh data dir ({_steps(fresh)}); an empty worker is ready in "
            f"{rec['empty_start_s']:.1f} s"
        )
    decay = report.get("decay")
    if decay and "due_index" in decay:
        idx = decay["due_index"]
        lines.append(
            f"- decay tick, {decay['leads']:,} leads, {idx['due']:,} due: due index {idx['tick_s'] * 1000:.1f} ms, "
            f"full scan {decay['full_scan']['tick_s'] * 1000:.0f} ms ({decay['speedup']:.0f}x)"
        )
    profile = report.get("profile")
    if profile and profile.get("samples"):
        packages = ", ".join(f"{name} {share:.0%}" for name, share in list(profile["by_package"].items())[:6])
        frames = ", ".join(f"{row['frame']} {row['share']:.1%}" for row in profile["top_self"][:6])
        lines.append(
            f"- py-spy of the worker ({profile['samples']} GIL samples, non-blocking): by package {packages}; "
            f"top frames (self) {frames}"
        )
    native = report.get("native_profile")
    if native and native.get("samples"):
        libraries = ", ".join(f"{name} {share:.0%}" for name, share in list(native["by_library"].items())[:6])
        symbols = ", ".join(
            f"{row['symbol']} ({row['library']}) {row['share']:.1%}" for row in native["top_symbols"][:6]
        )
        faults = native.get("page_faults")
        under_faults = "" if faults is None else f"; under the kernel's page-fault handler {faults:.0%}"
        lines.append(
            f"- perf of the worker ({native['samples']} samples, every thread, user and kernel): by library "
            f"{libraries}{under_faults}; top symbols {symbols}"
        )
    if report.get("scaling", {}).get("note"):
        lines.append(f"- scaling: {report['scaling']['note']}")
    return lines


# -- chart -----------------------------------------------------------------------------------------


def chart(report: dict[str, Any], path: Path) -> bool:
    """Events/s bars and latency percentiles as a PNG; ``False`` if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names, rates = [], []
    for label, part in (("baseline", "baseline"), ("leadscore", "leadscore")):
        if report.get(part):
            names.append(label)
            rates.append(report[part]["events_per_s"])
    for run in _get(report, "scaling", "runs") or []:
        names.append(f"{run['workers']} worker{'s' if run['workers'] > 1 else ''}")
        rates.append(run["events_per_s"])
    fig, (bars, lat) = plt.subplots(1, 2, figsize=(12, 4.5))
    bars.bar(names, rates, color=["#777777", "#1f77b4", "#6baed6", "#3182bd", "#08519c"][: len(names)])
    bars.set_ylabel("events/s (catch-up)")
    bars.set_title(f"throughput, {report['machine']['cores']} cores")
    for i, rate in enumerate(rates):
        bars.text(i, rate, f"{rate:,.0f}", ha="center", va="bottom", fontsize=8)
    _latency_chart(lat, _get(report, "latency", "levels") or [])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _latency_chart(ax: Any, levels: list[dict[str, Any]]) -> None:
    width = 0.25
    for i, (key, label) in enumerate((("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99"))):
        xs = [j + (i - 1) * width for j in range(len(levels))]
        ax.bar(xs, [lv[key] for lv in levels], width, label=label)
    ax.set_xticks(range(len(levels)), [f"{lv['fraction']:.0%} of max\n{lv['achieved_rate']:,.0f}/s" for lv in levels])
    ax.axhline(250, color="red", linewidth=0.8, linestyle="--", label="250 ms target (p99 at 50%)")
    ax.set_ylabel("event -> MQL latency (ms)")
    ax.set_title("end-to-end latency")
    ax.legend(fontsize=8)
