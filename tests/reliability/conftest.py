"""The reliability tier: fault scenarios on the real broker, workers as separate processes.

The broker and worker fixtures are the integration tier's (``bootstrap``, ``names``,
``worker_factory``, ``collector_factory``), and so is its failure report (each worker's log).
``LEADSCORE_SOAK=1`` turns the bounded CI run into a soak (``tests/reliability/harness.py``,
``soak``).
"""

from tests.integration.conftest import (
    bootstrap,
    collector_factory,
    names,
    pytest_runtest_makereport,
    worker_factory,
)

__all__ = ["bootstrap", "collector_factory", "names", "pytest_runtest_makereport", "worker_factory"]
