"""Transparent huge pages for the worker's malloc heap: the worker executes itself once more with
glibc's ``glibc.malloc.hugetlb=1`` tunable where it was started without it.

A catch-up grows a worker by hundreds of MiB (the cached lead states, RocksDB's memtables, the
fetch and produce buffers), and every fresh 4 KiB page costs a page fault: on the virtual machines
this project is measured on, 7-24 microseconds each depending on the hour (the kernel zeroes the
page and the host backs it), up to 15% of the worker's CPU in a 1,000,000-event catch-up. With
that tunable, glibc (2.35 and later) advises the kernel to back its heaps with 2 MiB pages
(``MADV_HUGEPAGE``), which it does where transparent huge pages are in ``madvise`` or ``always``
mode: the same catch-up took a third fewer faults and less system CPU (``bench/HISTORY.md``,
"Huge pages for the heap"). Python's own small-object arenas (1 MiB mappings each) are not covered.

glibc reads its tunables once, as a process starts; so :func:`execute_with_huge_pages` replaces
the worker's process by the same command (same PID, same arguments) with the tunable added, before
the worker has opened anything. An explicit ``glibc.malloc.hugetlb`` setting in
``GLIBC_TUNABLES`` is kept as it is; ``LEADSCORE_HUGE_PAGES=false`` turns this off.
"""

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from streams.settings import Settings

TUNABLE = "glibc.malloc.hugetlb"
THP_MODE_FILE = Path("/sys/kernel/mm/transparent_hugepage/enabled")
_USABLE_MODES = ("madvise", "always")


def thp_mode(path: Path = THP_MODE_FILE) -> str | None:
    """The kernel's transparent huge page mode (``always``, ``madvise``, ``never``); None where
    the kernel does not say (another OS, no THP support)."""
    try:
        text = path.read_text()
    except OSError:
        return None
    chosen = re.search(r"\[(\w+)\]", text)
    return chosen.group(1) if chosen else None


def libc_name() -> str | None:
    """The C library this Python runs on (``glibc``), None where it cannot tell (musl, macOS)."""
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")
    except (ValueError, OSError, AttributeError):
        return None
    return version.split()[0] if version else None


def _tunable_value(tunables: str) -> str | None:
    """The value ``GLIBC_TUNABLES`` gives malloc's huge pages (its last setting), None if none."""
    values = [entry.partition("=")[2] for entry in tunables.split(":") if entry.partition("=")[0] == TUNABLE]
    return values[-1] if values else None


def _usable(libc: str | None, mode: str | None) -> bool:
    """Whether glibc's tunable can put the heap on transparent huge pages here."""
    return libc == "glibc" and mode in _USABLE_MODES


def with_huge_pages(tunables: str) -> str | None:
    """``GLIBC_TUNABLES`` with malloc's huge pages added, or None when it already sets them
    (either way: an explicit choice is kept)."""
    if _tunable_value(tunables) is not None:
        return None
    return ":".join([*(entry for entry in tunables.split(":") if entry), f"{TUNABLE}=1"])


def planned_tunables(enabled: bool, tunables: str, libc: str | None, mode: str | None) -> str | None:
    """The ``GLIBC_TUNABLES`` to execute the worker again with, or None to run on as it is: off,
    not glibc, a kernel without usable transparent huge pages, or the tunable already set."""
    return with_huge_pages(tunables) if enabled and _usable(libc, mode) else None


def heap_on_huge_pages(tunables: str) -> bool:
    """Whether a process started with these ``GLIBC_TUNABLES`` has its malloc heap on transparent
    huge pages (the tunable at 1, glibc, and a kernel that backs advised memory with them)."""
    return _tunable_value(tunables) == "1" and _usable(libc_name(), thp_mode())


def environment_like_worker(base: Mapping[str, str], settings: Settings) -> dict[str, str]:
    """``base`` with the ``GLIBC_TUNABLES`` a worker with these settings would run with (the
    benchmark runs its raw loop on the same kind of heap)."""
    tunables = planned_tunables(settings.huge_pages, base.get("GLIBC_TUNABLES", ""), libc_name(), thp_mode())
    return dict(base) if tunables is None else {**base, "GLIBC_TUNABLES": tunables}


def execute_with_huge_pages(settings: Settings) -> None:
    """Execute this process's command again with malloc on huge pages where that applies (it does
    not return then); return where it does not, or where the execution fails (with a warning on
    stderr: the worker then runs as started)."""
    tunables = planned_tunables(settings.huge_pages, settings.glibc_tunables, libc_name(), thp_mode())
    if tunables is None:
        return
    started_with = os.environ.get("GLIBC_TUNABLES")
    os.environ["GLIBC_TUNABLES"] = tunables
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execv(sys.executable, sys.orig_argv)  # noqa: S606 (the same command again, no shell)
    except OSError as exc:
        if started_with is None:
            del os.environ["GLIBC_TUNABLES"]
        else:
            os.environ["GLIBC_TUNABLES"] = started_with
        print(f"warning: the worker runs without huge pages for its heap: {exc}", file=sys.stderr)
