"""Runs the scoring core over a corpus and writes down everything it produced, byte for byte.

Imports nothing but the scoring core, orjson and the standard library, so that it runs as well
against a copy of the core's pure-Python sources (``PYTHONPATH`` pointing at that copy)::

    python tests/unit/core_runner.py CORPUS.json

reads a corpus written by :func:`write_corpus` and prints, as JSON lines, the module file of the
scorer in use and then every observation of :func:`observe`.
"""

import base64
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from scoring.engine import BatchResult, Erased, InputRecord, Scorer
from scoring.errors import RulesError
from scoring.events import EventKind
from scoring.outputs import Score
from scoring.rules import parse_rules
from scoring.state import LeadState, decode_state, encode_state

DAY_MS = 86_400_000
# A lead whose state lookup raises: the scorer must dead-letter its records as scoring errors.
CURSED_LEAD = "lead-cursed"


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def _unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


def write_corpus(
    path: Path, records: list[InputRecord], rules: list[str], broken_rules: list[str], states: list[bytes], now_ms: int
) -> None:
    """Write a corpus: records in offset order, rules files to score them with, rules files that
    must fail to parse, encoded states to decode, and the batches' ``now``."""
    rows = [
        (r.kind.value if r.kind else None, r.topic, r.partition, r.offset, _b64(r.key), _b64(r.value)) for r in records
    ]
    doc = {"records": rows, "rules": rules, "broken_rules": broken_rules, "states": [_b64(s) for s in states]}
    path.write_bytes(orjson.dumps({**doc, "now_ms": now_ms}))


def read_corpus(path: Path) -> dict[str, Any]:
    """The corpus written by :func:`write_corpus`, with records and states decoded."""
    doc: dict[str, Any] = orjson.loads(path.read_bytes())
    doc["records"] = [
        InputRecord(EventKind(k) if k else None, t, p, o, _unb64(key), _unb64(value))
        for k, t, p, o, key, value in doc["records"]
    ]
    doc["states"] = [_unb64(s) for s in doc["states"]]
    return doc


class _CursedStates(Mapping[str, LeadState]):
    """Known states, except that looking up :data:`CURSED_LEAD` fails (a bug outside the core)."""

    def __init__(self, states: dict[str, LeadState]) -> None:
        self._states = states

    def __getitem__(self, key: str) -> LeadState:
        if key == CURSED_LEAD:
            raise RuntimeError("the state store failed")
        return self._states[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._states)

    def __len__(self) -> int:
        return len(self._states)


def _score(score: Score) -> list[Any]:
    return [score.score, score.fit, score.engagement, [row.to_payload() for row in score.breakdown]]


def _result(result: BatchResult, now_ms: int) -> bytes:
    return orjson.dumps(
        {
            "states": {lead: encode_state(state).decode() for lead, state in sorted(result.states.items())},
            "mql": [[m.event_id, m.to_payload()] for m in result.mql],
            "nurture": [[n.event_id, n.to_payload()] for n in result.nurture],
            "dead": [[d.to_payload(now_ms), _b64(d.record_key())] for d in result.dead_letters],
            "transitions": [[t.lead_id, t.from_stage, t.to_stage, t.at, t.rules_version] for t in result.transitions],
            "counts": [result.scored, result.duplicates, result.capped, result.erased_dropped],
            "by_kind": sorted(result.events_by_kind.items()),
            "feedback": sorted(result.feedback.items()),
            "anonymous": [[r.partition, r.offset] for r in result.anonymous],
            "email_links": result.email_links,
            "deleted": sorted(result.deleted),
            "erased": sorted((lead, list(mark)) for lead, mark in result.erased.items()),
        }
    )


def _batches(records: list[InputRecord], size: int) -> list[list[InputRecord]]:
    """Per-partition batches of ``size`` records, in the order they fill up."""
    buffers: dict[int, list[InputRecord]] = {}
    batches = []
    for record in records:
        buffer = buffers.setdefault(record.partition, [])
        buffer.append(record)
        if len(buffer) >= size:
            batches.append(buffer)
            buffers[record.partition] = []
    batches.extend(b for b in buffers.values() if b)
    return batches


def observe(corpus: dict[str, Any]) -> Iterator[bytes]:
    """Everything the core produces on the corpus: per rules file, each batch's result (states read
    back from their encoding, as after a restart), the scores, due times and returns to nurture of
    every lead at several instants; the errors of broken rules files; decoded and re-encoded states."""
    now_ms: int = corpus["now_ms"]
    for rules_text in corpus["rules"]:
        rules = parse_rules(rules_text)
        yield orjson.dumps(["rules", rules.version, len(rules.fit_rules), len(rules.engagement_rules)])
        scorer = Scorer(rules)
        table: dict[str, bytes] = {}
        marks: dict[str, Erased] = {}
        for batch in _batches(corpus["records"], 37):
            keys = {r.key.decode("utf-8", "replace") for r in batch if r.key}
            states = _CursedStates({k: decode_state(table[k]) for k in keys if k in table})
            result = scorer.process_batch(batch, states, now_ms, {k: marks[k] for k in keys if k in marks})
            yield _result(result, now_ms)
            for lead in result.deleted:
                table.pop(lead, None)
            marks.update(result.erased)
            for lead, state in result.states.items():
                table[lead] = encode_state(state)
        for at in (now_ms, now_ms + 3 * DAY_MS, now_ms + 45 * DAY_MS, now_ms + 400 * DAY_MS):
            for lead, raw in sorted(table.items()):
                state = decode_state(raw)
                due = scorer.due_at(state, at)
                yield orjson.dumps(
                    [lead, at, _score(scorer.score_at(state, at)), scorer.reported_score(state, at), due]
                )
            settled = scorer.expire_due([decode_state(raw) for _, raw in sorted(table.items())], at)
            yield _result(settled, at)
    for text in corpus["broken_rules"]:
        try:
            parse_rules(text, "broken.toml")
        except RulesError as exc:
            yield orjson.dumps(["rules error", str(exc)])
        else:
            yield orjson.dumps(["rules accepted", text])
    for raw in corpus["states"]:
        try:
            yield orjson.dumps(["state", encode_state(decode_state(raw)).decode()])
        except (ValueError, KeyError) as exc:
            yield orjson.dumps(["state error", type(exc).__name__, str(exc)])


def main(argv: list[str]) -> int:
    """Print the scorer's module file, then the observations on the corpus ``argv[0]``."""
    import scoring.engine

    out = sys.stdout.buffer
    out.write(orjson.dumps(scoring.engine.__file__) + b"\n")
    for line in observe(read_corpus(Path(argv[0]))):
        out.write(line + b"\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
