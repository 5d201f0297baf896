"""A worker started without glibc's huge-page tunable executes itself again with it (same PID) and
runs with its malloc heap on transparent huge pages; ``LEADSCORE_HUGE_PAGES=false`` keeps it off."""

import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from streams.huge_pages import TUNABLE, libc_name, thp_mode
from tests.integration.worker import WorkerProcess

pytestmark = pytest.mark.skipif(
    libc_name() != "glibc"
    or thp_mode() not in ("madvise", "always")
    or TUNABLE in os.environ.get("GLIBC_TUNABLES", ""),
    reason="needs glibc, transparent huge pages in madvise or always mode, and no explicit tunable",
)


def heap_eligible_for_huge_pages(pid: int) -> bool:
    """Whether any mapping of the process's malloc heap may be backed by huge pages."""
    mapping = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            mapping = line
        elif line.startswith("THPeligible:") and mapping.endswith("[heap]") and line.split()[1] == "1":
            return True
    return False


def tunables_of(pid: int) -> str:
    for entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
        if entry.startswith(b"GLIBC_TUNABLES="):
            return entry.partition(b"=")[2].decode()
    return ""


def test_the_worker_heap_is_on_huge_pages_unless_turned_off(
    worker_factory: Callable[..., WorkerProcess], names: str
) -> None:
    on = worker_factory(0, wait_ready=False)
    off = worker_factory(1, wait_ready=False, LEADSCORE_HUGE_PAGES="false", LEADSCORE_APP_ID=names + "off")
    for worker in (on, off):
        worker.wait_ready()
    assert on.process is not None
    assert off.process is not None
    assert tunables_of(on.process.pid) == f"{TUNABLE}=1"  # the same PID, executed again with the tunable
    assert on.metric("leadscore_heap_huge_pages") == 1.0
    assert heap_eligible_for_huge_pages(on.process.pid)
    assert tunables_of(off.process.pid) == ""
    assert off.metric("leadscore_heap_huge_pages") == 0.0
    assert not heap_eligible_for_huge_pages(off.process.pid)
