"""The JSON Schema contracts in schemas/, their examples and the AsyncAPI document."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from schemas.contracts import SCHEMA_DIR, SCHEMA_SUFFIX, TOPIC_SCHEMAS, load_schema, schema_names

pytestmark = pytest.mark.unit

DRAFT_URI = "https://json-schema.org/draft/2020-12/schema"
SCHEMA_FORMAT = "application/schema+json;version=draft-2020-12"
EXAMPLES = SCHEMA_DIR / "examples"
INVALID = EXAMPLES / "invalid"

SCHEMA_FILES = sorted(SCHEMA_DIR.glob("*" + SCHEMA_SUFFIX))
EVENT_SCHEMAS = sorted(p.name.removesuffix(SCHEMA_SUFFIX) for p in SCHEMA_FILES if p.name != "common.schema.json")
VALID_EXAMPLES = sorted(EXAMPLES.glob("*.json"))
INVALID_EXAMPLES = sorted(INVALID.glob("*.json"))

INBOUND_TOPICS = {
    "web-visits",
    "email-events",
    "content-downloads",
    "webinar-events",
    "lead-profiles",
    "sales-feedback",
}
OUTBOUND_TOPICS = {"mql-handoff", "lead-nurture", "lead-dead-letters"}
INTERNAL_TOPICS = {"lead-ticks"}
IDENTITY_TOPICS = {"lead-identities"}
ERASURE_TOPICS = {"lead-erasures"}  # inbound, with requested_at instead of occurred_at
ALL_TOPICS = INBOUND_TOPICS | OUTBOUND_TOPICS | INTERNAL_TOPICS | IDENTITY_TOPICS | ERASURE_TOPICS

# Why each invalid example must fail: (keyword, JSON path of every top-level error, text that
# must appear in the error message or None). Every top-level error must be at that path, so an
# invalid example cannot pass this test by being wrong somewhere else as well.
INVALID_EXPECTATIONS: dict[str, tuple[str, str, str | None]] = {
    "web_visit__missing_lead_id": ("required", "$", "'lead_id'"),
    "web_visit__occurred_at_without_zone": ("pattern", "$.occurred_at", None),
    "web_visit__occurred_at_negative_epoch_millis": ("minimum", "$.occurred_at", None),
    "web_visit__occurred_at_date_only": ("pattern", "$.occurred_at", None),
    "web_visit__url_relative_without_slash": ("pattern", "$.url", None),
    "web_visit__empty_event_id": ("minLength", "$.event_id", None),
    "web_visit__lead_id_too_long": ("maxLength", "$.lead_id", None),
    "web_visit__anonymous_id_empty": ("minLength", "$", None),
    "lead_identity__identify_missing_lead_id": ("required", "$", "'lead_id'"),
    "lead_identity__email_hash_not_hex": ("pattern", "$.email_hash", None),
    "lead_identity__visit_with_lead_id": ("not", "$.event", None),
    "lead_identity__type_not_in_enum": ("enum", "$.type", None),
    "email_event__action_not_in_enum": ("enum", "$.action", None),
    "email_event__missing_campaign_id": ("required", "$", "'campaign_id'"),
    "erasure__missing_requested_at": ("required", "$", "'requested_at'"),
    "content_download__missing_asset_type": ("required", "$", "'asset_type'"),
    "webinar_event__negative_minutes_attended": ("minimum", "$.minutes_attended", None),
    "webinar_event__status_not_in_enum": ("enum", "$.status", None),
    "lead_profile__company_size_is_string": ("type", "$.company_size", None),
    "lead_profile__country_lowercase": ("pattern", "$.country", None),
    "lead_profile__seniority_not_in_enum": ("enum", "$.seniority", None),
    "lead_profile__email_not_an_address": ("pattern", "$.email", None),
    "lead_profile__no_profile_field": ("anyOf", "$", None),
    "sales_feedback__outcome_not_in_enum": ("enum", "$.outcome", None),
    "mql_event__extra_field": ("additionalProperties", "$", "'email'"),
    "mql_event__crossing_zero": ("minimum", "$.crossing", None),
    "mql_event__crossed_at_not_utc": ("pattern", "$.crossed_at", None),
    "mql_event__wrong_stage": ("const", "$.stage", None),
    "mql_event__breakdown_kind_not_in_enum": ("enum", "$.breakdown[8].kind", None),
    "nurture_event__reason_not_in_enum": ("enum", "$.reason", None),
    "nurture_event__missing_crossing": ("required", "$", "'crossing'"),
    "dead_letter__reason_not_in_enum": ("enum", "$.reason", None),
    "dead_letter__value_not_base64": ("pattern", "$.value_b64", None),
    "dead_letter__extra_field": ("additionalProperties", "$", "'lead_id'"),
    "tick__missing_partition": ("required", "$", "'partition'"),
}


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _schema_of_example(path: Path) -> str:
    """``web_visit.json`` and ``web_visit__whatever.json`` are examples of ``web_visit``."""
    return path.stem.split("__", 1)[0]


@pytest.fixture(scope="module")
def registry() -> Registry[Any]:
    pairs: list[tuple[str, Resource[Any]]] = []
    for path in SCHEMA_FILES:
        schema = _read_json(path)
        pairs.append((schema["$id"], Resource.from_contents(schema, default_specification=DRAFT202012)))
    return Registry().with_resources(pairs)


def _validator(name: str, registry: Registry[Any], *, formats: bool = True) -> Draft202012Validator:
    return Draft202012Validator(
        load_schema(name),
        registry=registry,
        format_checker=FormatChecker() if formats else None,
    )


def _walk_refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _walk_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk_refs(item)


def _flatten(errors: list[ValidationError]) -> Iterator[ValidationError]:
    for error in errors:
        yield error
        yield from _flatten(list(error.context or []))


def _resolve_pointer(document: Any, pointer: str) -> Any:
    node = document
    for raw in pointer.lstrip("/").split("/") if pointer not in ("", "/") else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


# --- the schema files ------------------------------------------------------------------


def test_schema_files_exist() -> None:
    assert {p.name.removesuffix(SCHEMA_SUFFIX) for p in SCHEMA_FILES} == {"common", *TOPIC_SCHEMAS.values()}


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_schema_is_valid_draft_2020_12(path: Path) -> None:
    schema = _read_json(path)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == DRAFT_URI
    # $id ends with the file name, so $id-relative refs and file-relative refs agree.
    assert schema["$id"].rsplit("/", 1)[1] == path.name
    assert schema.get("title")
    assert schema.get("description")


def test_schema_ids_are_unique() -> None:
    ids = [_read_json(p)["$id"] for p in SCHEMA_FILES]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: p.name)
def test_every_schema_ref_resolves(path: Path, registry: Registry[Any]) -> None:
    schema = _read_json(path)
    resolver = registry.resolver(base_uri=schema["$id"])
    refs = list(_walk_refs(schema))
    for ref in refs:
        resolver.lookup(ref)  # raises referencing.exceptions.Unresolvable
        if not ref.startswith("#"):
            assert not ref.startswith(("http:", "https:", "/")), f"use relative refs: {ref}"
            assert (SCHEMA_DIR / ref.split("#", 1)[0]).is_file()


@pytest.mark.parametrize("name", ["mql_event", "nurture_event", "dead_letter"])
def test_outbound_schemas_are_closed(name: str) -> None:
    assert load_schema(name)["additionalProperties"] is False


@pytest.mark.parametrize("topic", sorted(INBOUND_TOPICS))
def test_inbound_schemas_are_open_and_share_the_common_fields(topic: str) -> None:
    schema = load_schema(TOPIC_SCHEMAS[topic])
    assert schema.get("additionalProperties", True) is True
    # A web visit has lead_id or, for an anonymous visitor, anonymous_id alone.
    required = {"event_id", "occurred_at"} | ({"lead_id"} if topic != "web-visits" else set())
    assert required <= set(schema["required"])
    for field in ("event_id", "lead_id", "occurred_at"):
        assert schema["properties"][field]["$ref"] == f"common.schema.json#/$defs/{field}"


# --- examples --------------------------------------------------------------------------


def test_every_schema_has_a_valid_example() -> None:
    have = {p.stem for p in VALID_EXAMPLES}
    assert set(EVENT_SCHEMAS) <= have


def test_examples_are_named_after_a_schema() -> None:
    for path in [*VALID_EXAMPLES, *INVALID_EXAMPLES]:
        assert _schema_of_example(path) in EVENT_SCHEMAS, path.name
    for path in INVALID_EXAMPLES:
        assert "__" in path.stem, f"{path.name}: say what is wrong after '__'"


def test_every_invalid_example_has_an_expectation() -> None:
    assert {p.stem for p in INVALID_EXAMPLES} == set(INVALID_EXPECTATIONS)


@pytest.mark.parametrize("path", VALID_EXAMPLES, ids=lambda p: p.name)
def test_valid_example_validates(path: Path, registry: Registry[Any]) -> None:
    validator = _validator(_schema_of_example(path), registry)
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(_read_json(path))]
    assert errors == []


@pytest.mark.parametrize("path", INVALID_EXAMPLES, ids=lambda p: p.name)
def test_invalid_example_fails_for_the_stated_reason(path: Path, registry: Registry[Any]) -> None:
    keyword, json_path, text = INVALID_EXPECTATIONS[path.stem]
    validator = _validator(_schema_of_example(path), registry)
    errors = list(validator.iter_errors(_read_json(path)))
    assert errors, f"{path.name} unexpectedly validates"
    assert {e.json_path for e in errors} == {json_path}
    matching = [e for e in _flatten(errors) if e.validator == keyword]
    assert matching, [(e.validator, e.message) for e in _flatten(errors)]
    if text is not None:
        assert any(text in e.message for e in matching)


@pytest.mark.parametrize("name", ["mql_event", "nurture_event"])
def test_breakdown_points_sum_to_score_in_examples(name: str) -> None:
    paths = [p for p in VALID_EXAMPLES if _schema_of_example(p) == name]
    assert paths
    for path in paths:
        event = _read_json(path)
        total = math.fsum(row["points"] for row in event["breakdown"])
        assert abs(total - event["score"]) <= 0.01, path.name


def test_mql_example_explains_fit_and_engagement() -> None:
    event = _read_json(EXAMPLES / "mql_event.json")
    assert {row["kind"] for row in event["breakdown"]} == {"fit", "engagement", "adjustment"}
    assert event["score"] >= event["threshold"]


def test_example_emails_use_reserved_domains() -> None:
    for path in [*VALID_EXAMPLES, *INVALID_EXAMPLES]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if "@" in line:
                assert "@example.com" in line or "@example.org" in line, f"{path.name}: {line}"


# --- timestamps: the zone is enforced by a pattern, not only by "format" ----------------


def _def_validator(registry: Registry[Any], definition: str) -> Draft202012Validator:
    base = "https://leadscore.example/schemas/common.schema.json"
    return Draft202012Validator({"$ref": f"{base}#/$defs/{definition}"}, registry=registry)


@pytest.mark.parametrize(
    "value",
    [
        "2025-03-14T09:26:53Z",
        "2025-03-14T09:26:53.512Z",
        "2025-03-14T10:26:53+01:00",
        "2025-03-14T04:26:53.000001-05:00",
        1741944413512,
        0,
        99_999_999_999_999,
    ],
)
def test_occurred_at_accepts(value: object, registry: Registry[Any]) -> None:
    assert _def_validator(registry, "occurred_at").is_valid(value)


@pytest.mark.parametrize(
    "value",
    [
        "2025-03-14T09:26:53",
        "2025-03-14 09:26:53Z",
        "2025-03-14",
        "2025-13-14T09:26:53Z",
        "2025-03-14T24:00:00Z",
        "2025-03-14T09:26:53+0100",
        "2025-03-14T09:26:53 Z",
        "2025-03-14t09:26:53z",
        "2016-12-31T23:59:60Z",
        "1741944413512",
        -1,
        10**14,
        1.5,
        True,
        None,
    ],
)
def test_occurred_at_rejects_without_format_checking(value: object, registry: Registry[Any]) -> None:
    assert not _def_validator(registry, "occurred_at").is_valid(value)


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2025-03-18T16:00:00Z", True),
        ("2025-03-18T16:00:00.125+00:00", True),
        ("2025-03-18T17:00:00+01:00", False),
        ("2025-03-18T16:00:00-00:00", False),
        ("2025-03-18T16:00:00", False),
    ],
)
def test_utc_date_time(value: str, ok: bool, registry: Registry[Any]) -> None:
    assert _def_validator(registry, "utc_date_time").is_valid(value) is ok


def test_zone_less_timestamp_fails_with_and_without_the_format_checker(registry: Registry[Any]) -> None:
    # jsonschema's FormatChecker only checks "date-time" when rfc3339-validator is installed;
    # the schemas must not depend on that, so the zone is also enforced by a pattern.
    checker = FormatChecker()
    if "date-time" in checker.checkers:
        assert not checker.conforms("2025-03-14T09:26:53", "date-time")
    instance = _read_json(INVALID / "web_visit__occurred_at_without_zone.json")
    assert not _validator("web_visit", registry, formats=True).is_valid(instance)
    assert not _validator("web_visit", registry, formats=False).is_valid(instance)


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://www.example.com/pricing", True),
        ("http://example.com", True),
        ("/", True),
        ("/docs/api?x=1#auth", True),
        ("pricing", False),
        ("www.example.com/pricing", False),
        ("https://", False),
        ("", False),
    ],
)
def test_url_pattern(url: str, ok: bool, registry: Registry[Any]) -> None:
    assert _def_validator(registry, "url").is_valid(url) is ok


# --- the AsyncAPI document ---------------------------------------------------------------


@pytest.fixture(scope="module")
def asyncapi() -> dict[str, Any]:
    document = yaml.safe_load((SCHEMA_DIR / "asyncapi.yaml").read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def test_asyncapi_header(asyncapi: dict[str, Any]) -> None:
    assert asyncapi["asyncapi"] == "3.0.0"
    assert asyncapi["info"]["title"] == "leadscore"
    assert asyncapi["info"]["version"] == "0.1.0"
    assert asyncapi["info"]["description"].strip()
    servers = list(asyncapi["servers"].values())
    assert {"host": "127.0.0.1:9092", "protocol": "kafka"}.items() <= servers[0].items()


def test_asyncapi_names_every_topic(asyncapi: dict[str, Any]) -> None:
    addresses = [channel["address"] for channel in asyncapi["channels"].values()]
    assert sorted(addresses) == sorted(ALL_TOPICS)
    assert set(TOPIC_SCHEMAS) == ALL_TOPICS


def test_asyncapi_messages_use_the_schema_files(asyncapi: dict[str, Any]) -> None:
    for channel in asyncapi["channels"].values():
        (message_ref,) = channel["messages"].values()
        message = _resolve_pointer(asyncapi, message_ref["$ref"].removeprefix("#"))
        payload = message["payload"]
        assert payload["schemaFormat"] == SCHEMA_FORMAT
        expected = f"./{TOPIC_SCHEMAS[channel['address']]}{SCHEMA_SUFFIX}"
        assert payload["schema"] == {"$ref": expected}


def test_asyncapi_operations(asyncapi: dict[str, Any]) -> None:
    actions: dict[str, set[str]] = {}
    for operation in asyncapi["operations"].values():
        channel = _resolve_pointer(asyncapi, operation["channel"]["$ref"].removeprefix("#"))
        actions.setdefault(channel["address"], set()).add(operation["action"])
        for message in operation["messages"]:
            prefix = operation["channel"]["$ref"] + "/messages/"
            assert message["$ref"].startswith(prefix)
    assert actions == {
        **{topic: {"receive"} for topic in INBOUND_TOPICS},
        **{topic: {"send"} for topic in OUTBOUND_TOPICS},
        "lead-ticks": {"send", "receive"},
        "lead-identities": {"send", "receive"},
        "lead-erasures": {"receive"},
    }


def test_asyncapi_lead_key_binding(asyncapi: dict[str, Any]) -> None:
    trait = asyncapi["components"]["messageTraits"]["leadKeyed"]
    key = trait["bindings"]["kafka"]["key"]
    assert key["type"] == "string"
    assert "lead id" in key["description"]
    for name, message in asyncapi["components"]["messages"].items():
        if name in ("deadLetter", "tick", "leadIdentity"):
            continue
        assert message["traits"] == [{"$ref": "#/components/messageTraits/leadKeyed"}]


def test_asyncapi_documents_co_partitioning_and_dead_letter_header(asyncapi: dict[str, Any]) -> None:
    assert "same partition count" in asyncapi["info"]["description"]
    for channel in asyncapi["channels"].values():
        if channel["address"] in INBOUND_TOPICS | INTERNAL_TOPICS | IDENTITY_TOPICS:
            assert "same partition count" in channel["description"], channel["address"]
    dead_letter = asyncapi["components"]["messages"]["deadLetter"]
    assert "leadscore-reason" in dead_letter["headers"]["schema"]["properties"]
    assert "leadscore-reason" in load_schema("dead_letter")["description"]


def test_every_asyncapi_ref_resolves(asyncapi: dict[str, Any]) -> None:
    refs = list(_walk_refs(asyncapi))
    assert refs
    files: set[str] = set()
    for ref in refs:
        target, _, fragment = ref.partition("#")
        if not target:
            _resolve_pointer(asyncapi, fragment)
            continue
        path = SCHEMA_DIR / target
        assert path.is_file(), ref
        files.add(path.name)
        _resolve_pointer(_read_json(path), fragment)
    assert files == {f"{name}{SCHEMA_SUFFIX}" for name in TOPIC_SCHEMAS.values()}


# --- schemas.contracts -----------------------------------------------------------------


def test_load_schema_reads_the_packaged_files() -> None:
    for path in SCHEMA_FILES:
        name = path.name.removesuffix(SCHEMA_SUFFIX)
        assert load_schema(name) == _read_json(path)
        assert load_schema(path.name) == _read_json(path)
    assert schema_names() == sorted(["common", *EVENT_SCHEMAS])


@pytest.mark.parametrize("name", ["../pyproject", "Web_Visit", "", "web-visit", "a/b"])
def test_load_schema_rejects_bad_names(name: str) -> None:
    with pytest.raises(ValueError, match="invalid schema name"):
        load_schema(name)


def test_load_schema_unknown_name() -> None:
    with pytest.raises(FileNotFoundError):
        load_schema("no_such_event")


# --- the Python service conforms to the contracts ------------------------------------------
# Imported inside the tests so that a change in the scoring API fails these tests only.


@pytest.mark.parametrize(
    "path",
    [p for p in VALID_EXAMPLES if _schema_of_example(p) in {TOPIC_SCHEMAS[t] for t in INBOUND_TOPICS}],
    ids=lambda p: p.name,
)
def test_valid_inbound_examples_are_accepted_by_the_service(path: Path) -> None:
    from scoring.events import EventKind, decode_event

    name = _schema_of_example(path)
    if name not in {kind.value for kind in EventKind}:
        pytest.skip(f"the service has no decoder for {name}")
    event = _read_json(path)
    key = event.get("lead_id") or event["anonymous_id"]  # an anonymous visit is keyed by its anonymous id
    decoded = decode_event(EventKind(name), key.encode(), path.read_bytes())
    assert decoded.event_id == event["event_id"]
    assert decoded.lead_id == event.get("lead_id", "")


def _identity_key(message: dict[str, Any]) -> bytes:
    if message.get("type") in ("identify", "visit"):
        return f"anon:{message['anonymous_id']}".encode()
    return f"email:{message['email_hash']}".encode()


@pytest.mark.parametrize("path", [p for p in VALID_EXAMPLES if _schema_of_example(p) == "lead_identity"], ids=str)
def test_valid_identity_examples_are_accepted_by_the_service(path: Path) -> None:
    from scoring.identity import decode_identity
    from scoring.identity_sweep import decode_sweep

    message = _read_json(path)
    if message["type"] == "sweep":  # internal, keyed "sweep": checked against its own partition
        decode_sweep(path.read_bytes(), message["partition"])
        return
    decoded = decode_identity(_identity_key(message), path.read_bytes())
    assert decoded.type == message["type"]
    assert decoded.lead_id == message.get("lead_id")


@pytest.mark.parametrize("path", [p for p in INVALID_EXAMPLES if _schema_of_example(p) == "lead_identity"], ids=str)
def test_invalid_identity_examples_are_refused_by_the_service(path: Path) -> None:
    from scoring.errors import InvalidEvent
    from scoring.identity import decode_identity

    message = _read_json(path)
    key = f"anon:{message['anonymous_id']}" if "anonymous_id" in message else f"email:{message['email_hash']}"
    with pytest.raises(InvalidEvent):
        decode_identity(key.encode(), path.read_bytes())


def test_identity_messages_of_the_service_validate(registry: Registry[Any]) -> None:
    from scoring.identity import email_hash, email_known_message, visit_message

    visit = (EXAMPLES / "web_visit__anonymous.json").read_bytes()
    validator = _validator("lead_identity", registry)
    for message in (visit_message("anon_5b2e9f04", visit), email_known_message(email_hash("a@example.com"), "L", 0)):
        errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(json.loads(message))]
        assert errors == []


def test_service_outputs_validate(registry: Registry[Any]) -> None:
    from scoring.outputs import BreakdownRow, DeadLetter, MqlEvent, NurtureEvent, Score

    rows = (
        BreakdownRow("seniority_director", "fit", 15.0, 1),
        BreakdownRow("pricing_page_visit", "engagement", 24.5, 3),
        BreakdownRow("web_visit_cap", "adjustment", -4.5, 0),
    )
    score = Score(score=35.0, fit=15.0, engagement=20.0, breakdown=rows)
    mql = MqlEvent("lead_1", 1, score, 30.0, 1_741_944_413_512, "wv_1", "2025.03.1").to_payload()
    nurture = NurtureEvent("lead_1", 1, score, 40.0, 1_741_944_413_512, "decay", "2025.03.1").to_payload()
    dead = DeadLetter("invalid_utf8", "the value is not JSON", "web-visits", 2, 17, None, b"\xff\xfe").to_payload(
        1_741_944_413_512
    )
    for name, payload in (("mql_event", mql), ("nurture_event", nurture), ("dead_letter", dead)):
        errors = [f"{e.json_path}: {e.message}" for e in _validator(name, registry).iter_errors(payload)]
        assert errors == [], name
    assert mql["event_id"] == MqlEvent("lead_1", 1, score, 99.0, 0, "x", "y").event_id


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("erasure*.json")), ids=lambda p: p.name)
def test_erasure_examples_are_accepted_by_the_service(path: Path) -> None:
    from scoring.events import EventKind, decode_event

    message = _read_json(path)
    decoded = decode_event(EventKind.ERASURE, message["lead_id"].encode(), path.read_bytes())
    assert decoded.kind is EventKind.ERASURE
    assert decoded.lead_id == message["lead_id"]
    assert decoded.occurred_at == 1743586200000  # requested_at, whichever form it takes
