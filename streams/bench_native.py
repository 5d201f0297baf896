"""Optional ``perf`` profile of the worker during the catch-up run: where its CPU goes below Python.

py-spy (``streams.bench_profile``) sees Python frames only: the compiled scoring core shows as its
caller, and neither CPython's own work (dictionaries, allocation, the collector) nor the kernel's
(the page faults of a growing heap) shows at all. ``perf record -g`` samples every thread of the
worker, user and kernel code alike. The summary gives each library's share of the samples
(``libpython3.11`` the interpreter, ``core__mypyc`` the compiled scoring core, ``kernel``,
``orjson``, ``rocksdict``, ...), the share spent under the kernel's page-fault handler, and the
top symbols.

Needs ``perf`` on the PATH and the right to profile the worker (``kernel.perf_event_paranoid`` of
2 or less for a process of the same user); without them the report says why instead.
"""

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

# Samples per second: prime, so that the samples do not beat with the worker's periodic work.
SAMPLE_HZ = 499
# The kernel's page-fault entry point, by kernel version (the first one found counts).
PAGE_FAULT_SYMBOLS = ("asm_exc_page_fault", "exc_page_fault", "page_fault")

_ROW = re.compile(r"^\s*(?P<share>[\d.]+)%\s+(?P<samples>\d+)\s+(?P<what>\S.*?)\s*$")
_CHILDREN_ROW = re.compile(r"^\s*(?P<children>[\d.]+)%\s+[\d.]+%\s+\d+\s+\[[.k]\]\s+(?P<symbol>\S+)")
_SYMBOL = re.compile(r"^(?P<dso>.+?)\s+\[(?P<kind>[.k])\]\s+(?P<symbol>.+)$")


def perf() -> str | None:
    """The perf executable on the PATH."""
    return shutil.which("perf")


def start_native_profiler(pid: int, out: Path, seconds: float) -> "subprocess.Popen[bytes] | None":
    """Record ``pid`` (every thread, with call graphs) for ``seconds``; ``None`` without perf."""
    exe = perf()
    if exe is None:
        return None
    command = [exe, "record", "-F", str(SAMPLE_HZ), "-g", "-p", str(pid), "-o", str(out)]
    command += ["--", "sleep", str(int(seconds))]
    log = out.with_suffix(".log").open("wb")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def native_summary(data: Path, top: int = 12) -> dict[str, Any]:
    """Summarize a ``perf record`` file with ``perf report`` (see :func:`summarize_native`)."""
    exe = perf()
    if exe is None:
        return {"error": "perf not found"}
    by_library = _report(exe, data, "--no-children", "--sort", "dso")
    by_symbol = _report(exe, data, "--no-children", "--sort", "dso,sym")
    with_children = _report(exe, data, "--children", "--sort", "sym")
    return summarize_native(by_library, by_symbol, with_children, top)


def _report(exe: str, data: Path, *sort: str) -> str:
    command = [exe, "report", "-i", str(data), "-n", "--stdio", "-g", "none", *sort]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=False).stdout


def summarize_native(by_library: str, by_symbol: str, with_children: str, top: int = 12) -> dict[str, Any]:
    """Shares of the samples per library (``perf report -n --sort dso``), under the kernel's
    page-fault handler (``--children --sort sym``), and of the ``top`` symbols (``--sort dso,sym``)."""
    libraries: dict[str, int] = {}
    for what, samples in _rows(by_library):
        name = library_name(what)
        libraries[name] = libraries.get(name, 0) + samples
    total = sum(libraries.values())
    if not total:
        return {"error": "perf recorded no samples of the worker"}
    symbols = []
    for what, samples in _rows(by_symbol)[:top]:
        match = _SYMBOL.match(what)
        if match:
            symbols.append(
                {"library": library_name(match["dso"]), "symbol": match["symbol"], "share": round(samples / total, 4)}
            )
    return {
        "samples": total,
        "by_library": {name: round(n / total, 4) for name, n in sorted(libraries.items(), key=lambda kv: -kv[1])},
        "page_faults": _page_fault_share(with_children),
        "top_symbols": symbols,
    }


def library_name(dso: str) -> str:
    """``core__mypyc`` for ``core__mypyc.cpython-311-x86_64-linux-gnu.so``, ``libpython3.11`` for
    ``libpython3.11.so.1.0``, ``kernel`` for ``[kernel.kallsyms]``."""
    dso = dso.strip()
    if dso.startswith("[kernel"):
        return "kernel"
    name = dso.rsplit("/", 1)[-1]
    for suffix in (".cpython-", ".so"):
        name = name.split(suffix, 1)[0]
    return name


def _rows(text: str) -> list[tuple[str, int]]:
    rows = []
    for line in text.splitlines():
        match = None if line.startswith("#") else _ROW.match(line)
        if match:
            rows.append((match["what"], int(match["samples"])))
    return rows


def _page_fault_share(with_children: str) -> float | None:
    children: dict[str, float] = {}
    for line in with_children.splitlines():
        match = None if line.startswith("#") else _CHILDREN_ROW.match(line)
        if match:
            children.setdefault(match["symbol"], float(match["children"]) / 100)
    for symbol in PAGE_FAULT_SYMBOLS:
        if symbol in children:
            return round(children[symbol], 4)
    return None
