"""The compiled scoring core (deploy/compile-core.sh) produces byte for byte what its pure-Python
sources produce: the same outputs and encoded states on valid and hostile events of every kind;
and the build in place is never older than its sources."""

import importlib
import logging
import os
import random
import shutil
import subprocess
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

import orjson
import pytest

import scoring.engine
from scoring.compiled import COMPILED_MODULES, is_compiled, is_extension
from scoring.engine import InputRecord
from scoring.events import EventKind
from streams import core_build
from streams.bench_input import SPREAD_MS, TAIL_MS, catch_up_input, partition_for
from streams.metrics import Metrics
from streams.monitoring import report_scoring_core
from streams.settings import TopicNames
from streams.synthetic import history
from tests.conftest import DEFAULT_RULES
from tests.unit import core_runner
from tests.unit.test_fuzz import CORPUS as HOSTILE_VALUES

ROOT = Path(__file__).resolve().parents[2]
NOW_MS = 1_780_000_000_000
SEED = 11
PARTITIONS = 4
needs_compiled = pytest.mark.skipif(
    not is_compiled(),
    reason="the scoring core is not compiled (run deploy/compile-core.sh; deploy/run-tests.sh does)",
)

# Field values that JSON can carry and the core must refuse, or accept, alike.
ODD_VALUES: list[object] = [
    None, True, False, 0, -1, 2**63 - 1, -(2**63), 1.5, -0.0, "", " ", "x" * 5000, "/pricing?a=1#b", "HTTPS://X.EXAMPLE",
    "https://[::1", "mailto:someone", "//no-scheme", "2026-01-01T00:00:00", "2026-05-01T10:00:00+02:00", "nobody@",
    "@x.io", "a@b.c", "intern", "owner", "open", "click", "attended", "registered", "sql", "won", "lost", "rejected",
    "accepted", ["a"], {"a": 1}, "\u00e9\u00e8", "\ud7ff",
]  # fmt: skip
FIELDS = [
    "event_id", "lead_id", "occurred_at", "requested_at", "url", "referrer", "anonymous_id", "utm_source", "action",
    "campaign_id", "asset_id", "asset_type", "title", "webinar_id", "status", "minutes_attended", "webinar_type",
    "job_title", "seniority", "company_size", "industry", "country", "email", "outcome", "reason",
]  # fmt: skip


Raw = tuple[str, bytes | None, bytes | None]  # topic, key, value


def _realistic(topics: TopicNames) -> list[Raw]:
    """Journeys of the demo generator, their sales outcomes and a few erasures, in time order."""
    names = {kind: topic for topic, kind in topics.inbound().items()}
    raw: list[tuple[int, str, bytes, bytes]] = []
    for r in catch_up_input(SEED, 150, 2500, NOW_MS, topics).records:
        raw.append((orjson.loads(r.value)["occurred_at"], r.topic, r.key, r.value))
    journeys = history(SEED, 150, NOW_MS - TAIL_MS - SPREAD_MS, SPREAD_MS)
    for j in journeys:
        raw.extend((e.occurred_at, names[e.kind], e.lead_id.encode(), orjson.dumps(e.payload)) for e in j.outcomes)
    for i, j in enumerate(journeys[::15]):
        at = NOW_MS - (i % 9) * 10 * 86_400_000
        payload = {"event_id": f"erasure-{i}", "lead_id": j.lead_id, "requested_at": at}
        raw.append((at, topics.erasures, j.lead_id.encode(), orjson.dumps(payload)))
    raw.sort(key=lambda t: t[0])
    return [(topic, key, value) for _, topic, key, value in raw]


def _hostile(rng: random.Random, topic: str, key: bytes | None, value: bytes | None) -> list[Raw]:
    """Variations of one record: duplicated, broken, mistyped, mis-keyed, too late or too early."""
    if value is None:
        return []
    payload = orjson.loads(value)
    odd = {**payload, rng.choice(FIELDS): rng.choice(ODD_VALUES), "event_id": f"{payload['event_id']}-odd"}
    if rng.random() < 0.3:
        odd["event_id"] = rng.choice(ODD_VALUES)
    out: list[Raw] = [(topic, key, orjson.dumps(odd))]
    choice = rng.randrange(9)
    if choice == 0:
        out.append((topic, key, value))  # a duplicate
    elif choice == 1:
        out.append((topic, key, rng.choice(HOSTILE_VALUES)))
    elif choice == 2:
        out.append(("unknown-topic", key, value))
    elif choice == 3:
        out.append((topic, b"someone-else", value))
    elif choice == 4:
        out.append((topic, None, value))
    elif choice == 5 and "occurred_at" in payload:
        late = {**payload, "occurred_at": payload["occurred_at"] - 400 * 86_400_000, "event_id": "late"}
        out.append((topic, key, orjson.dumps(late)))
    elif choice == 6:
        out.append((topic, key, orjson.dumps({**payload, "occurred_at": NOW_MS + 7_200_000, "event_id": "future"})))
    elif choice == 7:  # a visit not yet tied to a lead (refused for other kinds: no lead_id)
        anonymous = {k: v for k, v in payload.items() if k != "lead_id"}
        anonymous.setdefault("anonymous_id", f"anon-{payload['event_id']}")
        out.append((topic, str(anonymous["anonymous_id"]).encode(), orjson.dumps(anonymous)))
    elif choice == 8:
        cursed = orjson.dumps({**payload, "lead_id": core_runner.CURSED_LEAD})
        out += [(topic, key, cursed), (topic, core_runner.CURSED_LEAD.encode(), cursed)]
    return out


def corpus_records() -> list[InputRecord]:
    """Realistic records of every kind with hostile ones mixed in, on a few partitions, in offset order."""
    topics = TopicNames()
    inbound: dict[str, EventKind | None] = dict(topics.inbound())
    rng = random.Random(SEED)
    mixed: list[Raw] = []
    for topic, key, value in _realistic(topics):
        mixed.append((topic, key, value))
        if rng.random() < 0.08:
            mixed.extend(_hostile(rng, topic, key, value))
    mixed.extend((t, k, v) for t in inbound for k, v in ((b"lead-1", h) for h in HOSTILE_VALUES))
    offsets = [0] * PARTITIONS
    records = []
    for topic, key, value in mixed:
        partition = partition_for(key, PARTITIONS) if key else 0
        records.append(InputRecord(inbound.get(topic), topic, partition, offsets[partition], key, value))
        offsets[partition] += 1
    return records


def corpus_rules() -> tuple[list[str], list[str]]:
    """The default rules and variants (a lead that fits nothing can qualify; tiny duplicate memory
    and late window), and rules files that must fail to parse."""
    default = DEFAULT_RULES.read_text()
    loose = default.replace("mql = 75\nnurture = 40", "mql = 30\nnurture = 20").replace("max = 35", "max = 15")
    tight = default.replace("max_tracked_events = 1000", "max_tracked_events = 4").replace('"365d"', '"20d"')
    assert loose != default
    assert tight != default
    broken = [
        "[thresholds\n",
        default.replace("mql = 75", "mql = 10"),
        default.replace('half_life = "30d"', 'half_life = "soon"'),
        default + '\n[[fit_rules]]\nid = "x"\nattribute = "shoe_size"\npoints = 1\nin = ["9"]\n',
        default + '\n[[engagement_rules]]\nid = "y"\nevent = "web_visit"\npoints = 1\nurl = "pricing"\n',
    ]
    return [default, loose, tight], broken


def corpus_states() -> list[bytes]:
    """Encoded states to read back: both formats, and unreadable ones."""
    format1 = (
        b'{"f":1,"id":"old","p":{"seniority":"vp"},"pa":{"seniority":5},"r":10,"v":{"pricing_page":12.5},'
        b'"c":{"pricing_page":1},"w":{},"s":{"e1":10},"sf":-1,"fe":10,"le":10,"st":"mql","x":1,"m":10,"d":99,'
        b'"t":"e1","pt":3}'
    )
    return [format1, format1.replace(b'"f":1', b'"f":2'), format1.replace(b'"f":1', b'"f":9'), b'{"f":2}']


def observations(tmp_path: Path, interpreted: bool) -> list[bytes]:
    """The runner's output on the corpus: in this process (the build in place), or in a subprocess
    that sees only a copy of the pure-Python sources of ``scoring/``."""
    corpus = tmp_path / "corpus.json"
    if not corpus.exists():
        rules, broken = corpus_rules()
        core_runner.write_corpus(corpus, corpus_records(), rules, broken, corpus_states(), NOW_MS)
    if not interpreted:
        lines = [orjson.dumps(scoring.engine.__file__)]
        lines += core_runner.observe(core_runner.read_corpus(corpus))
        return lines
    sources = tmp_path / "sources"
    (sources / "scoring").mkdir(parents=True)
    for path in (ROOT / "scoring").glob("*.py"):
        shutil.copy(path, sources / "scoring" / path.name)
    env = {**os.environ, "PYTHONPATH": str(sources)}
    command = [sys.executable, str(Path(core_runner.__file__)), str(corpus)]
    done = subprocess.run(command, env=env, capture_output=True, check=True, timeout=300)
    return done.stdout.splitlines()


def test_the_corpus_covers_every_kind_and_every_refusal() -> None:
    records = corpus_records()
    assert {r.kind for r in records} == {*EventKind, None}
    rules, _ = corpus_rules()
    corpus = {"records": records, "rules": rules[:1], "broken_rules": [], "states": [], "now_ms": NOW_MS}
    results = [orjson.loads(line) for line in core_runner.observe(corpus) if line.startswith(b'{"states"')]
    reasons = {dead["reason"] for result in results for dead, _ in result["dead"]}
    assert reasons >= {"invalid_json", "not_an_object", "wrong_type", "missing_field", "invalid_value", "missing_key"}
    assert reasons >= {"key_mismatch", "unknown_topic", "too_late", "timestamp_out_of_range", "invalid_transition"}
    assert "scoring_error" in reasons  # the state lookup that fails
    assert sum(len(result["mql"]) for result in results) > 10
    assert sum(len(result["nurture"]) for result in results) > 10
    assert sum(len(result["anonymous"]) for result in results) > 0
    assert sum(len(result["deleted"]) for result in results) > 0


@needs_compiled
def test_the_compiled_core_produces_what_its_sources_produce(tmp_path: Path) -> None:
    compiled = observations(tmp_path, interpreted=False)
    interpreted = observations(tmp_path, interpreted=True)
    assert is_extension(orjson.loads(compiled[0]))
    assert orjson.loads(interpreted[0]) == str(tmp_path / "sources" / "scoring" / "engine.py")
    assert len(compiled) > 1000
    for i, (got, want) in enumerate(zip(compiled[1:], interpreted[1:], strict=True)):
        assert got == want, f"observation {i} differs: compiled {got[:2000]!r} != sources {want[:2000]!r}"


@needs_compiled
def test_every_hot_module_is_compiled() -> None:
    modules = [importlib.import_module(name) for name in COMPILED_MODULES]
    assert [m.__name__ for m in modules if not is_extension(m.__file__)] == []


def test_the_build_in_place_is_not_stale() -> None:
    # The session would not have started (tests/conftest.py); checked here too for a plain import.
    assert core_build.stale_reason(ROOT) is None


def test_a_stale_build_is_detected(tmp_path: Path) -> None:
    (tmp_path / "scoring").mkdir()
    for name in COMPILED_MODULES:
        shutil.copy(ROOT / (name.replace(".", "/") + ".py"), tmp_path / (name.replace(".", "/") + ".py"))
    assert core_build.stale_reason(tmp_path) is None  # nothing compiled: the sources run
    extension = tmp_path / "scoring" / f"engine{EXTENSION_SUFFIXES[0]}"
    extension.write_bytes(b"")
    assert "no scoring/.compiled-sources" in str(core_build.stale_reason(tmp_path))
    (tmp_path / core_build.RECORD).write_text(core_build.sources_digest(tmp_path) + "\n")
    assert core_build.stale_reason(tmp_path) is None
    engine = tmp_path / "scoring" / "engine.py"
    engine.write_text(engine.read_text() + "\n# edited\n")
    reason = core_build.stale_reason(tmp_path)
    assert reason is not None
    assert reason.startswith(core_build.STALE_HINT)


def test_the_worker_reports_whether_the_core_is_compiled(caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics("0.0.0", "rules")
    assert metrics.registry.get_sample_value("leadscore_scoring_core_compiled") == float(is_compiled())
    with caplog.at_level(logging.INFO, logger="streams.monitoring"):
        report_scoring_core()
    expected = "scoring core compiled" if is_compiled() else "scoring core interpreted (pure-Python sources)"
    assert [r.getMessage() for r in caplog.records] == [expected]
