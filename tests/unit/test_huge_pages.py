"""The worker's malloc heap on transparent huge pages: when the worker executes itself again with
glibc's tunable, and with what."""

import os
import sys
from pathlib import Path

import pytest

from streams import huge_pages
from streams.huge_pages import (
    environment_like_worker,
    execute_with_huge_pages,
    heap_on_huge_pages,
    planned_tunables,
    thp_mode,
    with_huge_pages,
)
from streams.settings import SettingsError, settings_from_env

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("always [madvise] never\n", "madvise"),
        ("[always] madvise never\n", "always"),
        ("always madvise [never]", "never"),
    ],
)
def test_thp_mode_is_the_bracketed_choice(tmp_path: Path, text: str, mode: str) -> None:
    setting = tmp_path / "enabled"
    setting.write_text(text)
    assert thp_mode(setting) == mode


def test_thp_mode_is_unknown_without_the_kernel_setting(tmp_path: Path) -> None:
    assert thp_mode(tmp_path / "absent") is None
    garbled = tmp_path / "garbled"
    garbled.write_text("madvise\n")
    assert thp_mode(garbled) is None


def test_the_tunable_is_added_to_what_is_there() -> None:
    assert with_huge_pages("") == "glibc.malloc.hugetlb=1"
    assert with_huge_pages("glibc.malloc.arena_max=2") == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


@pytest.mark.parametrize("given", ["glibc.malloc.hugetlb=0", "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=2"])
def test_an_explicit_choice_is_kept(given: str) -> None:
    assert with_huge_pages(given) is None


@pytest.mark.parametrize(
    ("enabled", "libc", "mode"),
    [(False, "glibc", "madvise"), (True, None, "madvise"), (True, "glibc", "never"), (True, "glibc", None)],
)
def test_no_new_execution_where_it_cannot_help(enabled: bool, libc: str | None, mode: str | None) -> None:
    assert planned_tunables(enabled, "", libc, mode) is None


@pytest.mark.parametrize("mode", ["madvise", "always"])
def test_a_new_execution_on_glibc_with_usable_huge_pages(mode: str) -> None:
    assert planned_tunables(True, "", "glibc", mode) == "glibc.malloc.hugetlb=1"


def test_heap_on_huge_pages_reads_the_last_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huge_pages, "libc_name", lambda: "glibc")
    monkeypatch.setattr(huge_pages, "thp_mode", lambda: "madvise")
    assert heap_on_huge_pages("glibc.malloc.hugetlb=1")
    assert not heap_on_huge_pages("")
    assert not heap_on_huge_pages("glibc.malloc.hugetlb=1:glibc.malloc.hugetlb=0")
    assert not heap_on_huge_pages("glibc.malloc.hugetlb=2")  # explicit huge pages (hugetlbfs), not transparent
    monkeypatch.setattr(huge_pages, "thp_mode", lambda: "never")
    assert not heap_on_huge_pages("glibc.malloc.hugetlb=1")


def test_the_settings_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    assert settings_from_env({}).huge_pages
    assert not settings_from_env({"LEADSCORE_HUGE_PAGES": "off"}).huge_pages
    assert settings_from_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}).glibc_tunables == "glibc.malloc.hugetlb=0"
    with pytest.raises(SettingsError, match="LEADSCORE_HUGE_PAGES"):
        settings_from_env({"LEADSCORE_HUGE_PAGES": "maybe"})


@pytest.fixture
def usable(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str]]]:
    """glibc and THP in madvise mode, with ``os.execv`` recorded instead of run."""
    monkeypatch.setattr(huge_pages, "libc_name", lambda: "glibc")
    monkeypatch.setattr(huge_pages, "thp_mode", lambda: "madvise")
    calls: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(os, "execv", lambda path, argv: calls.append((path, list(argv))))
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    return calls


def test_the_worker_executes_its_own_command_again_with_the_tunable(usable: list[tuple[str, list[str]]]) -> None:
    execute_with_huge_pages(settings_from_env({}))
    assert usable == [(sys.executable, list(sys.orig_argv))]
    assert os.environ["GLIBC_TUNABLES"] == "glibc.malloc.hugetlb=1"


def test_the_worker_runs_on_when_started_with_the_tunable(usable: list[tuple[str, list[str]]]) -> None:
    execute_with_huge_pages(settings_from_env({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}))
    execute_with_huge_pages(settings_from_env({"LEADSCORE_HUGE_PAGES": "false"}))
    assert usable == []
    assert "GLIBC_TUNABLES" not in os.environ


def test_the_benchmark_runs_its_raw_loop_on_the_same_heap(usable: list[tuple[str, list[str]]]) -> None:
    settings = settings_from_env({})
    assert environment_like_worker({"PATH": "/bin"}, settings) == {
        "PATH": "/bin",
        "GLIBC_TUNABLES": "glibc.malloc.hugetlb=1",
    }
    kept = {"GLIBC_TUNABLES": "glibc.malloc.hugetlb=0"}
    assert environment_like_worker(kept, settings) == kept
    assert environment_like_worker({}, settings_from_env({"LEADSCORE_HUGE_PAGES": "0"})) == {}


def test_a_failed_execution_leaves_the_worker_running_as_started(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(huge_pages, "libc_name", lambda: "glibc")
    monkeypatch.setattr(huge_pages, "thp_mode", lambda: "madvise")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")

    def refuse(path: str, argv: list[str]) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "execv", refuse)
    execute_with_huge_pages(settings_from_env({"GLIBC_TUNABLES": "glibc.malloc.arena_max=2"}))
    assert os.environ["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"
    assert "runs without huge pages for its heap: [Errno 13] Permission denied" in capsys.readouterr().err
