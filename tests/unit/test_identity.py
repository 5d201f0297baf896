"""Identity stitching, pure: anonymous visits and e-mail events parked per key, released once to
their lead, expired past the window, bounded per key; the first link wins."""

from typing import Any

import orjson
import pytest

from scoring.engine import InputRecord, Scorer
from scoring.errors import InvalidEvent
from scoring.events import EventKind, decode_event
from scoring.identity import (
    MAX_PARKED_BYTES,
    IdentityConfig,
    IdentityState,
    MessageType,
    apply_identity,
    decode_identity,
    decode_identity_state,
    email_hash,
    email_known_message,
    encode_identity_state,
    visit_message,
)
from tests.journeys import DAY_MS, T0

CONFIG = IdentityConfig(window_ms=30 * DAY_MS, max_parked=5)
HASH = email_hash("Jane.Doe@example.com")


def raw_visit(eid: str, at: int, anon: str = "a1", **extra: Any) -> bytes:
    return orjson.dumps({"event_id": eid, "anonymous_id": anon, "occurred_at": at, "url": "/pricing", **extra})


def visit_msg(eid: str, at: int, anon: str = "a1") -> tuple[bytes, bytes]:
    return f"anon:{anon}".encode(), visit_message(anon, raw_visit(eid, at, anon))


def identify_msg(lead: str, anon: str = "a1", at: int = T0) -> tuple[bytes, bytes]:
    value = {"type": "identify", "event_id": f"id-{lead}", "anonymous_id": anon, "lead_id": lead, "occurred_at": at}
    return f"anon:{anon}".encode(), orjson.dumps(value)


def email_event_msg(eid: str, at: int, hashed: str = HASH) -> tuple[bytes, bytes]:
    event = {"event_id": eid, "occurred_at": at, "action": "click", "campaign_id": "c1", "url": "/pricing"}
    value = {"type": "email_event", "email_hash": hashed, "event": event}
    return f"email:{hashed}".encode(), orjson.dumps(value)


class Key:
    """The identity agent's table for one test: apply messages in order, as the agent does."""

    def __init__(self) -> None:
        self.states: dict[str, IdentityState] = {}

    def apply(self, message: tuple[bytes, bytes], now_ms: int = T0, config: IdentityConfig = CONFIG) -> Any:
        decoded = decode_identity(*message)
        result = apply_identity(self.states.get(decoded.key), decoded, now_ms, config)
        # Through the table encoding, as in the worker.
        self.states[decoded.key] = decode_identity_state(encode_identity_state(result.state))
        return result


def forwarded(result: Any) -> list[tuple[EventKind, str, str, dict[str, Any]]]:
    return [(f.kind, f.lead_id, f.event_id, orjson.loads(f.value)) for f in result.forwards]


# -- parking, linking and releasing -------------------------------------------------------------


def test_visits_are_parked_until_identify_then_released_once_to_the_lead_with_their_own_ids() -> None:
    table = Key()
    for i in range(3):
        result = table.apply(visit_msg(f"v{i}", T0 - (3 - i) * 1000))
        assert result.forwards == []
        assert result.counts == {"parked": 1}
    result = table.apply(identify_msg("L1"))
    assert result.link == "linked"
    released = forwarded(result)
    assert [(kind, lead, eid) for kind, lead, eid, _ in released] == [
        (EventKind.WEB_VISIT, "L1", "v0"),
        (EventKind.WEB_VISIT, "L1", "v1"),
        (EventKind.WEB_VISIT, "L1", "v2"),
    ]
    assert result.counts == {"forwarded": 3}
    for _, _, eid, value in released:
        assert value["lead_id"] == "L1"
        assert value["anonymous_id"] == "a1"
        assert value["url"] == "/pricing"
        # A released event decodes as an ordinary visit of the lead on its own topic.
        decoded = decode_event(EventKind.WEB_VISIT, b"L1", orjson.dumps(value))
        assert (decoded.lead_id, decoded.event_id) == ("L1", eid)
    again = table.apply(identify_msg("L1"))
    assert again.link == "repeated"
    assert again.forwards == []


def test_a_visit_under_a_linked_key_is_forwarded_directly() -> None:
    table = Key()
    table.apply(identify_msg("L1"))
    result = table.apply(visit_msg("v9", T0))
    assert [(lead, eid) for _, lead, eid, _ in forwarded(result)] == [("L1", "v9")]
    assert result.counts == {"forwarded": 1}
    assert table.states["anon:a1"].parked == []


def test_the_same_event_parked_twice_is_released_once() -> None:
    table = Key()
    table.apply(visit_msg("v1", T0))
    assert table.apply(visit_msg("v1", T0)).counts == {"duplicate": 1}
    assert [eid for _, _, eid, _ in forwarded(table.apply(identify_msg("L1")))] == ["v1"]


def test_an_email_event_waits_for_a_profile_with_that_address() -> None:
    table = Key()
    assert table.apply(email_event_msg("sg-1", T0)).counts == {"parked": 1}
    known = (f"email:{HASH}".encode(), email_known_message(HASH, "L7", T0))
    result = table.apply(known)
    assert result.link == "linked"
    ((kind, lead, eid, value),) = forwarded(result)
    assert (kind, lead, eid) == (EventKind.EMAIL_EVENT, "L7", "sg-1")
    assert decode_event(EventKind.EMAIL_EVENT, b"L7", orjson.dumps(value)).attrs["action"] == "click"


# -- the window and the bounds --------------------------------------------------------------------


def test_parked_events_past_the_window_are_dropped_and_counted() -> None:
    table = Key()
    table.apply(visit_msg("old", T0 - 20 * DAY_MS), now_ms=T0)
    table.apply(visit_msg("new", T0 - 1 * DAY_MS), now_ms=T0)
    assert table.apply(visit_msg("ancient", T0 - 31 * DAY_MS), now_ms=T0).counts == {"expired": 1}
    later = T0 + 15 * DAY_MS  # "old" is now 35 days old, "new" 16
    result = table.apply(identify_msg("L1", at=later), now_ms=later)
    assert result.counts == {"expired": 1, "forwarded": 1}
    assert [eid for _, _, eid, _ in forwarded(result)] == ["new"]


def test_parking_is_bounded_per_key_and_the_oldest_go_first() -> None:
    table = Key()
    for i in range(7):
        table.apply(visit_msg(f"v{i}", T0 - 10_000 + i))
    assert [p.event_id for p in table.states["anon:a1"].parked] == ["v2", "v3", "v4", "v5", "v6"]
    assert table.apply(visit_msg("v7", T0)).counts == {"parked": 1, "overflow": 1}


def test_parking_is_bounded_in_bytes() -> None:
    table = Key()
    big = "x" * 60_000
    config = IdentityConfig(window_ms=30 * DAY_MS, max_parked=1000)
    overflow = 0
    for i in range(12):
        message = (b"anon:a1", visit_message("a1", raw_visit(f"v{i}", T0 - 100 + i, title=big)))
        overflow += table.apply(message, config=config).counts.get("overflow", 0)
    parked = table.states["anon:a1"].parked
    assert sum(p.size for p in parked) <= MAX_PARKED_BYTES
    assert overflow == 12 - len(parked) > 0
    assert parked[-1].event_id == "v11"


# -- conflicts ------------------------------------------------------------------------------------


def test_the_first_link_wins_and_a_relink_is_a_conflict() -> None:
    table = Key()
    table.apply(visit_msg("v1", T0))
    table.apply(identify_msg("L1"))
    result = table.apply(identify_msg("L2"))
    assert result.link == "conflict"
    assert result.conflict is not None
    assert "L1" not in result.conflict  # no identifier in the dead letter's detail
    assert result.forwards == []
    assert table.states["anon:a1"].lead_id == "L1"
    assert [lead for _, lead, _, _ in forwarded(table.apply(visit_msg("v2", T0)))] == ["L1"]


# -- decoding ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, b"{}", "missing_key"),
        (b"anon:a1", None, "missing_field"),
        (b"anon:a1", b"{not json", "invalid_json"),
        (b"anon:a1", b"[1]", "not_an_object"),
        (b"\xff", b"{}", "invalid_utf8"),
        (b"anon:a1", b'{"anonymous_id": "a1"}', "missing_field"),
        (b"anon:a1", b'{"type": "merge"}', "invalid_value"),
        (b"anon:a1", b'{"type": "identify", "event_id": "e", "anonymous_id": "a1", "occurred_at": 1}', "missing_field"),
        (b"anon:a2", identify_msg("L1")[1], "key_mismatch"),
        (b"a1", identify_msg("L1")[1], "key_mismatch"),
        (
            b"anon:a1",
            orjson.dumps({"type": "identify", "event_id": "e", "anonymous_id": "a1", "lead_id": 7, "occurred_at": 1}),
            "wrong_type",
        ),
        (b"anon:a1", orjson.dumps({"type": "visit", "anonymous_id": "a1"}), "missing_field"),
        (b"anon:a1", orjson.dumps({"type": "visit", "anonymous_id": "a1", "event": [1]}), "wrong_type"),
        (b"anon:a1", visit_message("a1", raw_visit("v", T0, lead_id="L1")), "invalid_value"),
        (b"anon:a1", visit_message("a1", raw_visit("v", T0, anon="a2")), "invalid_value"),
        (
            b"anon:a1",
            visit_message("a1", orjson.dumps({"event_id": "v", "anonymous_id": "a1", "occurred_at": 1})),
            "missing_field",
        ),
        (
            b"email:abc",
            orjson.dumps({"type": "email_known", "email_hash": "abc", "lead_id": "L", "occurred_at": 1}),
            "invalid_value",
        ),
        (
            f"email:{HASH}".encode(),
            orjson.dumps(
                {
                    "type": "email_event",
                    "email_hash": HASH,
                    "event": {"event_id": "e", "occurred_at": 1, "action": "bounce", "campaign_id": "c"},
                }
            ),
            "invalid_value",
        ),
        (b"anon:a1", b" " * 80_000, "too_large"),
    ],
)
def test_malformed_identity_messages_are_refused_with_a_reason(
    key: bytes | None, value: bytes | None, reason: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode_identity(key, value)
    assert caught.value.reason == reason


def test_decoded_messages() -> None:
    identify = decode_identity(*identify_msg("L1", at=T0))
    assert (identify.type, identify.key, identify.lead_id, identify.occurred_at) == (
        MessageType.IDENTIFY,
        "anon:a1",
        "L1",
        T0,
    )
    visit = decode_identity(*visit_msg("v1", T0 + 5))
    assert visit.type is MessageType.VISIT
    assert visit.parked is not None
    assert (visit.parked.event_id, visit.occurred_at) == ("v1", T0 + 5)
    assert orjson.loads(email_known_message(HASH, "L1", T0))["occurred_at"] == "2026-01-01T00:00:00.000Z"


def test_email_hash_is_a_stable_pseudonym() -> None:
    assert email_hash(" Jane.Doe@EXAMPLE.com ") == HASH
    assert email_hash("john@example.com") != HASH
    assert "jane" not in HASH
    assert len(HASH) == 64


# -- the scoring core's side ------------------------------------------------------------------------


def test_the_scorer_passes_anonymous_visits_out_unscored(scorer: Scorer) -> None:
    anonymous = InputRecord(EventKind.WEB_VISIT, "web-visits", 0, 1, b"a1", raw_visit("v1", T0))
    mismatched = InputRecord(EventKind.WEB_VISIT, "web-visits", 0, 2, b"a2", raw_visit("v2", T0))
    no_id = InputRecord(
        EventKind.WEB_VISIT, "web-visits", 0, 3, b"a1", orjson.dumps({"event_id": "v3", "occurred_at": T0, "url": "/"})
    )
    result = scorer.process_batch([anonymous, mismatched, no_id], {}, T0)
    assert result.anonymous == [anonymous]
    assert result.states == {}
    assert result.scored == 0
    assert [(d.reason, d.offset) for d in result.dead_letters] == [("key_mismatch", 2), ("missing_field", 3)]
    message = orjson.loads(visit_message("a1", anonymous.value or b""))
    assert message == {"type": "visit", "anonymous_id": "a1", "event": orjson.loads(raw_visit("v1", T0))}


def test_a_profile_with_an_email_gives_its_pseudonym_and_never_keeps_the_address(scorer: Scorer) -> None:
    value = orjson.dumps({"event_id": "p1", "lead_id": "L1", "occurred_at": T0, "email": "Jane.Doe@example.com"})
    plain = orjson.dumps({"event_id": "p2", "lead_id": "L2", "occurred_at": T0, "country": "DE"})
    records = [
        InputRecord(EventKind.LEAD_PROFILE, "lead-profiles", 0, 1, b"L1", value),
        InputRecord(EventKind.LEAD_PROFILE, "lead-profiles", 0, 2, b"L2", plain),
        InputRecord(EventKind.LEAD_PROFILE, "lead-profiles", 0, 3, b"L1", value),  # a duplicate: no second link
    ]
    result = scorer.process_batch(records, {}, T0)
    assert result.email_links == [(HASH, "L1", T0)]
    assert result.states["L1"].profile["email_domain"] == "example.com"
    assert "jane" not in repr(result.states["L1"]).lower()
