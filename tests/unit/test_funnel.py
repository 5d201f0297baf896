"""Funnel figures: the rates equal a hand-computed fixture."""

from typing import Any

import pytest

from scoring.funnel import DAY_MS, funnel
from scoring.state import LeadState, Stage

D = DAY_MS


def lead(lead_id: str, stage: Stage, source: str | None, version: str | None = None, **times: int | None) -> LeadState:
    return LeadState(lead_id, stage=stage, source=source, mql_rules_version=version, **times)  # type: ignore[arg-type]


# Eight leads, their stages and stage times (days) written out by hand.
FIXTURE = [
    lead("l1", Stage.LEAD, None),  # never visited the site, never qualified
    lead("l2", Stage.NURTURE, "google", "v1", mql_at=0),  # rejected by sales
    lead("l3", Stage.SAL, "linkedin.com", "v1", mql_at=0, sal_at=1 * D),
    lead("l4", Stage.SQL, "google", "v1", mql_at=0, sal_at=1 * D, sql_at=4 * D),
    lead("l5", Stage.CUSTOMER, "", "v2", mql_at=10 * D, sal_at=11 * D, sql_at=12 * D, won_at=50 * D),
    lead("l6", Stage.NURTURE, "g2", "v2", mql_at=0, sal_at=2 * D, sql_at=10 * D),  # lost
    lead("l7", Stage.MQL, "weird.io", "v2", mql_at=5 * D),
    lead("l8", Stage.LEAD, "google"),
]


def cohort(
    leads: int, mql: int, sal: int, sql: int, won: int, rates: tuple[float | None, ...], median_days: float | None
) -> dict[str, Any]:
    return {
        "leads": leads,
        "mql": mql,
        "sal": sal,
        "sql": sql,
        "won": won,
        "mql_to_sal": rates[0],
        "mql_to_sql": rates[1],
        "sql_to_won": rates[2],
        "median_mql_to_sql_ms": None if median_days is None else median_days * D,
        "median_mql_to_sql_days": median_days,
    }


def test_funnel_rates_equal_a_hand_computed_fixture() -> None:
    payload = funnel(FIXTURE).to_payload()
    assert payload["leads"] == 8
    assert payload["stages"] == {"lead": 2, "mql": 1, "nurture": 2, "sal": 1, "sql": 1, "customer": 1}
    # 6 MQLs (l2-l7); accepted: l3 l4 l5 l6; qualified: l4 (4 d) l5 (2 d) l6 (10 d); won: l5.
    assert payload["overall"] == cohort(8, 6, 4, 3, 1, (0.6667, 0.5, 0.3333), 4)
    assert payload["by_rules_version"] == {
        "v1": cohort(3, 3, 2, 1, 0, (0.6667, 0.3333, 0.0), 4),
        "v2": cohort(3, 3, 2, 2, 1, (0.6667, 0.6667, 0.5), 6),
    }
    assert payload["by_source"] == {
        "direct": cohort(1, 1, 1, 1, 1, (1.0, 1.0, 1.0), 2),
        "g2": cohort(1, 1, 1, 1, 0, (1.0, 1.0, 0.0), 10),
        "google": cohort(3, 2, 1, 1, 0, (0.5, 0.5, 0.0), 4),
        "linkedin": cohort(1, 1, 1, 0, 0, (1.0, 0.0, None), None),
        "other": cohort(1, 1, 0, 0, 0, (0.0, 0.0, None), None),
        "unknown": cohort(1, 0, 0, 0, 0, (None, None, None), None),
    }


def test_an_empty_table_has_no_rates() -> None:
    payload = funnel([]).to_payload()
    assert payload["leads"] == 0
    assert set(payload["stages"].values()) == {0}
    assert payload["overall"] == cohort(0, 0, 0, 0, 0, (None, None, None), None)
    assert payload["by_source"] == payload["by_rules_version"] == {}


def test_a_crossing_from_before_rules_versions_were_kept_is_grouped_as_unknown() -> None:
    old = lead("old", Stage.MQL, "google", None, mql_at=0)
    assert list(funnel([old]).by_rules_version) == ["unknown"]


@pytest.mark.parametrize("order", [FIXTURE, FIXTURE[::-1]])
def test_the_order_of_the_table_does_not_matter(order: list[LeadState]) -> None:
    assert funnel(order).to_payload() == funnel(FIXTURE).to_payload()
