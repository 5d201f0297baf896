"""The reliability tier: fault scenarios on the real broker, workers as separate processes.

The broker and worker fixtures are the integration tier's (``bootstrap``, ``names``,
``worker_factory``, ``collector_factory``). ``LEADSCORE_SOAK=1`` turns the bounded CI run into a
soak: the scenarios read their counts and durations through :func:`soak`.
"""

import os

from tests.integration.conftest import bootstrap, collector_factory, names, worker_factory

__all__ = ["bootstrap", "collector_factory", "names", "worker_factory"]

SOAK = os.environ.get("LEADSCORE_SOAK", "") not in ("", "0")


def soak(ci: int, long: int) -> int:
    """``ci`` in the bounded run, ``long`` when ``LEADSCORE_SOAK=1``."""
    return long if SOAK else ci
