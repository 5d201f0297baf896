"""Test tiers and shared fixtures.

Tiers are selected by markers, given by directory: ``unit`` (pure, the default), ``agents``
(Faust ``agent.test_context()``, no broker), ``integration`` (a real Kafka broker, the worker
as a separate process) and ``reliability`` (fault scenarios on the real broker).
"""

from pathlib import Path

import pytest

from scoring.engine import Scorer
from scoring.rules import Rules, parse_rules
from streams.core_build import stale_reason

DEFAULT_RULES = Path(__file__).resolve().parents[1] / "scoring" / "default_rules.toml"
TIERS = ("unit", "agents", "integration", "reliability")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Refuse to test a compiled scoring core older than its sources: its extension modules shadow
    the sources, so the edited code would not be what runs."""
    reason = stale_reason()
    if reason is not None:
        pytest.exit(reason, returncode=pytest.ExitCode.USAGE_ERROR)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        tier = next((t for t in TIERS if t in parts), "unit")
        item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def default_rules() -> Rules:
    return parse_rules(DEFAULT_RULES.read_text(), str(DEFAULT_RULES))


@pytest.fixture
def scorer(default_rules: Rules) -> Scorer:
    return Scorer(default_rules)
