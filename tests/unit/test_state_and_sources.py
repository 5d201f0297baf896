"""Lead state format 3 (compatible with formats 1 and 2), first-touch sources and their bounded names."""

from dataclasses import MISSING
from dataclasses import fields as dataclass_fields
from typing import Any

import orjson
import pytest

from scoring.engine import InputRecord, Scorer
from scoring.events import EventKind
from scoring.sources import REPORTED_SOURCES, first_touch, normalise_source
from scoring.state import STATE_FORMAT, LeadState, Stage, decode_stage, decode_state, encode_state
from tests.journeys import T0, record, visit


def web(lead: str, eid: str, at: int, **fields: Any) -> InputRecord:
    return record(EventKind.WEB_VISIT, lead, eid, at, url="/pricing", **fields)


def test_a_format_1_state_decodes_with_the_new_fields_empty() -> None:
    old = {
        "f": 1, "id": "a", "p": {"seniority": "vp"}, "pa": {"seniority": 5}, "r": 7, "v": {"pricing_page": 10.0},
        "c": {"pricing_page": 1}, "w": {}, "s": {"e1": 7}, "sf": -1, "fe": 7, "le": 7, "st": "mql", "x": 1,
        "m": 7, "d": 99, "t": "e1", "pt": 3,
    }  # fmt: skip
    state = decode_state(orjson.dumps(old))
    assert (state.stage, state.crossings, state.mql_at, state.due_at) == (Stage.MQL, 1, 7, 99)
    assert (state.sal_at, state.sql_at, state.won_at, state.mql_rules_version) == (None, None, None, None)
    assert (state.source, state.source_at, state.resets) == (None, None, [])
    assert orjson.loads(encode_state(state))["f"] == STATE_FORMAT == 3


@pytest.mark.parametrize("stage", list(Stage))
def test_decode_stage_reads_what_decode_state_reads(stage: Stage) -> None:
    state = LeadState("lead-7", stage=stage, partition=5, due_at=1234 if stage is Stage.MQL else None, crossings=2)
    data = encode_state(state)
    assert decode_stage(data) == ("lead-7", 5, stage, state.due_at)
    full = decode_state(data)
    assert decode_stage(data) == (full.lead_id, full.partition, full.stage, full.due_at)


def test_decode_stage_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown lead state format 9"):
        decode_stage(orjson.dumps({"f": 9, "id": "a", "pt": 0, "st": "lead", "d": None}))


def test_new_fields_round_trip() -> None:
    state = LeadState(
        "a", stage=Stage.SQL, sal_at=1, sql_at=2, won_at=None, mql_rules_version="v+1", source="g2",
        source_at=0, resets=[(5, 0.0), (9, 0.5)],
    )  # fmt: skip
    assert decode_state(encode_state(state)) == state


def test_first_touch_is_the_earliest_visit_whatever_the_arrival_order(scorer: Scorer) -> None:
    later = web("a", "2", T0 + 5_000, utm_source="LinkedIn")
    earlier = web("a", "1", T0, referrer="https://www.google.co.uk/search?q=stream")
    profile_only = record(EventKind.LEAD_PROFILE, "a", "0", T0 - 1, seniority="vp")
    forward = scorer.process_batch([profile_only, earlier, later], {}, T0 + 10_000).states["a"]
    backward = scorer.process_batch([later, profile_only, earlier], {}, T0 + 10_000).states["a"]
    assert (forward.source, forward.source_at) == (backward.source, backward.source_at) == ("google.co.uk", T0)
    assert normalise_source(forward.source) == "google"


def test_a_first_visit_without_source_is_direct(scorer: Scorer) -> None:
    state = scorer.process_batch([visit("a", "1", T0, "/")], {}, T0).states["a"]
    assert state.source == ""
    assert normalise_source(state.source) == "direct"


@pytest.mark.parametrize(
    ("attrs", "expected"),
    [
        ({"utm_source": " Newsletter ", "referrer": "https://www.g2.com/"}, "newsletter"),
        ({"referrer": "https://www.linkedin.com/feed/?trk=x"}, "linkedin.com"),
        ({"referrer": "https://lnkd.in:443/abc"}, "lnkd.in"),
        ({"referrer": "not a url"}, ""),
        ({"utm_source": "   "}, ""),
        ({}, ""),
        ({"utm_source": "x" * 500}, "x" * 64),
    ],
)
def test_first_touch(attrs: dict[str, str], expected: str) -> None:
    assert first_touch(attrs) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (None, "unknown"),
        ("", "direct"),
        ("google", "google"),
        ("adwords", "google"),
        ("news.google.com", "google"),
        ("google.co.uk", "google"),
        ("linkedin.com", "linkedin"),
        ("lnkd.in", "linkedin"),
        ("t.co", "twitter"),
        ("g2.com", "g2"),
        ("x.example.com", "other"),
        ("some-partner-blog.io", "other"),
        ("spring-campaign-2026", "other"),
    ],
)
def test_sources_are_normalised_to_a_bounded_set(source: str | None, expected: str) -> None:
    assert normalise_source(source) == expected
    assert expected in REPORTED_SOURCES


def test_a_new_state_has_the_dataclass_defaults_in_containers_of_its_own() -> None:
    # The constructor is written out (compiled, it is native code): it must give what the
    # dataclass's own would, and never share a container between two states.
    first, second = LeadState("L1"), LeadState("L2", crossings=3)
    declared = dataclass_fields(LeadState)
    defaults = {f.name: f.default if f.default_factory is MISSING else f.default_factory() for f in declared}
    assert {f.name: getattr(second, f.name) for f in declared} == {**defaults, "lead_id": "L2", "crossings": 3}
    containers = [name for name, value in defaults.items() if isinstance(value, dict | list)]
    assert len(containers) == 7  # profile, profile_at, values, counts, cap_counted, seen, resets
    for name in containers:
        assert getattr(first, name) is not getattr(second, name)
