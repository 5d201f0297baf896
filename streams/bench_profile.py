"""Optional py-spy profile of the worker during the catch-up run, summed per frame.

``--nonblocking``: py-spy's default mode stops the process for each sample, and on this kind of
machine that puts about 15% of the samples on ``getpid()`` inside CPython's C ``get_running_loop``
(where the stop lands: a syscall), which a non-stopping profile does not show. Non-blocking stacks
are read while the process runs, so some come out truncated (no outer frames): ``self`` counts are
reliable, ``total`` counts of outer frames are lower bounds; ``by_package`` groups the ``self``
counts by top-level package.

``py-spy record --gil -f raw`` writes one line per distinct stack (``frame;frame;... count``),
each frame ``function (file:line)``. Frames are summed without their line numbers: ``self`` counts
the samples where the frame is the innermost one, ``total`` the samples where it is anywhere on
the stack.
"""

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME_LINE = re.compile(r":\d+\)$")


def py_spy() -> str | None:
    """The py-spy executable next to this Python, else on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def start_profiler(pid: int, out: Path, seconds: float) -> "subprocess.Popen[bytes] | None":
    """Record ``pid`` for ``seconds`` (GIL holders only); ``None`` if py-spy is not installed."""
    exe = py_spy()
    if exe is None:
        return None
    command = [exe, "record", "--gil", "--nonblocking", "-f", "raw", "-o", str(out), "--pid", str(pid)]
    command += ["--duration", str(int(seconds))]
    log = out.with_suffix(".log").open("wb")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def _frame(raw: str) -> str:
    return _FRAME_LINE.sub(")", raw.strip())


def summarize(text: str, top: int = 20) -> dict[str, Any]:
    """Samples per frame, the ``top`` frames by self and by total samples, with their shares."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in text.splitlines():
        match = _LINE.match(line.strip())
        if not match:
            continue
        count = int(match["count"])
        frames = [_frame(f) for f in match["stack"].split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count

    def listing(counter: Counter[str]) -> list[dict[str, Any]]:
        return [
            {"frame": frame, "samples": n, "share": round(n / max(samples, 1), 4)}
            for frame, n in counter.most_common(top)
        ]

    packages: Counter[str] = Counter()
    for frame, n in own.items():
        packages[_package(frame)] += n
    by_package = {name: round(n / max(samples, 1), 4) for name, n in packages.most_common()}
    return {"samples": samples, "by_package": by_package, "top_self": listing(own), "top_total": listing(total)}


def _package(frame: str) -> str:
    """``scoring`` for ``decode_state (scoring/state.py)``; the file for a top-level module."""
    match = re.search(r"\(([^)]*)\)$", frame)
    path = match[1] if match else frame
    return path.split("/", 1)[0]
