"""Closing the loop against the real broker: sales feedback moves leads through the stage machine,
sales-owned leads do not decay, /funnel counts them, and replay gives exactly the live scores."""

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from streams.clock import Clock
from streams.history import event_line
from streams.synthetic import TimedEvent, history
from tests.integration.kafka import TOPICS, Message, Received, journey, produce, read_until, run
from tests.integration.worker import ROOT, WorkerProcess


def feedback(names: str, lead: str, event_id: str, at: int, outcome: str) -> Message:
    value = {"event_id": event_id, "lead_id": lead, "occurred_at": at, "outcome": outcome}
    return names + "sales-feedback", lead.encode(), orjson.dumps(value)


def of(records: list[Received], topic: str, lead: str | None = None) -> list[Any]:
    return [r.json() for r in records if r.topic == topic and (lead is None or r.key == lead.encode())]


def metric(worker: WorkerProcess, name: str, **labels: str) -> float:
    """The sum of a metric's samples that carry all ``labels`` (in any order)."""
    status, text = worker.get("/metrics")
    assert status == 200
    wanted = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for line in str(text).splitlines():
        sample, _, value = line.rpartition(" ")
        if sample.split("{", 1)[0] == name and all(label in sample for label in wanted):
            total += float(value)
    return total


def wait_for(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_rejected_mql_returns_to_nurture_once_with_reason_sales_rejected(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str
) -> None:
    worker = worker_factory()
    now = int(time.time() * 1000)
    run(produce(bootstrap, journey(names, "lead-rj", now)))
    handoff, nurture, letters = names + "mql-handoff", names + "lead-nurture", names + "lead-dead-letters"
    run(read_until(bootstrap, [handoff], lambda r: len(r) >= 1, timeout_s=60))
    impossible = feedback(names, "lead-never", "f-won", now + 1_000, "won")
    run(produce(bootstrap, [feedback(names, "lead-rj", "f-rej", now + 1_000, "rejected"), impossible]))
    records = run(
        read_until(
            bootstrap,
            [handoff, nurture, letters],
            lambda r: len(of(r, nurture)) >= 1 and len(of(r, letters)) >= 1,
            timeout_s=60,
            settle_s=4,
        )
    )
    (mql,) = of(records, handoff)
    (back,) = of(records, nurture)  # exactly one
    assert back["reason"] == "sales_rejected"
    assert back["crossing"] == mql["crossing"] == 1
    assert back["event_id"] != mql["event_id"]
    assert back["score"] == 32  # engagement reset: the fit alone
    assert [letter["reason"] for letter in of(records, letters)] == ["invalid_transition"]
    status, lead = worker.get("/leads/lead-rj")
    assert status == 200
    assert lead["stage"] == "nurture"
    assert lead["first_touch_source"] == "linkedin"
    assert metric(worker, "leadscore_feedback_events_total", outcome="rejected") == 1
    assert metric(worker, "leadscore_funnel_transitions_total", from_stage="mql", to_stage="nurture") == 1
    assert metric(worker, "leadscore_funnel_transitions_total", from_stage="lead", to_stage="mql") == 1
    assert metric(worker, "leadscore_funnel_transitions_total") == 2
    assert metric(worker, "leadscore_dead_letters_total", reason="invalid_transition") == 1


def test_a_sales_qualified_lead_does_not_decay_and_the_funnel_counts_it(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str
) -> None:
    speed, epoch = 500_000.0, int(time.time() * 1000)  # 30 days pass in 5.2 s
    clock = Clock(speed, epoch)
    worker = worker_factory(LEADSCORE_CLOCK_SPEED=str(speed), LEADSCORE_CLOCK_EPOCH_MS=str(epoch))
    start = clock.now_ms()
    run(produce(bootstrap, journey(names, "lead-sql", start) + journey(names, "lead-quiet", start)))
    handoff, nurture = names + "mql-handoff", names + "lead-nurture"
    run(read_until(bootstrap, [handoff], lambda r: len(r) >= 2, timeout_s=60))
    at = clock.now_ms()
    sales = [feedback(names, "lead-sql", "f1", at, "accepted"), feedback(names, "lead-sql", "f2", at + 1, "sql")]
    run(produce(bootstrap, sales))
    wait_for(lambda: worker.get("/leads/lead-sql")[1]["stage"] == "sql")
    # The quiet MQL decays back to nurture about 82 simulated days after it qualified (~14 s);
    # the SQL lead, with the same journey, would have fallen at the same instant.
    records = run(read_until(bootstrap, [nurture], lambda r: len(of(r, nurture)) >= 1, timeout_s=90, settle_s=6))
    assert [(n["lead_id"], n["reason"]) for n in of(records, nurture)] == [("lead-quiet", "decay")]
    status, lead = worker.get("/leads/lead-sql")
    assert status == 200
    assert lead["stage"] == "sql"
    assert lead["due_for_nurture_ms"] is None
    assert lead["score"] < 40  # decayed far below the nurture threshold, and still sales'
    assert lead["stage_times_ms"]["sql"] == at + 1
    assert lead["stage_times_ms"]["sal"] == at

    status, funnel = worker.get("/funnel")
    assert status == 200
    assert funnel["leads"] == 2
    assert {k: v for k, v in funnel["stages"].items() if v} == {"sql": 1, "nurture": 1}
    overall = funnel["overall"]
    assert (overall["mql"], overall["sal"], overall["sql"], overall["won"]) == (2, 1, 1, 0)
    assert (overall["mql_to_sal"], overall["mql_to_sql"], overall["sql_to_won"]) == (0.5, 0.5, 0.0)
    assert overall["median_mql_to_sql_ms"] > 0
    assert list(funnel["by_source"]) == ["linkedin"]
    (version,) = funnel["by_rules_version"]
    assert version == lead["rules_version"]
    assert funnel["by_rules_version"][version]["mql"] == 2


def _shifted_history(end_ms: int) -> list[TimedEvent]:
    """A synthetic history with sales outcomes, moved in time so that it ends at ``end_ms``."""
    journeys = history(6, 60, 0, 10 * 86_400_000)  # 9 MQL crossings, some rejected, some won
    events = [e for j in journeys for e in (*j.events, *j.outcomes)]
    shift = end_ms - max(e.occurred_at for e in events)
    return [
        TimedEvent(e.kind, e.lead_id, {**e.payload, "occurred_at": e.occurred_at + shift})
        for e in sorted(events, key=lambda e: e.occurred_at)
    ]


def replayed_mql(output: Path, *source: str, env: dict[str, str] | None = None) -> list[Any]:
    """The MQL events ``leadscore replay`` writes for a history, sorted by lead and crossing."""
    rules = str(ROOT / "scoring" / "default_rules.toml")
    done = subprocess.run(
        [sys.executable, "-m", "streams", "replay", "--rules", rules, *source, "--output", str(output)],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = [line for line in map(orjson.loads, output.read_bytes().splitlines()) if line["stage"] == "mql"]
    assert lines, done.stdout
    return sorted(lines, key=lambda m: (m["lead_id"], m["crossing"]))


def test_replay_gives_exactly_the_live_scores_on_the_same_input(
    worker_factory: Callable[..., WorkerProcess], bootstrap: str, names: str, tmp_path: Path
) -> None:
    """The same history, live and replayed, gives the same MQL events: same leads, crossings, times,
    scores and breakdowns. Live, each lead's events arrive in time order (in waves: the n-th event
    of every lead, then the next), as events do in production. Decay ticks are off: a history
    compressed into seconds would let a wall-clock tick settle a lead whose older events had not
    been sent yet, which cannot happen to events that arrive on time."""
    worker = worker_factory(LEADSCORE_TICK_INTERVAL="3600")
    events = _shifted_history(int(time.time() * 1000) - 120_000)
    path = tmp_path / "history.jsonl"
    path.write_bytes(b"".join(event_line(e) + b"\n" for e in events))
    by_lead: dict[str, list[TimedEvent]] = {}
    for event in events:
        by_lead.setdefault(event.lead_id, []).append(event)
    sent = 0
    for wave in range(max(len(lead) for lead in by_lead.values())):
        batch = [lead[wave] for lead in by_lead.values() if wave < len(lead)]
        run(produce(bootstrap, [(names + TOPICS[e.kind.value], e.lead_id.encode(), event_line(e)) for e in batch]))
        sent += len(batch)
        wait_for(lambda: worker.metric("leadscore_events_consumed_total") >= sent)  # noqa: B023
        time.sleep(0.2)  # the batch's states are written after its outputs are sent
    from_file = replayed_mql(tmp_path / "from-file.jsonl", "--events", str(path))
    assert len(from_file) >= 5
    handoff = [names + "mql-handoff"]
    live = run(read_until(bootstrap, handoff, lambda r: len(r) >= len(from_file), timeout_s=30, settle_s=2))
    live_mql = sorted((r.json() for r in live), key=lambda m: (m["lead_id"], m["crossing"]))
    assert live_mql == from_file
    # The same history read back from the inbound topics, without a consumer group.
    env = {"LEADSCORE_BOOTSTRAP": bootstrap}
    assert live_mql == replayed_mql(tmp_path / "from-topics.jsonl", "--from-topics", "--topic-prefix", names, env=env)
    assert metric(worker, "leadscore_feedback_events_total") > 0  # the history's feedback was applied too
