"""Fuzzing the real worker: 10,000 hostile records among good events on every inbound topic.

The hostile records come from the hypothesis strategies of ``tests/unit/test_fuzz.py`` (derandomized,
so a run is reproducible) plus a corpus: invalid UTF-8, truncated JSON, wrong types, missing
fields, null keys and values, timestamps far in the past and the future, deeply nested JSON, and
payloads just below the topic's record limit. They are produced in bulk with good journeys
interleaved, to a worker in its own process. After it has consumed everything:

- it is still up (``/livez`` 200, the process alive);
- every hostile record the pure core rejects is on ``lead-dead-letters`` once, matched by its
  topic, partition and offset, with the core's reason and its original bytes (the first
  ``DEAD_LETTER_MAX_BYTES`` of a huge one); nothing else is dead-lettered;
- every good lead's table entry (read from the changelog) equals the replay of the good events
  through the pure core, and each good lead's crossing is on ``mql-handoff`` once.

A record above the topic's ``max.message.bytes`` cannot be produced at all: the broker refuses it
and the producer gets ``MessageSizeTooLargeError`` (checked here too); it is the producer's error,
never the worker's.
"""

import base64
import random
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from scoring.engine import InputRecord, Scorer
from scoring.outputs import DEAD_LETTER_MAX_BYTES
from scoring.rules import parse_rules
from scoring.state import decode_state
from streams.settings import TopicNames
from tests.conftest import DEFAULT_RULES
from tests.integration.kafka import journey, run
from tests.integration.test_batch_reliability import read_all, same_state, wait_consumed
from tests.integration.worker import WorkerProcess
from tests.reliability.harness import Figures, record_figures
from tests.unit.test_fuzz import CORPUS, FIELDS, field_values, json_values

HOSTILE = 10_000
GOOD_LEADS = 200
NOW_MS = int(time.time() * 1000)
INBOUND = TopicNames().inbound()  # topic -> kind, every inbound topic (erasures included)
NESTED = b'{"a":' * 5000 + b"1" + b"}" * 5000

# (value, key mode) of the corpus: each family several times over, on every topic.
FAMILIES: list[tuple[bytes | None, str]] = [
    *((value, "lead") for value in CORPUS),
    (b"\xc3\x28\xa0\xa1", "lead"),  # invalid UTF-8
    (b'{"event_id": "e", "lead_id": "\xff\xfe", "occurred_at": 1}', "lead"),  # invalid UTF-8 inside JSON
    (b'{"event_id": "e", "lead_id": "KEY", "occurred_at": 17', "lead"),  # truncated
    (b'{"event_id": 5, "lead_id": "KEY", "occurred_at": "2026-01-01T00:00:00Z", "url": ["/"]}', "lead"),
    (b'{"event_id": "e", "lead_id": "KEY", "occurred_at": true, "url": "/"}', "lead"),  # wrong types
    (b'{"lead_id": "KEY", "occurred_at": 1}', "lead"),  # missing fields
    (b'{"event_id": "e", "lead_id": "KEY", "occurred_at": "0001-01-01T00:00:00Z", "url": "/"}', "lead"),
    (b'{"event_id": "e", "lead_id": "KEY", "occurred_at": "9999-12-31T23:59:59Z", "url": "/"}', "lead"),
    (b'{"event_id": "e", "lead_id": "KEY", "occurred_at": -1, "url": "/"}', "lead"),
    (b'{"event_id": "e", "lead_id": "KEY", "occurred_at": 99999999999999, "url": "/"}', "lead"),
    (b'{"event_id": "e", "lead_id": "KEY", "requested_at": "2999-01-01T00:00:00Z"}', "lead"),
    (b'{"event_id": "e", "lead_id": null, "occurred_at": null}', "lead"),
    (None, "lead"),  # a null value
    (b'{"event_id": "e", "lead_id": "KEY", "occurred_at": 1, "url": "/"}', "none"),  # a null key
    (NESTED, "lead"),  # nested far deeper than any parser's recursion limit
    (b"[" * 100_000, "lead"),
    (b"", "lead"),
    (b"\x00" * 64, "binary"),
]
# Below the topic's max.message.bytes (1 MiB by default): the broker takes them, the worker
# dead-letters them as too_large with the first DEAD_LETTER_MAX_BYTES of the value.
HUGE = [b'{"event_id": "e", "lead_id": "KEY", "occurred_at": 1, "url": "/' + b"a" * 900_000 + b'"}', b"x" * 1_000_000]


@st.composite
def hostile_values(draw: Any) -> tuple[bytes | None, str]:
    """A hostile value and how its key is to be made: ``lead`` (equal to the payload's lead_id when
    it has one), ``none``, ``binary`` (random bytes) or ``other`` (differs from the lead_id)."""
    shape = draw(st.sampled_from(["bytes", "json", "object"]))
    mode = draw(st.sampled_from(["lead", "lead", "none", "binary", "other"]))
    if shape == "bytes":
        return draw(st.binary(max_size=200) | st.none()), mode
    if shape == "json":
        return orjson.dumps(draw(json_values)), mode
    payload = draw(st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=8))
    if "lead_id" in payload and mode == "lead":
        payload["lead_id"] = "KEY"  # replaced by the record's own key: a valid-looking lead
    return orjson.dumps(payload), mode


def generated(count: int) -> list[tuple[bytes | None, str]]:
    """``count`` values from the strategy, derandomized: the same list on every run."""
    drawn: list[tuple[bytes | None, str]] = []

    @settings(
        max_examples=count,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(hostile_values())
    def collect(value: tuple[bytes | None, str]) -> None:
        drawn.append(value)

    collect()
    return drawn[:count]


def hostile_records(rng: random.Random) -> list[tuple[str, bytes | None, bytes | None]]:
    """10,000 (topic, key, value): the corpus on every topic, several times, then generated values.
    Every lead-like key is unique (``hx-<n>``), so no two hostile records touch the same lead and
    each one's fate does not depend on the order the topics are read in."""
    topics = list(INBOUND)
    values = [(value, mode) for value, mode in FAMILIES for _ in range(3)] + [(v, "lead") for v in HUGE]
    values += generated(HOSTILE - len(values))
    out: list[tuple[str, bytes | None, bytes | None]] = []
    for n, (value, mode) in enumerate(values):
        lead = f"hx-{n}"
        key = {
            "lead": lead.encode(),
            "none": None,
            "binary": rng.randbytes(rng.randint(0, 16)),
            "other": f"hy-{n}".encode(),
        }[mode]
        if value is not None:
            value = value.replace(b'"KEY"', orjson.dumps(lead))
        elif key is None:
            key = lead.encode()  # a record needs a key or a value (the Kafka clients refuse neither)
        out.append((topics[n % len(topics)], key, value))
    return out


async def produce_bulk(bootstrap: str, messages: list[tuple[str, bytes | None, bytes | None]]) -> list[Any]:
    """Send everything at once (batched by the producer); the metadata of each, in order."""
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20, max_request_size=1 << 21
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, key=key, value=value) for topic, key, value in messages]
        return [await future for future in futures]
    finally:
        await producer.stop()


async def produce_too_large(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, max_request_size=4 << 20)
    await producer.start()
    try:
        await producer.send_and_wait(topic, key=b"hx-huge", value=b"x" * (2 << 20))
    finally:
        await producer.stop()


def test_ten_thousand_hostile_records_among_good_events(
    bootstrap: str, names: str, worker_factory: Callable[..., WorkerProcess]
) -> None:
    rng = random.Random(7)
    scorer = Scorer(parse_rules(DEFAULT_RULES.read_text(), str(DEFAULT_RULES)))
    worker = worker_factory()
    app_id = names.rstrip(".") + "-app"

    with pytest.raises(MessageSizeTooLargeError):  # above the topic's limit: the producer's error
        run(produce_too_large(bootstrap, names + "web-visits"))

    hostile = [(names + topic, key, value) for topic, key, value in hostile_records(rng)]
    good = [m for i in range(GOOD_LEADS) for m in journey(names, f"good-{i}", NOW_MS - 86_400_000 + i * 1000)]
    assert len(hostile) == HOSTILE
    messages = hostile + good
    rng.shuffle(messages)  # good events interleaved with the hostile ones on every topic
    is_good = {id(m) for m in good}
    started = time.monotonic()
    sent = run(produce_bulk(bootstrap, messages))
    produce_s = time.monotonic() - started

    kinds = {names + topic: kind for topic, kind in INBOUND.items()}
    expected_letters: dict[tuple[str, int, int], str] = {}
    originals: dict[tuple[str, int, int], bytes | None] = {}
    good_inputs: list[InputRecord] = []
    for message, meta in zip(messages, sent, strict=True):
        topic, key, value = message
        item = InputRecord(kinds[topic], topic, meta.partition, meta.offset, key, value)
        if id(message) in is_good:
            good_inputs.append(item)
            continue
        where = (topic, meta.partition, meta.offset)
        originals[where] = value
        rejected = scorer.process_batch([item], {}, int(time.time() * 1000)).dead_letters
        if rejected:
            expected_letters[where] = rejected[0].reason

    wait_consumed(bootstrap, app_id, list(kinds), timeout_s=600)
    assert worker.process is not None
    assert worker.process.poll() is None, worker.log()
    assert worker.get("/livez")[0] == 200

    letters = [orjson.loads(r.value or b"{}") for r in run(read_all(bootstrap, [names + "lead-dead-letters"]))]
    found: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
    for letter in letters:
        found.setdefault((letter["source_topic"], letter["source_partition"], letter["source_offset"]), []).append(
            letter
        )
    missing = sorted(set(expected_letters) - set(found))
    unexpected = sorted(set(found) - set(expected_letters))
    doubled = [where for where, copies in found.items() if len(copies) > 1]
    wrong_reason = [w for w in expected_letters if w in found and found[w][0]["reason"] != expected_letters[w]]
    wrong_bytes = [
        w
        for w in expected_letters
        if w in found
        and found[w][0]["value_b64"] is not None
        and base64.b64decode(found[w][0]["value_b64"]) != (originals[w] or b"")[:DEAD_LETTER_MAX_BYTES]
    ]
    no_reason = [letter for letter in letters if not letter["reason"] or not letter["detail"]]

    changelog = run(read_all(bootstrap, [f"{app_id}-leads-changelog"]))
    table = {}
    for r in changelog:
        if r.key is not None and r.key.startswith(b"good-"):
            table[r.key.decode()] = r.value
    expected = scorer.process_batch(good_inputs, {}, NOW_MS + 86_400_000).states
    differ = [
        lead
        for lead, state in expected.items()
        if table.get(lead) is None or not same_state(decode_state(table[lead]), state)
    ]
    mqls = [orjson.loads(r.value or b"{}") for r in run(read_all(bootstrap, [names + "mql-handoff"]))]
    good_mqls = sorted(m["lead_id"] for m in mqls if m["lead_id"].startswith("good-"))

    reasons: dict[str, int] = {}
    for reason in expected_letters.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    summary = ", ".join(f"{reason} {count}" for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]))
    counted = Figures(
        sent=len(messages),
        lost=len(missing) + len(differ),
        duplicated_ids=len(doubled) + len(good_mqls) - len(set(good_mqls)),
        dead_lettered=len(letters),
    )
    record_figures(
        "fuzzing: 10,000 hostile records among good events",
        counted,
        faults=HOSTILE,
        notes=(
            f"{len(expected_letters)} rejected by the core, {HOSTILE - len(expected_letters)} valid by chance "
            f"(scored, anonymous or erasures); produced in {produce_s:.1f} s; {summary}"
        ),
    )
    assert missing == [], f"{len(missing)} hostile records not dead-lettered, e.g. {missing[:3]}"
    assert unexpected == [], f"{len(unexpected)} records dead-lettered that the core accepts, e.g. {unexpected[:3]}"
    assert doubled == []
    assert wrong_reason == [], [(w, expected_letters[w], found[w][0]["reason"]) for w in wrong_reason[:3]]
    assert wrong_bytes == []
    assert no_reason == []
    assert len(expected_letters) > HOSTILE // 2  # the input is mostly hostile indeed
    assert differ == [], f"{len(differ)} good leads differ from the replay, e.g. {differ[:3]}"
    assert good_mqls == sorted(f"good-{i}" for i in range(GOOD_LEADS))  # each good lead qualified once
