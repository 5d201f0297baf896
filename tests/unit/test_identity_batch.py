"""A batch of lead-identities records through the identity rules: the same outcome as the records
one by one, later records of a key seeing what earlier ones left, every bad record rejected."""

from collections.abc import Sequence

import orjson

from scoring.identity import IdentityState, encode_identity_state
from scoring.identity_batch import Rejected, apply_identity_batch
from tests.journeys import T0
from tests.unit.test_identity import CONFIG, Key, email_event_msg, identify_msg, visit_msg

Record = tuple[bytes | None, bytes | None]


def one_by_one(records: Sequence[Record]) -> tuple[dict[bytes, bytes], list[tuple[str, str]]]:
    """States and released (lead, event id) pairs when the records are applied one at a time."""
    table, released = Key(), []
    for key, value in records:
        assert key is not None
        assert value is not None
        result = table.apply((key, value))
        released += [(f.lead_id, f.event_id) for f in result.forwards]
    return {k.encode(): encode_identity_state(s) for k, s in table.states.items()}, released


def test_a_batch_ends_where_the_records_one_by_one_end() -> None:
    records: list[Record] = [
        visit_msg("v1", T0 - 3000),
        visit_msg("v2", T0 - 2000, anon="a2"),
        email_event_msg("e1", T0 - 1500),
        visit_msg("v3", T0 - 1000),
        identify_msg("L1"),
        visit_msg("v4", T0 - 500),
        identify_msg("L2", anon="a2"),
        visit_msg("v2", T0 - 2000, anon="a2"),  # a redelivery after the release: forwarded again, same id
    ]
    batch = apply_identity_batch(records, {}, T0, CONFIG)
    states, released = one_by_one(records)
    assert {key: encode_identity_state(state) for key, state in batch.states.items()} == states
    assert [(f.lead_id, f.event_id) for f in batch.forwards] == released
    assert released == [("L1", "v1"), ("L1", "v3"), ("L1", "v4"), ("L2", "v2"), ("L2", "v2")]
    assert batch.counts == {"parked": 4, "forwarded": 5}
    assert batch.links == {"linked": 2}
    assert batch.rejected == []


def test_known_states_are_the_starting_point() -> None:
    known = {b"anon:a1": IdentityState("anon:a1", lead_id="L7", linked_at=T0 - 10)}
    batch = apply_identity_batch([visit_msg("v1", T0)], known, T0, CONFIG)
    assert [(f.lead_id, f.event_id) for f in batch.forwards] == [("L7", "v1")]


def test_bad_records_and_conflicts_are_rejected_with_their_index_and_reason() -> None:
    records: list[Record] = [
        (None, b"{}"),
        identify_msg("L1"),
        (b"anon:a1", b"not json"),
        identify_msg("L2"),  # the first link stands
        (b"email:x", orjson.dumps({"type": "teleport"})),
    ]
    batch = apply_identity_batch(records, {}, T0, CONFIG)
    assert [(r.index, r.reason) for r in batch.rejected] == [
        (0, "missing_key"),
        (2, "invalid_json"),
        (3, "identity_conflict"),
        (4, "invalid_value"),
    ]
    assert isinstance(batch.rejected[2], Rejected)
    assert batch.states[b"anon:a1"].lead_id == "L1"
    assert batch.links == {"linked": 1, "conflict": 1}
