"""Decoding inbound records: every malformed record gets a precise reason."""

import orjson
import pytest

from scoring.errors import InvalidEvent
from scoring.events import EventKind, decode_event
from tests.journeys import T0

GOOD = {"event_id": "e1", "lead_id": "L1", "occurred_at": "2026-01-01T00:00:00Z", "url": "/pricing?x=1"}


def decode(value: object, key: bytes | None = b"L1", kind: EventKind = EventKind.WEB_VISIT) -> object:
    raw = value if isinstance(value, bytes) or value is None else orjson.dumps(value)
    return decode_event(kind, key, raw)


def test_a_good_web_visit_decodes_with_its_path() -> None:
    event = decode(GOOD)
    assert event.occurred_at == T0  # type: ignore[attr-defined]
    assert event.attrs["path"] == "/pricing"  # type: ignore[attr-defined]


def test_epoch_milliseconds_and_zoned_times_are_the_same_instant() -> None:
    zoned = decode({**GOOD, "occurred_at": "2026-01-01T01:00:00+01:00"})
    epoch = decode({**GOOD, "occurred_at": T0})
    assert zoned.occurred_at == epoch.occurred_at == T0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("value", "key", "reason"),
    [
        (b'{"event_id": "e1", "lead_id": ', b"L1", "invalid_json"),
        (b"\xff\xfe not utf-8", b"L1", "invalid_utf8"),
        (b"[1, 2]", b"L1", "not_an_object"),
        (None, b"L1", "missing_field"),
        ({k: v for k, v in GOOD.items() if k != "lead_id"}, b"L1", "missing_field"),
        (GOOD, None, "missing_key"),
        (GOOD, b"L2", "key_mismatch"),
        ({**GOOD, "lead_id": 17}, b"17", "wrong_type"),
        ({**GOOD, "occurred_at": "2026-01-01T00:00:00"}, b"L1", "invalid_value"),
        ({**GOOD, "occurred_at": 1.5}, b"L1", "wrong_type"),
        ({**GOOD, "occurred_at": -5}, b"L1", "timestamp_out_of_range"),
        ({**GOOD, "occurred_at": True}, b"L1", "wrong_type"),
        ({**GOOD, "url": 42}, b"L1", "wrong_type"),
        ({**GOOD, "url": "pricing"}, b"L1", "invalid_value"),
        ({**GOOD, "event_id": ""}, b"L1", "invalid_value"),
        (b'{"x": "' + b"a" * 70_000 + b'"}', b"L1", "too_large"),
        (b"[" * 5000 + b"]" * 5000, b"L1", "invalid_json"),
    ],
)
def test_malformed_records_have_a_reason(value: object, key: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidEvent) as error:
        decode(value, key)
    assert error.value.reason == reason
    assert error.value.detail


def test_enumerated_fields_are_checked() -> None:
    with pytest.raises(InvalidEvent, match="must be one of click, open"):
        decode({**GOOD, "action": "forward", "campaign_id": "c"}, kind=EventKind.EMAIL_EVENT)


def test_company_size_must_be_an_integer() -> None:
    with pytest.raises(InvalidEvent) as error:
        decode({**GOOD, "company_size": "500"}, kind=EventKind.LEAD_PROFILE)
    assert error.value.reason == "wrong_type"


def test_error_details_never_contain_the_email_address() -> None:
    with pytest.raises(InvalidEvent) as error:
        decode({**GOOD, "email": "jane.doe-at-example.org"}, kind=EventKind.LEAD_PROFILE)
    assert "jane" not in error.value.detail
