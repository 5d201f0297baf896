"""The benchmark's perf summary, on ``perf report`` output as perf 6 prints it."""

import subprocess
from pathlib import Path

import pytest

from streams import bench_native
from streams.bench_native import library_name, summarize_native
from streams.bench_report import markdown

HEADER = "# Total Lost Samples: 0\n#\n# Samples: 4K of event 'cpu-clock:ppp'\n#\n"

BY_LIBRARY = HEADER + "\n".join(
    [
        "# Overhead       Samples  Shared Object",
        "# ........  ............  ...............",
        "#",
        "    55.00%           550  libpython3.11.so.1.0                           ",
        "    25.00%           250  [kernel.kallsyms]                              ",
        "     8.00%            80  core__mypyc.cpython-311-x86_64-linux-gnu.so    ",
        "     7.00%            70  /usr/lib/x86_64-linux-gnu/libc.so.6            ",
        "     5.00%            50  orjson.cpython-311-x86_64-linux-gnu.so         ",
    ]
)
BY_SYMBOL = HEADER + "\n".join(
    [
        "# Overhead       Samples  Shared Object      Symbol",
        "#",
        "    22.00%           220  [kernel.kallsyms]                                [k] clear_page_erms",
        "     7.00%            70  libpython3.11.so.1.0                             [.] _PyEval_EvalFrameDefault",
        "     3.00%            30  core__mypyc.cpython-311-x86_64-linux-gnu.so  [.] CPyDef_engine___Scorer____apply",
    ]
)
WITH_CHILDREN = HEADER + "\n".join(
    [
        "# Children      Self       Samples  Symbol",
        "#",
        "    24.40%     0.00%             0  [k] asm_exc_page_fault",
        "    24.37%     0.42%            20  [k] exc_page_fault",
        "    14.83%     2.53%           119  [.] _PyObject_Malloc",
    ]
)


def test_samples_are_shared_out_by_library_with_the_page_faults_and_the_top_symbols() -> None:
    summary = summarize_native(BY_LIBRARY, BY_SYMBOL, WITH_CHILDREN, top=2)
    assert summary["samples"] == 1000
    assert summary["by_library"] == {
        "libpython3.11": 0.55,
        "kernel": 0.25,
        "core__mypyc": 0.08,
        "libc": 0.07,
        "orjson": 0.05,
    }
    assert summary["page_faults"] == 0.244  # the entry point's share, not its callee's
    assert summary["top_symbols"] == [
        {"library": "kernel", "symbol": "clear_page_erms", "share": 0.22},
        {"library": "libpython3.11", "symbol": "_PyEval_EvalFrameDefault", "share": 0.07},
    ]


def test_an_older_kernel_s_page_fault_entry_point_is_found_and_none_is_no_share() -> None:
    older = WITH_CHILDREN.replace("asm_exc_page_fault", "other_symbol").replace("exc_page_fault", "page_fault")
    assert summarize_native(BY_LIBRARY, BY_SYMBOL, older)["page_faults"] == 0.2437
    assert summarize_native(BY_LIBRARY, BY_SYMBOL, HEADER)["page_faults"] is None


def test_a_profile_without_samples_says_so() -> None:
    assert summarize_native(HEADER, HEADER, HEADER) == {"error": "perf recorded no samples of the worker"}


@pytest.mark.parametrize(
    ("dso", "name"),
    [
        ("libpython3.11.so.1.0", "libpython3.11"),
        ("[kernel.kallsyms]", "kernel"),
        ("core__mypyc.cpython-311-x86_64-linux-gnu.so", "core__mypyc"),
        ("/usr/lib/x86_64-linux-gnu/libc.so.6", "libc"),
        ("[unknown]", "[unknown]"),
    ],
)
def test_library_names_drop_paths_and_build_suffixes(dso: str, name: str) -> None:
    assert library_name(dso) == name


def test_without_perf_nothing_starts_and_the_summary_says_why(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(bench_native, "perf", lambda: None)
    assert bench_native.start_native_profiler(1, tmp_path / "perf.data", 1.0) is None
    assert bench_native.native_summary(tmp_path / "perf.data") == {"error": "perf not found"}


def test_the_recording_covers_every_thread_of_the_worker_with_call_graphs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    started: list[list[str]] = []

    class Started:
        def __init__(self, command: list[str], **_: object) -> None:
            started.append(command)

    monkeypatch.setattr(bench_native, "perf", lambda: "/usr/bin/perf")
    monkeypatch.setattr(subprocess, "Popen", Started)
    bench_native.start_native_profiler(4242, tmp_path / "perf.data", 15.0)
    data = str(tmp_path / "perf.data")
    assert started == [["/usr/bin/perf", "record", "-F", "499", "-g", "-p", "4242", "-o", data, "--", "sleep", "15"]]


def test_the_report_gives_the_native_profile() -> None:
    report = {
        "started_at": "20260101T000000Z",
        "options": {"leads": 10, "events": 100, "recovery_leads": 1000},
        "machine": {"cores": 2, "cpu_model": "cpu", "python": "3.11", "kafka": "4.1.1", "packages": {}},
        "input": {"partitions": 8},
        "native_profile": summarize_native(BY_LIBRARY, BY_SYMBOL, WITH_CHILDREN),
    }
    text = markdown(report)
    assert (
        "- perf of the worker (1000 samples, every thread, user and kernel): by library libpython3.11 55%, "
        "kernel 25%, core__mypyc 8%, libc 7%, orjson 5%; under the kernel's page-fault handler 24%; top symbols "
        "clear_page_erms (kernel) 22.0%, _PyEval_EvalFrameDefault (libpython3.11) 7.0%, "
        "CPyDef_engine___Scorer____apply (core__mypyc) 3.0%"
    ) in text
