from pathlib import Path

import pytest

from scoring.engine import Scorer
from scoring.rules import Rules, parse_rules

DEFAULT_RULES = Path(__file__).resolve().parents[2] / "scoring" / "default_rules.toml"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/unit/" in str(item.fspath):
            item.add_marker(pytest.mark.unit)


@pytest.fixture(scope="session")
def default_rules() -> Rules:
    return parse_rules(DEFAULT_RULES.read_text(), str(DEFAULT_RULES))


@pytest.fixture
def scorer(default_rules: Rules) -> Scorer:
    return Scorer(default_rules)
