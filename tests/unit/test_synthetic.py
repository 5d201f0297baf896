"""Synthetic journeys: valid events, and the funnel the default rules make of them."""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from schemas.contracts import load_schema, schema_names
from scoring.engine import BatchResult, InputRecord, Scorer
from scoring.rules import Rules
from scoring.state import LeadState, Stage, decode_state, encode_state
from streams.synthetic import BASE_URL, FREE_MAIL, PERSONA_WEIGHTS, Journey, history, journey, lead_id_for
from tests.journeys import DAY_MS, T0

pytestmark = pytest.mark.unit

SEED = 20260101
LEADS = 2_000
SPREAD_MS = 60 * DAY_MS
NEVER_QUALIFY = ("student", "job_seeker", "lurker")


@dataclass
class Scored:
    """2,000 journeys scored in one batch with the default rules."""

    journeys: list[Journey]
    result: BatchResult
    now_ms: int
    events: int

    def qualified(self) -> Counter[str]:
        personas = {j.lead_id: j.persona for j in self.journeys}
        return Counter(personas[m.lead_id] for m in {m.lead_id: m for m in self.result.mql}.values())

    def personas(self) -> Counter[str]:
        return Counter(j.persona for j in self.journeys)


def _records(journeys: list[Journey]) -> list[InputRecord]:
    events = sorted((e for j in journeys for e in j.events), key=lambda e: e.occurred_at)
    return [
        InputRecord(e.kind, e.kind.value, 0, offset, e.lead_id.encode(), orjson.dumps(e.payload))
        for offset, e in enumerate(events)
    ]


@pytest.fixture(scope="module")
def scored(default_rules: Rules) -> Scored:
    journeys = history(SEED, LEADS, T0, SPREAD_MS)
    records = _records(journeys)
    last = max(e.occurred_at for j in journeys for e in j.events)
    now_ms = last + 1
    result = Scorer(default_rules).process_batch(records, {}, now_ms)
    return Scored(journeys, result, now_ms, len(records))


# -- the events ------------------------------------------------------------------------------------


def test_every_event_decodes_and_is_scored(scored: Scored) -> None:
    assert scored.events > 10 * LEADS
    assert scored.result.dead_letters == []
    assert scored.result.duplicates == 0
    assert scored.result.scored == scored.events
    assert len(scored.result.states) == LEADS


def test_every_event_matches_its_contract_schema(scored: Scored) -> None:
    resources = []
    for name in schema_names():
        schema = load_schema(name)
        resources.append((schema["$id"], Resource.from_contents(schema, default_specification=DRAFT202012)))
    registry: Registry[Any] = Registry().with_resources(resources)
    validators = {name: Draft202012Validator(load_schema(name), registry=registry) for name in schema_names()}
    errors = [
        f"{e.payload['event_id']}: {error.message}"
        for j in scored.journeys[:300]
        for e in j.events
        for error in validators[e.kind.value].iter_errors(e.payload)
    ]
    assert errors == []


def test_journeys_are_well_formed(scored: Scored) -> None:
    ids = [e.payload["event_id"] for j in scored.journeys for e in j.events]
    assert len(ids) == len(set(ids))
    assert len({j.lead_id for j in scored.journeys}) == LEADS
    for j in scored.journeys:
        times = [e.occurred_at for e in j.events]
        assert times == sorted(times)
        assert T0 <= times[0] < T0 + SPREAD_MS
        assert all(e.lead_id == j.lead_id == e.payload["lead_id"] for e in j.events)
        urls = [e.payload["url"] for e in j.events if "url" in e.payload]
        assert all(url.startswith(BASE_URL + "/") for url in urls)
        assert re.fullmatch(r"lead-[0-9a-f]{6}", j.lead_id)


def test_emails_are_synthetic(scored: Scored) -> None:
    emails = [e.payload["email"] for j in scored.journeys for e in j.events if "email" in e.payload]
    assert len(emails) > LEADS // 4
    pattern = re.compile(r"user\d+@(?:[a-z]+-\d+\.example|" + "|".join(map(re.escape, FREE_MAIL)) + ")")
    assert [email for email in emails if not pattern.fullmatch(email)] == []


def test_persona_mix_follows_the_weights(scored: Scored) -> None:
    total = sum(PERSONA_WEIGHTS.values())
    counts = scored.personas()
    for persona, weight in PERSONA_WEIGHTS.items():
        assert abs(counts[persona] / LEADS - weight / total) < 0.03, persona


def test_lurkers_have_no_profile_and_few_events(scored: Scored) -> None:
    lurkers = [j for j in scored.journeys if j.persona == "lurker"]
    assert lurkers
    assert all(1 <= len(j.events) <= 3 for j in lurkers)
    assert all(e.kind.value == "web_visit" for j in lurkers for e in j.events)


def test_students_use_free_mail_and_say_so(scored: Scored) -> None:
    profiles = [e.payload for j in scored.journeys if j.persona == "student" for e in j.events if "email" in e.payload]
    assert profiles
    assert all("Student" in p["job_title"] and p["email"].split("@")[1] in FREE_MAIL for p in profiles)


# -- the funnel under the default rules -------------------------------------------------------------


def test_students_job_seekers_and_lurkers_never_qualify(scored: Scored) -> None:
    qualified = scored.qualified()
    assert {p: qualified[p] for p in NEVER_QUALIFY} == dict.fromkeys(NEVER_QUALIFY, 0)


def test_researchers_basically_never_qualify(scored: Scored) -> None:
    assert scored.qualified()["researcher"] <= 0.01 * scored.personas()["researcher"]


def test_most_champions_qualify(scored: Scored) -> None:
    assert scored.qualified()["champion"] >= 0.70 * scored.personas()["champion"]


def test_evaluators_sometimes_qualify(scored: Scored) -> None:
    share = scored.qualified()["evaluator"] / scored.personas()["evaluator"]
    assert 0.1 <= share <= 0.8


def test_overall_mql_share_is_plausible(scored: Scored) -> None:
    share = len({m.lead_id for m in scored.result.mql}) / LEADS
    assert 0.04 <= share <= 0.25


def test_qualified_leads_decay_back_to_nurture(scored: Scored, default_rules: Rules) -> None:
    states = scored.result.states
    qualified = {lead for lead, state in states.items() if state.stage is Stage.MQL}
    assert qualified
    # Copies, so that expire_due does not change the module's shared states.
    copies = {lead: _copy(states[lead]) for lead in sorted(qualified)}
    later = scored.now_ms + 120 * DAY_MS
    result = Scorer(default_rules).expire_due(copies.values(), later)
    # Fit is capped at 35 and engagement at 65; without new events engagement falls below 5
    # within log2(65 / 5) half-lives of 30 days (about 111 days), so every MQL is back by then.
    assert {n.lead_id for n in result.nurture} == qualified
    assert all(n.reason == "decay" and n.score.score < default_rules.nurture_threshold for n in result.nurture)
    for n in result.nurture:
        mql_at = states[n.lead_id].mql_at
        assert mql_at is not None
        assert mql_at < n.at <= later
        assert copies[n.lead_id].stage is Stage.NURTURE


def _copy(state: LeadState) -> LeadState:
    return decode_state(encode_state(state))


# -- determinism -----------------------------------------------------------------------------------------


def test_same_seed_same_output_other_seed_other_output() -> None:
    first = history(7, 200, T0, SPREAD_MS)
    assert first == history(7, 200, T0, SPREAD_MS)
    assert first != history(8, 200, T0, SPREAD_MS)


def test_journey_depends_only_on_its_random_state() -> None:
    one = journey(random.Random(42), "lead-x", T0)
    two = journey(random.Random(42), "lead-x", T0 + DAY_MS)
    shifted = [e.occurred_at - DAY_MS for e in two.events]
    assert one.persona == two.persona
    assert [e.occurred_at for e in one.events] == shifted


def test_lead_ids_are_distinct_across_a_large_range() -> None:
    ids = {lead_id_for(n, salt=12345) for n in range(100_000)}
    assert len(ids) == 100_000
