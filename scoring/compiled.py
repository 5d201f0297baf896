"""Whether the scoring core runs compiled: the hot modules are built with mypyc by
``deploy/compile-core.sh``; their pure-Python sources stay the reference."""

from importlib.machinery import EXTENSION_SUFFIXES

# The modules built with mypyc, in build order: the scorer's per-event path and what it calls, and
# the Kafka partitioner that places every keyed output.
COMPILED_MODULES = (
    "scoring.errors",
    "scoring.pseudonyms",
    "scoring.timeutil",
    "scoring.decay",
    "scoring.events",
    "scoring.rules",
    "scoring.state",
    "scoring.stages",
    "scoring.outputs",
    "scoring.sources",
    "scoring.partitioner",
    "scoring.engine",
)
# The shared library that holds the compiled code of every module above (each module's own
# extension is a small shim that loads it).
SHARED_LIBRARY = "scoring.core__mypyc"


def is_extension(path: str | None) -> bool:
    """Whether a module's ``__file__`` is an extension module (a compiled build), not a source."""
    return path is not None and path.endswith(tuple(EXTENSION_SUFFIXES))


def is_compiled() -> bool:
    """Whether the scorer in use is the compiled build (``scoring.engine`` loaded from an extension)."""
    import scoring.engine

    return is_extension(scoring.engine.__file__)
