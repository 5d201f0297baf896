"""Hostile input never crashes the scorer: every record ends scored, a counted duplicate, or a dead
letter with a reason; good events around bad ones are still scored."""

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from scoring.engine import InputRecord, Scorer
from scoring.events import EventKind
from scoring.rules import parse_rules
from tests.conftest import DEFAULT_RULES
from tests.journeys import DAY_MS, T0, qualifying_journey

NOW = T0 + 10 * DAY_MS
RULES = parse_rules(DEFAULT_RULES.read_text())
KINDS = [*EventKind, None]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
field_values = st.one_of(
    json_values,
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from(["", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2026-01-01T00:00:00", "now", "/pricing"]),
)
CORPUS = [
    b'{"event_id": "x", "lead_id": "lead-1", "occurred_at": 1e400, "url": "/"}',
    b'{"event_id": "x", "lead_id": "lead-1", "occurred_at": 99999999999999999999999, "url": "/"}',
    b'{"event_id": "x", "lead_id": "lead-1"',
    b"\xff\xfe\x00",
    b"[" * 2000 + b"]" * 2000,
    b'{"event_id": "x", "lead_id": "lead-1", "occurred_at": 0, "url": "' + b"a" * 70000 + b'"}',
    b"null",
    b'"just a string"',
]
FIELDS = ["event_id", "lead_id", "occurred_at", "url", "action", "campaign_id", "asset_id", "asset_type", "status",
          "webinar_id", "minutes_attended", "company_size", "email", "seniority", "country",
          "anonymous_id"]  # fmt: skip


@st.composite
def hostile_records(draw: Any) -> InputRecord:
    kind = draw(st.sampled_from(KINDS))
    shape = draw(st.sampled_from(["bytes", "json", "object"]))
    if shape == "bytes":
        value = draw(st.binary(max_size=200) | st.none() | st.sampled_from(CORPUS))
    elif shape == "json":
        value = orjson.dumps(draw(json_values))
    else:
        payload = draw(st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=8))
        value = orjson.dumps(payload)
    key = draw(st.none() | st.binary(max_size=20) | st.sampled_from([b"lead-1", b"lead-2"]))
    return InputRecord(kind, "fuzz", 0, 0, key, value)


@settings(max_examples=200, deadline=None)
@given(st.lists(hostile_records(), min_size=1, max_size=50))
def test_every_hostile_record_is_accounted_for_and_good_ones_still_score(bad: list[InputRecord]) -> None:
    scorer = Scorer(RULES)  # a fresh scorer per example: no state shared between examples
    good = qualifying_journey("good-lead", T0)
    records = [*good[:2], *bad, *good[2:]]
    result = scorer.process_batch(records, {}, NOW)
    accounted = result.scored + result.duplicates + len(result.dead_letters) + len(result.anonymous)
    assert accounted == len(records)
    assert all(letter.reason and letter.detail for letter in result.dead_letters)
    assert [m.lead_id for m in result.mql if m.lead_id == "good-lead"] == ["good-lead"]
    assert result.states["good-lead"].counts["pricing_page"] == 3
