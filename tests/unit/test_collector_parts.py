"""The collector's pure parts: lead tokens, bots and prefetches, validation of API events (one test
per reason), write keys, the rate limiter, settings, and the SendGrid mapping and signature (with
the signed example that SendGrid's own helper library tests against)."""

import json
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from collector.auth import WriteKeys
from collector.bots import bot_kind
from collector.pixel import visit_event
from collector.ratelimit import RateLimiter
from collector.sendgrid import IdentityRecord, Ignored, load_public_key, map_event, verify_signature
from collector.tokens import sign_lead_token, verify_lead_token
from collector.validation import Accepted, Rejected, validate_event, validator
from scoring.events import EventKind
from scoring.identity import email_hash
from streams.settings import SettingsError, settings_from_env

pytestmark = pytest.mark.unit

CHROME = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"

# sendgrid/sendgrid-python, test/unit/test_eventwebhook.py: the key, signature, timestamp and payload
# its EventWebhook.verify_signature is tested against.
SG_PUBLIC_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE83T4O/n84iotIvIW4mdBgQ/7dAfSmpqIM8kF9mN1flpV"
    "KS3GRqe62gw+2fNNRaINXvVpiglSI8eNEc6wEA3F+g=="
)
SG_SIGNATURE = "MEUCIGHQVtGj+Y3LkG9fLcxf3qfI10QysgDWmMOVmxG0u6ZUAiEAyBiXDWzM+uOe5W0JuG+luQAbPIqHh89M15TluLtEZtM="
SG_TIMESTAMP = "1600112502"
SG_PAYLOAD = (
    json.dumps(
        [
            {
                "email": "hello@world.com",
                "event": "dropped",
                "reason": "Bounced Address",
                "sg_event_id": "ZHJvcC0xMDk5NDkxOS1MUnpYbF9OSFN0T0doUTRrb2ZTbV9BLTA",
                "sg_message_id": "LRzXl_NHStOGhQ4kofSm_A.filterdrecv-p3mdw1-756b745b58-kmzbl-18-5F5FC76C-9.0",
                "smtp-id": "<LRzXl_NHStOGhQ4kofSm_A@ismtpd0039p1iad1.sendgrid.net>",
                "timestamp": 1600112492,
            }
        ],
        sort_keys=True,
        separators=(",", ":"),
    )
    + "\r\n"
).encode()
SG_OTHER_KEY = (
    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEqTxd43gyp8IOEto2LdIfjRQrIbsd4SXZkLW6jDutdhXS"
    "JCWHw8REntlo7aNDthvj+y7GjUuFDb/R1NGe1OPzpA=="
)
SG_OTHER_SIGNATURE = "MEUCIQCtIHJeH93Y+qpYeWrySphQgpNGNr/U+UyUlBkU6n7RAwIgJTz2C+8a8xonZGi6BpSzoQsbVRamr2nlxFDWYNH3j/0="


# -- lead tokens ---------------------------------------------------------------------------------


def test_token_round_trip_and_forgery() -> None:
    token = sign_lead_token("lead-42", "s3cret")
    assert verify_lead_token(token, "s3cret") == "lead-42"
    assert verify_lead_token(token, "other") is None  # another secret
    prefix, _, mac = token.rpartition(".")
    forged = sign_lead_token("lead-43", "guess").rpartition(".")[0] + "." + mac  # another lead, same MAC
    assert verify_lead_token(forged, "s3cret") is None
    assert verify_lead_token(prefix + "." + mac[:-2] + "AA", "s3cret") is None
    assert verify_lead_token("lead-42", "s3cret") is None  # a bare lead id is no token
    assert verify_lead_token("v1.!!.??", "s3cret") is None
    assert verify_lead_token(token, "") is None  # no secret configured: nothing verifies


def test_token_is_url_safe_and_unicode_ids_work() -> None:
    token = sign_lead_token("lëad/ü?&=", "k")
    assert all(c.isalnum() or c in "-_." for c in token)
    assert verify_lead_token(token, "k") == "lëad/ü?&="
    with pytest.raises(ValueError, match="secret"):
        sign_lead_token("x", "")


# -- bots ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"User-Agent": CHROME}, None),
        ({"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"}, "bot"),
        ({"User-Agent": "Mozilla/5.0 (compatible; bingbot/2.0)"}, "bot"),
        ({"User-Agent": "curl/8.5.0"}, "bot"),
        ({"User-Agent": "python-requests/2.32"}, "bot"),
        ({"User-Agent": CHROME.replace("Chrome/", "HeadlessChrome/")}, "bot"),
        ({"User-Agent": "facebookexternalhit/1.1"}, "bot"),
        ({}, "no_user_agent"),
        ({"User-Agent": CHROME, "Sec-Purpose": "prefetch;prerender"}, "prefetch"),
        ({"User-Agent": CHROME, "Purpose": "prefetch"}, "prefetch"),
        ({"User-Agent": CHROME, "X-Moz": "prefetch"}, "prefetch"),
    ],
)
def test_bot_kind(headers: dict[str, str], expected: str | None) -> None:
    assert bot_kind(headers) == expected


# -- the pixel's visit ---------------------------------------------------------------------------


def test_visit_from_u_with_utm_and_deterministic_id() -> None:
    query = {"u": "https://www.example.com/pricing?utm_source=news&utm_medium=email", "r": "https://g.co/", "e": "pv1"}
    first = visit_event(query, "", 1_700_000_000_000, lead_id="L1", anonymous_id=None)
    again = visit_event(query, "", 1_700_000_009_999, lead_id="L1", anonymous_id=None)
    assert first is not None
    assert again is not None
    assert first["event_id"] == again["event_id"]  # same page view id: a retried request keeps its id
    assert first["utm_source"] == "news"
    assert first["utm_medium"] == "email"
    assert first["referrer"] == "https://g.co/"
    assert first["occurred_at"] == "2023-11-14T22:13:20.000Z"
    assert first["lead_id"] == "L1"
    other = visit_event(query, "", 1_700_000_000_000, lead_id="L2", anonymous_id=None)
    assert other is not None
    assert other["event_id"] != first["event_id"]
    Draft202012Validator.check_schema(validator("web_visit").schema)
    assert not list(validator("web_visit").iter_errors(first))


def test_anonymous_visit_from_referer_and_no_url() -> None:
    event = visit_event({}, "https://www.example.com/docs", 5, lead_id=None, anonymous_id="a_1")
    assert event is not None
    assert event["anonymous_id"] == "a_1"
    assert "lead_id" not in event
    assert not list(validator("web_visit").iter_errors(event))
    assert visit_event({}, "", 5, lead_id="L", anonymous_id=None) is None
    assert visit_event({"u": "javascript:alert(1)"}, "", 5, lead_id="L", anonymous_id=None) is None


# -- validation of API events --------------------------------------------------------------------

GOOD = {
    "type": "web_visit",
    "event_id": "e1",
    "lead_id": "L1",
    "occurred_at": "2026-01-01T00:00:00Z",
    "url": "/pricing",
}


def test_valid_event_becomes_its_topics_record() -> None:
    result = validate_event(GOOD)
    assert isinstance(result, Accepted)
    assert result.kind is EventKind.WEB_VISIT
    assert result.key == b"L1"
    assert orjson.loads(result.value) == {k: v for k, v in GOOD.items() if k != "type"}


def test_anonymous_api_visit_is_keyed_by_its_anonymous_id() -> None:
    event = {k: v for k, v in GOOD.items() if k != "lead_id"} | {"anonymous_id": "a_9"}
    result = validate_event(event)
    assert isinstance(result, Accepted)
    assert result.key == b"a_9"


@pytest.mark.parametrize(
    ("event", "reason", "field"),
    [
        ({k: v for k, v in GOOD.items() if k != "event_id"}, "missing_field", "event_id"),
        ({k: v for k, v in GOOD.items() if k != "url"}, "missing_field", "url"),
        ({k: v for k, v in GOOD.items() if k != "lead_id"}, "missing_field", "lead_id"),
        (GOOD | {"url": 7}, "wrong_type", "url"),
        (GOOD | {"occurred_at": 1.5}, "wrong_type", "occurred_at"),
        (GOOD | {"url": "pricing"}, "invalid_value", "url"),
        (GOOD | {"occurred_at": "2026-01-01T00:00:00"}, "invalid_value", "occurred_at"),
        (GOOD | {"lead_id": ""}, "invalid_value", "lead_id"),
        (
            {
                "type": "email_event",
                "event_id": "e",
                "lead_id": "L",
                "occurred_at": 1,
                "campaign_id": "c",
                "action": "x",
            },
            "invalid_value",
            "action",
        ),
        (GOOD | {"type": "page_view"}, "unknown_type", "type"),
        # a write key for tracking events must not be able to erase a lead
        ({"type": "erasure", "lead_id": "L", "event_id": "e", "requested_at": 1}, "unknown_type", "type"),
        ({k: v for k, v in GOOD.items() if k != "type"}, "unknown_type", "type"),
        (GOOD | {"referrer": "x" * 70_000}, "invalid_value", "referrer"),
    ],
)
def test_each_validation_error(event: dict[str, Any], reason: str, field: str) -> None:
    result = validate_event(event)
    assert isinstance(result, Rejected), result
    assert result.reason == reason
    assert field in result.detail


def test_not_an_object_and_too_large() -> None:
    assert validate_event([1]) == Rejected("not_an_object", "the event is a JSON list, not an object")
    huge = GOOD | {"notes": "x" * 70_000}  # unknown fields are allowed, but not past 64 KiB
    result = validate_event(huge)
    assert isinstance(result, Rejected)
    assert result.reason == "too_large"


# -- write keys and rate -------------------------------------------------------------------------


def test_write_keys() -> None:
    keys = WriteKeys(["alpha", "beta"])
    a = keys.client({"Authorization": "Bearer alpha"})
    b = keys.client({"Authorization": "bearer  beta "})
    assert a is not None
    assert b is not None
    assert a != b
    assert "alpha" not in a
    assert keys.client({"Authorization": "Bearer gamma"}) is None
    assert keys.client({"Authorization": "Basic alpha"}) is None
    assert keys.client({}) is None
    assert not WriteKeys([])
    assert WriteKeys([]).client({"Authorization": "Bearer "}) is None


def test_rate_limiter_refuses_over_the_burst_and_says_when() -> None:
    now = [100.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take("k") for _ in range(3)] == [0, 0, 0]
    assert limiter.take("k") == 1  # one token comes back in 0.5 s: retry after 1 s
    assert limiter.take("other") == 0  # buckets are per client
    now[0] += 0.5
    assert limiter.take("k") == 0
    slow = RateLimiter(rate=0.1, burst=1, clock=lambda: now[0])
    assert slow.take("k") == 0
    assert slow.take("k") == 10


def test_collector_settings_from_env_and_file(tmp_path: Any) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# production\nk-file-1\n\n  k-file-2  \n")
    settings = settings_from_env(
        {
            "LEADSCORE_COLLECTOR_WRITE_KEYS": "k-env, k-file-1",
            "LEADSCORE_COLLECTOR_WRITE_KEYS_FILE": str(keys),
            "LEADSCORE_COLLECTOR_PORT": "7000",
            "LEADSCORE_COLLECTOR_HONOUR_DNT": "false",
        }
    ).collector
    assert settings.write_keys == ("k-env", "k-file-1", "k-file-2")
    assert settings.port == 7000
    assert settings.honour_dnt is False
    with pytest.raises(SettingsError, match="WRITE_KEYS_FILE"):
        settings_from_env({"LEADSCORE_COLLECTOR_WRITE_KEYS_FILE": str(tmp_path / "none")})
    with pytest.raises(SettingsError, match="HONOUR_DNT"):
        settings_from_env({"LEADSCORE_COLLECTOR_HONOUR_DNT": "maybe"})


# -- SendGrid ------------------------------------------------------------------------------------


def test_sendgrid_official_example_signature() -> None:
    key = load_public_key(SG_PUBLIC_KEY)
    assert verify_signature(key, SG_PAYLOAD, SG_SIGNATURE, SG_TIMESTAMP)
    assert not verify_signature(load_public_key(SG_OTHER_KEY), SG_PAYLOAD, SG_SIGNATURE, SG_TIMESTAMP)
    assert not verify_signature(key, b"payload", SG_SIGNATURE, SG_TIMESTAMP)
    assert not verify_signature(key, SG_PAYLOAD, SG_OTHER_SIGNATURE, SG_TIMESTAMP)
    assert not verify_signature(key, SG_PAYLOAD, SG_SIGNATURE, "timestamp")
    assert not verify_signature(key, SG_PAYLOAD, "not base64!", SG_TIMESTAMP)
    assert not verify_signature(key, SG_PAYLOAD.rstrip(), SG_SIGNATURE, SG_TIMESTAMP)  # the raw body, exactly


def test_sendgrid_key_formats() -> None:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pem = load_public_key(SG_PUBLIC_KEY).public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    assert verify_signature(load_public_key(pem), SG_PAYLOAD, SG_SIGNATURE, SG_TIMESTAMP)
    with pytest.raises(ValueError, match="public key"):
        load_public_key("not a key")


def test_sendgrid_open_with_lead_id_is_an_email_event() -> None:
    event = {"event": "open", "sg_event_id": "sg-1", "timestamp": 1700000000, "lead_id": "L7", "email": "a@b.example"}
    result = map_event(event | {"campaign_id": "spring"})
    assert isinstance(result, Accepted)
    assert result.kind is EventKind.EMAIL_EVENT
    assert result.key == b"L7"
    assert orjson.loads(result.value) == {
        "lead_id": "L7",
        "event_id": "sg-1",
        "occurred_at": 1700000000000,
        "action": "open",
        "campaign_id": "spring",
    }
    fallback = map_event(event | {"category": ["newsletter", "x"]})
    assert isinstance(fallback, Accepted)
    assert orjson.loads(fallback.value)["campaign_id"] == "newsletter"


def test_sendgrid_click_without_lead_goes_to_identities_without_the_address() -> None:
    address = "Jane.Doe@Example.com"
    event = {
        "event": "click",
        "sg_event_id": "sg-2",
        "timestamp": 1700000001,
        "email": address,
        "url": "https://x.io/p",
    }
    result = map_event(event)
    assert isinstance(result, IdentityRecord)
    digest = email_hash(address)
    assert result.key == f"email:{digest}".encode()
    assert address.lower().encode() not in result.value.lower()
    assert b"@" not in result.value
    message = orjson.loads(result.value)
    assert message == {
        "type": "email_event",
        "email_hash": digest,
        "event": {
            "event_id": "sg-2",
            "occurred_at": 1700000001000,
            "action": "click",
            "campaign_id": "sendgrid",
            "url": "https://x.io/p",
        },
    }
    assert not list(validator("lead_identity").iter_errors(message))


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"event": "delivered", "sg_event_id": "x", "timestamp": 1, "email": "a@b.c"}, Ignored("delivered")),
        ({"event": "bounce"}, Ignored("bounce")),
        (
            {"event": "open", "timestamp": 1, "lead_id": "L"},
            Rejected("missing_field", "field 'sg_event_id' is missing"),
        ),
        (
            {"event": "open", "sg_event_id": "x", "timestamp": "now", "lead_id": "L"},
            Rejected("invalid_value", "field 'timestamp' must be epoch seconds"),
        ),
        (
            {"event": "open", "sg_event_id": "x", "timestamp": 1},
            Rejected("missing_field", "neither a 'lead_id' custom argument nor an 'email' address"),
        ),
        ("open", Rejected("not_an_object", "the event is a JSON str, not an object")),
    ],
)
def test_sendgrid_other_events(event: Any, expected: Any) -> None:
    assert map_event(event) == expected
