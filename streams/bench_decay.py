"""The decay path, in-process and pure: a tick with the due index against a full scan.

A table of ``leads`` encoded MQL states (copies of a real state the scoring core produced for a
qualifying synthetic journey) with due times spread evenly over ``HORIZON_MS`` after ``now``. A
tick at ``now + f * HORIZON_MS`` finds the leads due by then:

- due index (``scoring.due_index.DueIndex``, as the worker keeps it): pop the due leads of every
  partition and decode their states;
- full scan: decode every state and keep those due.

Ticks at growing instants pop 0.1%, then 1%, then 10% more of the table from one index, to show
that its cost follows the number of leads due, not the table's size.
"""

import dataclasses
import random
import time
from typing import Any

import orjson

from scoring.due_index import DueIndex
from scoring.engine import InputRecord, Scorer
from scoring.state import LeadState, Stage, decode_state, encode_state
from streams.synthetic import journey, lead_id_for

HORIZON_MS = 10_000_000
DUE_STEPS = (0.001, 0.01, 0.1)  # successive ticks: the share of the table each one finds due
HEADLINE = 0.01


def mql_state(scorer: Scorer, now_ms: int, seed: int = 3) -> LeadState:
    """A real MQL state: the first synthetic journey that crosses the threshold, scored at ``now_ms``."""
    rng = random.Random(seed)
    for i in range(10_000):
        j = journey(rng, lead_id_for(i, seed), now_ms)
        records = [
            InputRecord(
                e.kind, e.kind.value, 0, n, j.lead_id.encode(), orjson.dumps({**e.payload, "occurred_at": now_ms})
            )
            for n, e in enumerate(j.events)
        ]
        result = scorer.process_batch(records, {}, now_ms)
        if result.mql:
            return result.states[j.lead_id]
    raise RuntimeError("no synthetic journey crossed the MQL threshold")


def build_table(template: LeadState, leads: int, partitions: int, now_ms: int) -> dict[bytes, bytes]:
    """``leads`` encoded MQL states, due evenly over the horizon in a shuffled order."""
    ranks = list(range(leads))
    random.Random(5).shuffle(ranks)
    step = HORIZON_MS / max(leads, 1)
    table: dict[bytes, bytes] = {}
    for i, rank in enumerate(ranks):
        lead_id = f"lead-{i:07d}"
        state = dataclasses.replace(
            template, lead_id=lead_id, due_at=now_ms + 1 + int(rank * step), partition=i % partitions, stage=Stage.MQL
        )
        table[lead_id.encode()] = encode_state(state)
    return table


def full_scan(table: dict[bytes, bytes], at_ms: int) -> list[LeadState]:
    """Decode every state; keep the qualified ones due by ``at_ms``."""
    due = []
    for raw in table.values():
        state = decode_state(raw)
        if state.stage is Stage.MQL and state.due_at is not None and state.due_at <= at_ms:
            due.append(state)
    return due


def index_tick(index: DueIndex, table: dict[bytes, bytes], partitions: int, at_ms: int) -> list[LeadState]:
    """Pop the due leads of every partition and decode their states."""
    return [decode_state(table[lead.encode()]) for p in range(partitions) for lead in index.pop_due(p, at_ms)]


def _timed(fn: Any, *args: Any) -> tuple[Any, float]:
    began = time.perf_counter()
    value = fn(*args)
    return value, time.perf_counter() - began


def decay_bench(scorer: Scorer, leads: int, partitions: int = 8) -> dict[str, Any]:
    """Time the due index (schedule, then ticks) and a full scan over ``leads`` leads."""
    now_ms = int(time.time() * 1000)
    template = mql_state(scorer, now_ms)
    table, build_s = _timed(build_table, template, leads, partitions, now_ms)
    index = DueIndex()
    began = time.perf_counter()
    for raw in table.values():
        state = decode_state(raw)
        index.schedule(state.partition, state.lead_id, state.due_at)
    schedule_s = time.perf_counter() - began
    ticks = []
    cumulative = 0.0
    for share in DUE_STEPS:
        cumulative += share
        due, took = _timed(index_tick, index, table, partitions, now_ms + int(cumulative * HORIZON_MS))
        ticks.append(
            {"due_share": share, "due": len(due), "tick_s": took, "us_per_due_lead": took / max(len(due), 1) * 1e6}
        )
    headline = next(t for t in ticks if t["due_share"] == HEADLINE)
    scanned, scan_s = _timed(full_scan, table, now_ms + int(HEADLINE * HORIZON_MS))
    per_lead = [t["us_per_due_lead"] for t in ticks]
    return {
        "leads": leads,
        "partitions": partitions,
        "state_bytes": len(next(iter(table.values()))) if table else 0,
        "build_s": round(build_s, 3),
        "due_index": {
            "schedule_s": round(schedule_s, 3),
            "schedule_us_per_lead": round(schedule_s / max(leads, 1) * 1e6, 3),
            "due": headline["due"],
            "tick_s": round(headline["tick_s"], 6),
            "ticks": [{k: round(v, 6) if isinstance(v, float) else v for k, v in t.items()} for t in ticks],
            "per_due_lead_spread": round(max(per_lead) / max(min(per_lead), 1e-12), 2),
        },
        "full_scan": {"due": len(scanned), "tick_s": round(scan_s, 6)},
        "speedup": round(scan_s / max(headline["tick_s"], 1e-12), 1),
        "method": (
            "in-process, pure: one tick finding 1% of the table due; the due index pops the due leads of "
            "every partition and decodes their states, the full scan decodes every state and checks its due "
            "time; ticks at 0.1%, 1% and 10% show the index's cost per due lead"
        ),
    }
