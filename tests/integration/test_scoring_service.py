"""The scoring service end to end: the real broker, the worker as a separate process."""

import base64
import math
import signal
import time
from collections.abc import Callable

import orjson
import pytest

from streams.clock import Clock
from tests.integration.kafka import Received, journey, produce, read_until, run
from tests.integration.waits import wait_for_metric
from tests.integration.worker import WorkerProcess


def of(records: list[Received], topic: str) -> list[Received]:
    return [r for r in records if r.topic == topic]


# The last: fetches answered only when their wait ends (a journey is far below 1 MiB).
@pytest.mark.parametrize(
    "settings",
    [
        {"LEADSCORE_CONSUMPTION": "batch"},
        {"LEADSCORE_CONSUMPTION": "agent"},
        {"LEADSCORE_CONSUMPTION": "batch", "LEADSCORE_FETCH_MIN_BYTES": "1048576", "LEADSCORE_FETCH_WAIT_MS": "50"},
    ],
    ids=["batch", "agent", "batch-fetch-min-bytes"],
)
def test_a_journey_crossing_the_threshold_sends_exactly_one_mql_event(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str, settings: dict[str, str]
) -> None:
    worker = worker_factory(**settings)
    now = int(time.time() * 1000)
    run(produce(bootstrap, journey(names, "lead-a", now) + journey(names, "lead-b", now)[:2]))
    handoff = names + "mql-handoff"
    records = run(read_until(bootstrap, [handoff], lambda r: len(r) >= 1, timeout_s=60, settle_s=4))
    assert [r.key for r in records] == [b"lead-a"]
    mql = records[0].json()
    assert mql["lead_id"] == "lead-a"
    assert mql["crossing"] == 1
    # Every event of the journey is needed to reach 75; topics interleave, so any may come last.
    assert mql["triggering_event_id"] in {f"lead-a-{i}" for i in range(5)}
    assert {row["rule"] for row in mql["breakdown"]} >= {"pricing_page", "demo_webinar_attended", "company_midmarket"}
    assert mql["score"] >= 75
    assert mql["threshold"] == 75
    assert math.isclose(sum(row["points"] for row in mql["breakdown"]), mql["score"], abs_tol=0.01)
    assert math.isclose(mql["fit_score"] + mql["engagement_score"], mql["score"], abs_tol=0.01)
    status, lead = worker.get("/leads/lead-a")
    assert status == 200
    assert lead["stage"] == "mql"
    status, lead_b = worker.get("/leads/lead-b")
    assert lead_b["stage"] == "lead"
    assert worker.metric("leadscore_mql_events_total") == 1
    assert worker.metric("leadscore_events_consumed_total") == 7


def test_with_no_state_cache_a_lead_s_state_is_read_back_from_the_store_between_batches(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str
) -> None:
    worker = worker_factory(LEADSCORE_STATE_CACHE="0")
    now = int(time.time() * 1000)
    events = journey(names, "lead-c", now)
    run(produce(bootstrap, events[:4]))  # fit 32 and three pricing visits: 65, not yet an MQL
    assert wait_for_metric(worker, "leadscore_events_consumed_total", "", 4) == 4
    run(produce(bootstrap, events[4:]))  # the demo webinar, scored against the stored state
    handoff = names + "mql-handoff"
    records = run(read_until(bootstrap, [handoff], lambda r: len(r) >= 1, timeout_s=60, settle_s=3))
    assert [r.key for r in records] == [b"lead-c"]
    mql = records[0].json()
    assert mql["triggering_event_id"] == "lead-c-4"
    assert {row["rule"] for row in mql["breakdown"]} >= {"pricing_page", "demo_webinar_attended", "company_midmarket"}
    assert mql["score"] >= 75


def test_with_time_running_fast_a_silent_mql_returns_to_nurture_once(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str
) -> None:
    speed, epoch = 1_000_000.0, int(time.time() * 1000)  # 30 days pass in 2.6 s
    clock = Clock(speed, epoch)
    worker_factory(LEADSCORE_CLOCK_SPEED=str(speed), LEADSCORE_CLOCK_EPOCH_MS=str(epoch))
    start = clock.now_ms()
    run(produce(bootstrap, journey(names, "lead-n", start)))
    topics = [names + "mql-handoff", names + "lead-nurture"]
    records = run(read_until(bootstrap, topics, lambda r: len(of(r, topics[1])) >= 1, timeout_s=60, settle_s=5))
    mqls, nurtures = of(records, topics[0]), of(records, topics[1])
    assert len(mqls) == 1
    assert len(nurtures) == 1
    nurture = nurtures[0].json()
    assert nurture["reason"] == "decay"
    assert nurture["crossing"] == 1
    assert nurture["score"] < 40
    assert nurture["threshold"] == 40
    assert nurture["event_id"] != mqls[0].json()["event_id"]
    # It fell at the closed-form instant: fit 32 + 53 * 2^(-t/30d) < 39.995 after about 82 days.
    crossed = mqls[0].json()["crossed_at"]
    assert nurture["at"] > crossed


@pytest.mark.parametrize("data_dir", [0, 1], ids=["same-data-dir", "fresh-data-dir"])
def test_an_mql_killed_with_its_worker_still_returns_to_nurture_from_the_next_one(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str, data_dir: int
) -> None:
    # No event of the lead arrives after the restart (redelivered ones are duplicates): only the
    # due index, rebuilt from the recovered table, can send its nurture event.
    speed, epoch = 300_000.0, int(time.time() * 1000)  # the ~82 days to its nurture pass in ~24 s
    clock_env = {"LEADSCORE_CLOCK_SPEED": str(speed), "LEADSCORE_CLOCK_EPOCH_MS": str(epoch)}
    first = worker_factory(0, **clock_env)
    run(produce(bootstrap, journey(names, "lead-k", Clock(speed, epoch).now_ms())))
    topics = [names + "mql-handoff", names + "lead-nurture"]
    run(read_until(bootstrap, topics[:1], lambda r: len(r) >= 1, timeout_s=60))
    first.stop(signal.SIGKILL)
    second = worker_factory(data_dir, **clock_env)
    records = run(read_until(bootstrap, topics, lambda r: len(of(r, topics[1])) >= 1, timeout_s=120, settle_s=3))
    nurtures = of(records, topics[1])
    assert len({r.json()["event_id"] for r in nurtures}) == 1
    nurture = nurtures[0].json()
    assert (nurture["lead_id"], nurture["reason"], nurture["crossing"]) == ("lead-k", "decay", 1)
    assert nurture["at"] > of(records, topics[0])[0].json()["crossed_at"]
    assert second.metric("leadscore_nurture_events_total", 'reason="decay"') >= 1
    status, lead = second.get("/leads/lead-k")
    assert status == 200
    assert lead["stage"] == "nurture"


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_restarted_worker_recovers_from_the_changelog_and_sends_no_second_crossing(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str, stop_signal: int
) -> None:
    first = worker_factory(0)
    now = int(time.time() * 1000)
    run(produce(bootstrap, journey(names, "lead-r", now)))
    handoff = names + "mql-handoff"
    run(read_until(bootstrap, [handoff], lambda r: len(r) >= 1, timeout_s=60))
    first.stop(stop_signal)
    # A new data directory: the table can only come back from the changelog topic.
    second = worker_factory(1)
    # The whole journey redelivered, plus one more visit: still one crossing.
    extra = orjson.dumps({"event_id": "extra", "lead_id": "lead-r", "occurred_at": now + 100, "url": "/demo"})
    run(produce(bootstrap, [*journey(names, "lead-r", now), (names + "web-visits", b"lead-r", extra)]))
    deadline = time.monotonic() + 30
    while second.metric("leadscore_duplicate_events_total") < 5 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert second.metric("leadscore_duplicate_events_total") >= 5
    status, lead = second.get("/leads/lead-r")
    assert status == 200
    assert lead["stage"] == "mql"
    assert lead["crossings"] == 1
    records = run(read_until(bootstrap, [handoff], lambda r: False, timeout_s=5))
    if stop_signal == signal.SIGTERM:
        assert len(records) == 1  # a clean stop commits: nothing is redelivered or sent again
    # After kill -9, the input after the last commit is redelivered and the crossing may be sent
    # again, but always under the same event id: never two ids for one crossing.
    assert len({r.json()["event_id"] for r in records}) == 1
    assert {r.json()["crossing"] for r in records} == {1}


@pytest.mark.parametrize("consumption", ["batch", "agent"])
def test_bad_input_is_dead_lettered_while_good_events_around_it_are_scored(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str, consumption: str
) -> None:
    worker_factory(LEADSCORE_CONSUMPTION=consumption)
    now = int(time.time() * 1000)
    good = journey(names, "lead-g", now)
    visits = names + "web-visits"
    bad: list[tuple[str, bytes | None, bytes | None]] = [
        (visits, b"lead-x", b'{"event_id": "b1", "lead_id": "lead-x", '),  # malformed JSON
        (visits, b"lead-y", orjson.dumps({"event_id": "b2", "occurred_at": now, "url": "/pricing"})),
        (visits, b"lead-z", orjson.dumps({"event_id": "b3", "lead_id": "lead-z", "occurred_at": now, "url": 7})),
    ]
    run(produce(bootstrap, good[:2] + bad + good[2:]))
    topics = [names + "mql-handoff", names + "lead-dead-letters"]
    records = run(read_until(bootstrap, topics, lambda r: len(of(r, topics[0])) >= 1 and len(of(r, topics[1])) >= 3))
    letters = [r.json() for r in of(records, topics[1])]
    assert sorted(letter["reason"] for letter in letters) == ["invalid_json", "missing_field", "wrong_type"]
    by_key = {base64.b64decode(letter["key_b64"]): letter for letter in letters}
    for topic, key, value in bad:
        assert key is not None
        assert base64.b64decode(by_key[key]["value_b64"]) == value  # the original bytes, untouched
        assert by_key[key]["source_topic"] == topic
    headers = {dict(r.headers)["leadscore-reason"] for r in of(records, topics[1])}
    assert headers == {b"invalid_json", b"missing_field", b"wrong_type"}
    assert [r.json()["lead_id"] for r in of(records, topics[0])] == ["lead-g"]
