"""The scoring core stays pure: no Kafka, Faust, network, file or process imports."""

import ast
from pathlib import Path

FORBIDDEN = {
    "faust",
    "mode",
    "aiokafka",
    "kafka",
    "asyncio",
    "socket",
    "os",
    "io",
    "pathlib",
    "subprocess",
    "shutil",
    "threading",
    "multiprocessing",
    "logging",
    "prometheus_client",
    "rocksdict",
    "time",
    "streams",
    "agents",
    "urllib.request",
    "http",
}
SCORING = Path(__file__).resolve().parents[2] / "scoring"


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_scoring_imports_nothing_that_does_io() -> None:
    files = sorted(SCORING.glob("*.py"))
    assert len(files) >= 5
    offenders = {
        f"{path.name}: {name}"
        for path in files
        for name in imported_modules(path)
        if name in FORBIDDEN or name.split(".")[0] in FORBIDDEN
    }
    assert offenders == set()


def test_the_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "bad.py"
    sample.write_text("import aiokafka\nfrom os import path\n")
    assert imported_modules(sample) & FORBIDDEN == {"aiokafka", "os"}
