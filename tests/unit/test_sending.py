"""``leadscore send`` without a broker: every line checked and routed before anything is sent;
anonymous web visits keyed by their anonymous id, identify lines to lead-identities."""

from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from scoring.identity import decode_identity, identify_event_id
from scoring.timeutil import format_rfc3339
from streams.cli import main
from streams.sending import read_messages
from streams.settings import Settings, settings_from_env

pytestmark = pytest.mark.unit

NOW = 1_767_225_600_000
SETTINGS = Settings()


def jsonl(tmp_path: Path, *lines: object) -> Path:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines))
    return path


def routed(tmp_path: Path, *lines: object) -> list[tuple[str, bytes, dict[str, object]]]:
    messages = read_messages(SETTINGS, (jsonl(tmp_path, *lines),), NOW)
    return [(topic, key, orjson.loads(value)) for topic, key, value in messages]


def refused(tmp_path: Path, *lines: object) -> str:
    with pytest.raises(ValueError, match=r"events\.jsonl:\d+: ") as raised:
        read_messages(SETTINGS, (jsonl(tmp_path, *lines),), NOW)
    return str(raised.value)


VISIT = {"type": "web_visit", "event_id": "v1", "occurred_at": NOW, "url": "/pricing"}


def test_a_lead_visit_is_keyed_by_its_lead_and_an_anonymous_one_by_its_anonymous_id(tmp_path: Path) -> None:
    lines = [
        {**VISIT, "lead_id": "L1"},
        {**VISIT, "anonymous_id": "a1"},
        {**VISIT, "anonymous_id": "a2", "lead_id": None},
    ]
    assert [(topic, key) for topic, key, _ in routed(tmp_path, *lines)] == [
        ("web-visits", b"L1"),
        ("web-visits", b"a1"),
        ("web-visits", b"a2"),
    ]
    # Sent as written: the worker's scorer passes the anonymous visit on to the identity agent.
    assert routed(tmp_path, lines[1])[0][2] == lines[1]


def test_an_identify_line_goes_to_lead_identities_under_the_anonymous_key(tmp_path: Path) -> None:
    line = {"type": "identify", "anonymous_id": "a1", "lead_id": "L1", "event_id": "i1", "occurred_at": NOW + 5}
    [(topic, key, value)] = routed(tmp_path, line)
    assert (topic, key, value) == ("lead-identities", b"anon:a1", line)
    decoded = decode_identity(key, orjson.dumps(value))
    assert (decoded.lead_id, decoded.occurred_at) == ("L1", NOW + 5)


def test_an_identify_line_without_id_or_time_gets_the_collectors_defaults(tmp_path: Path) -> None:
    [(_, _, value)] = routed(tmp_path, {"type": "identify", "anonymous_id": "a1", "lead_id": "L1"})
    assert value["event_id"] == identify_event_id("a1", "L1")
    assert value["occurred_at"] == format_rfc3339(NOW)


def test_topic_names_follow_the_settings(tmp_path: Path) -> None:
    settings = settings_from_env({"LEADSCORE_TOPIC_PREFIX": "p."})
    line = {"type": "identify", "anonymous_id": "a1", "lead_id": "L1"}
    messages = read_messages(settings, (jsonl(tmp_path, line, {**VISIT, "anonymous_id": "a1"}),), NOW)
    assert [topic for topic, _, _ in messages] == ["p.lead-identities", "p.web-visits"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ({**VISIT}, "a web_visit needs 'lead_id' or, anonymous, 'anonymous_id'"),
        ({**VISIT, "anonymous_id": ""}, "a web_visit needs 'lead_id' or, anonymous, 'anonymous_id'"),
        ({**VISIT, "anonymous_id": 7}, "a web_visit needs 'lead_id' or, anonymous, 'anonymous_id'"),
        ({**VISIT, "type": "email_event", "anonymous_id": "a1"}, "'lead_id' must be a non-empty string"),
        ({"type": "identify", "anonymous_id": "a1"}, "field 'lead_id' is missing"),
        ({"type": "identify", "lead_id": "L1"}, "field 'anonymous_id' is missing"),
        ({"type": "identify", "anonymous_id": 5, "lead_id": "L1"}, "field 'anonymous_id' must be a string"),
        ({"type": "identify", "anonymous_id": "a" * 257, "lead_id": "L1"}, "1 to 256 characters"),
        ({"type": "identify", "anonymous_id": "a1", "lead_id": "L1", "occurred_at": "yesterday"}, "occurred_at"),
        ({"type": "identify", "anonymous_id": "a1", "leadId": "L1"}, "unknown field 'leadId' in an identify line"),
        ({"type": "tweet", "lead_id": "L1"}, "unknown type 'tweet' (known: web_visit"),
        (b"[1]", "expected a JSON object"),
        (b"{", "not JSON"),
    ],
)
def test_a_line_that_cannot_be_sent_is_refused_with_its_place(tmp_path: Path, line: object, message: str) -> None:
    good = {"type": "identify", "anonymous_id": "ok", "lead_id": "L1"}
    error = refused(tmp_path, good, line)
    assert error.startswith(f"{tmp_path / 'events.jsonl'}:2: ")
    assert message in error


def test_the_unknown_type_message_names_identify(tmp_path: Path) -> None:
    assert "identify" in refused(tmp_path, {"type": "tweet"})


def test_the_command_refuses_a_bad_file_before_it_reaches_for_the_broker(tmp_path: Path) -> None:
    path = jsonl(tmp_path, {**VISIT, "anonymous_id": "a1"}, {"type": "identify", "anonymous_id": "a1"})
    result = CliRunner().invoke(main, ["send", str(path)], env={"LEADSCORE_BOOTSTRAP": "127.0.0.1:1"})
    assert result.exit_code == 1
    assert "events.jsonl:2: field 'lead_id' is missing" in result.output
