"""The identity sweep, pure: which keys of the identity table outlived the window (deleted), which
keep only their events within it (trimmed), and the sweep message's checks."""

import orjson
import pytest

from collector.validation import validator
from scoring.errors import InvalidEvent
from scoring.identity import (
    IdentityConfig,
    IdentityState,
    apply_identity,
    decode_identity,
    decode_identity_state,
    encode_identity_state,
    visit_message,
)
from scoring.identity_sweep import SWEEP_KEY, decode_sweep, sweep_message, sweep_states
from tests.journeys import DAY_MS, T0

pytestmark = pytest.mark.unit

WINDOW = 30 * DAY_MS
CONFIG = IdentityConfig(window_ms=WINDOW, max_parked=10)
NOW = T0 + 100 * DAY_MS
HORIZON = NOW - WINDOW  # an event at the horizon is still within the window


def parked_key(anon: str, *occurred: int) -> tuple[bytes, bytes]:
    """The table entry of an unlinked anonymous id whose visits happened at ``occurred``,
    built through the identity rules as the agent builds it (each parked when it happened)."""
    state: IdentityState | None = None
    for i, at in enumerate(occurred):
        visit = orjson.dumps({"event_id": f"{anon}-{i}", "anonymous_id": anon, "occurred_at": at, "url": "/pricing"})
        message = decode_identity(f"anon:{anon}".encode(), visit_message(anon, visit))
        state = apply_identity(state, message, at, CONFIG).state
    assert state is not None
    assert len(state.parked) == len(occurred)
    return f"anon:{anon}".encode(), encode_identity_state(state)


def linked_key(anon: str, lead: str, at: int) -> tuple[bytes, bytes]:
    return f"anon:{anon}".encode(), encode_identity_state(IdentityState(f"anon:{anon}", lead, at))


def test_an_unlinked_key_whose_newest_event_outlived_the_window_is_deleted_and_a_fresh_one_stays() -> None:
    old = parked_key("old", HORIZON - 5 * DAY_MS, HORIZON - 1)
    fresh = parked_key("fresh", NOW - 1000)
    sweep = sweep_states([old, fresh], NOW, CONFIG)
    assert sweep.deleted == [b"anon:old"]
    assert sweep.trimmed == {}
    assert sweep.expired == 2
    assert sweep.unreadable == 0


def test_an_event_at_the_horizon_is_within_the_window_as_in_the_identity_rules() -> None:
    at_horizon = parked_key("edge", HORIZON)
    assert sweep_states([at_horizon], NOW, CONFIG).deleted == []
    assert sweep_states([at_horizon], NOW + 1, CONFIG).deleted == [b"anon:edge"]


def test_a_key_with_old_and_fresh_events_keeps_only_the_fresh_ones() -> None:
    mixed = parked_key("mixed", HORIZON - DAY_MS, HORIZON - 1, NOW - DAY_MS)
    sweep = sweep_states([mixed], NOW, CONFIG)
    assert sweep.deleted == []
    assert sweep.expired == 2
    state = sweep.trimmed[b"anon:mixed"]
    assert [(p.event_id, p.occurred_at) for p in state.parked] == [("mixed-2", NOW - DAY_MS)]
    # The trimmed state goes back through the table encoding unchanged otherwise.
    assert decode_identity_state(encode_identity_state(state)) == state


def test_linked_keys_stay_however_old_their_link() -> None:
    linked = linked_key("known", "L1", T0)
    sweep = sweep_states([linked], NOW + 365 * DAY_MS, CONFIG)
    assert (sweep.deleted, sweep.trimmed, sweep.expired) == ([], {}, 0)


def test_an_unlinked_key_with_nothing_parked_is_deleted() -> None:
    empty = (b"anon:empty", encode_identity_state(IdentityState("anon:empty")))
    assert sweep_states([empty], NOW, CONFIG).deleted == [b"anon:empty"]


def test_a_value_that_is_not_an_identity_state_is_counted_and_left_alone() -> None:
    fresh = parked_key("fresh", NOW)
    items = [(b"anon:x", b"not json"), (b"anon:y", b'{"v": 1}'), fresh]
    sweep = sweep_states(items, NOW, CONFIG)
    assert sweep.unreadable == 2
    assert (sweep.deleted, sweep.trimmed) == ([], {})


def test_the_window_is_the_configured_one() -> None:
    entry = parked_key("short", NOW - 2 * DAY_MS)
    assert sweep_states([entry], NOW, CONFIG).deleted == []
    assert sweep_states([entry], NOW, IdentityConfig(window_ms=DAY_MS)).deleted == [b"anon:short"]


def test_an_identify_after_a_trim_releases_only_the_events_within_the_window() -> None:
    mixed = parked_key("m", HORIZON - DAY_MS, NOW - DAY_MS)
    state = sweep_states([mixed], NOW, CONFIG).trimmed[b"anon:m"]
    identify = {"type": "identify", "event_id": "i", "anonymous_id": "m", "lead_id": "L9", "occurred_at": NOW}
    result = apply_identity(state, decode_identity(b"anon:m", orjson.dumps(identify)), NOW, CONFIG)
    assert [f.event_id for f in result.forwards] == ["m-1"]


def test_the_sweep_message_is_accepted_for_its_partition_and_valid_by_the_contract() -> None:
    value = sweep_message(3)
    decode_sweep(value, 3)
    assert list(validator("lead_identity").iter_errors(orjson.loads(value))) == []
    assert SWEEP_KEY == b"sweep"


@pytest.mark.parametrize(
    ("value", "reason", "detail"),
    [
        (None, "missing_field", "no value"),
        (b"{", "invalid_json", "not JSON"),
        (b"[1]", "not_an_object", "list"),
        (b'{"type": "visit", "partition": 3}', "invalid_value", "type 'sweep'"),
        (b'{"type": "sweep"}', "wrong_type", "'partition'"),
        (b'{"type": "sweep", "partition": true}', "wrong_type", "'partition'"),
        (b'{"type": "sweep", "partition": "3"}', "wrong_type", "'partition'"),
        (b'{"type": "sweep", "partition": 2}', "invalid_value", "partition 2, not 3"),
    ],
)
def test_a_bad_sweep_message_is_refused_with_its_reason(value: bytes | None, reason: str, detail: str) -> None:
    with pytest.raises(InvalidEvent) as raised:
        decode_sweep(value, 3)
    assert raised.value.reason == reason
    assert detail in raised.value.detail
