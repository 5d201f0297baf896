"""The compiled build of the scoring core: the digest of its sources, and whether the build in
place is stale (an extension module shadows the source of the same module, so a build older than
its sources would run, and be tested, instead of them).

``deploy/compile-core.sh`` records the digest it built from in ``scoring/.compiled-sources``;
``python -m streams.core_build digest|sources|fresh`` serves that script.
"""

import hashlib
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

from scoring.compiled import COMPILED_MODULES, SHARED_LIBRARY

ROOT = Path(__file__).resolve().parents[1]
RECORD = "scoring/.compiled-sources"
STALE_HINT = "the compiled scoring core is stale: run deploy/compile-core.sh"


def source_paths(root: Path = ROOT) -> list[Path]:
    """The source files of the compiled modules, in build order."""
    return [root / (name.replace(".", "/") + ".py") for name in COMPILED_MODULES]


def sources_digest(root: Path = ROOT) -> str:
    """SHA-256 of the compiled modules' names and sources: what a build is made from."""
    h = hashlib.sha256()
    for name, path in zip(COMPILED_MODULES, source_paths(root), strict=True):
        data = path.read_bytes()
        h.update(f"{name}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()


def extensions(root: Path = ROOT) -> list[Path]:
    """The extension modules (compiled builds) in place in ``scoring/``."""
    return sorted(p for p in (root / "scoring").iterdir() if p.name.endswith(tuple(EXTENSION_SUFFIXES)))


def recorded_digest(root: Path = ROOT) -> str | None:
    """The sources digest that the build in place was made from; ``None`` if none is recorded."""
    try:
        return (root / RECORD).read_text().strip() or None
    except FileNotFoundError:
        return None


def stale_reason(root: Path = ROOT) -> str | None:
    """Why the compiled build in place does not match the sources, or ``None`` if it does (or if
    nothing is compiled: the sources are then what runs)."""
    found = extensions(root)
    if not found:
        return None
    recorded = recorded_digest(root)
    if recorded is None:
        return f"{STALE_HINT} ({len(found)} extension modules in scoring/ and no {RECORD})"
    if recorded != sources_digest(root):
        return f"{STALE_HINT} (the sources changed since the build recorded in {RECORD})"
    return None


def is_fresh(root: Path = ROOT) -> bool:
    """Whether every compiled module is in place and built from the current sources."""
    found = {p.name.split(".", 1)[0] for p in extensions(root)}
    wanted = {name.rsplit(".", 1)[1] for name in (*COMPILED_MODULES, SHARED_LIBRARY)}
    return wanted <= found and recorded_digest(root) == sources_digest(root)


def main(argv: list[str]) -> int:
    """``digest``: print the sources digest; ``sources``: the source paths; ``fresh``: exit 0 if the
    build in place is complete and current, 1 otherwise."""
    command = argv[0] if argv else ""
    if command == "digest":
        print(sources_digest())
    elif command == "sources":
        print("\n".join(str(p) for p in source_paths()))
    elif command == "fresh":
        return 0 if is_fresh() else 1
    else:
        print("usage: python -m streams.core_build digest|sources|fresh", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
