"""The benchmark's pure parts: input, measurements, percentiles, profile sums and the report
(the PNG chart is checked by the integration test: importing matplotlib costs half a second)."""

import os
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner
from click.testing import CliRunner

from scoring.engine import Scorer
from scoring.events import EventKind
from streams import bench, bench_proc
from streams.bench import PARTS, BenchOptions, Run, cpu_by_step, parse_skip, settings_of, source_digests_in
from streams.bench_decay import decay_bench
from streams.bench_input import JourneyStream, catch_up_input, latency_templates, partition_for, profile_records
from streams.bench_latency import WORKER_HISTOGRAMS, bucket_quantile, histogram_buckets, percentile
from streams.bench_proc import (
    Sample,
    clean_env,
    cpu_seconds,
    log_marks,
    peak_rss_bytes,
    source_digest,
    thread_cpu_seconds,
    throughput,
)
from streams.bench_profile import summarize
from streams.bench_report import markdown, targets
from streams.settings import TopicNames

NOW = 1_800_000_000_000


def test_skip_names_known_parts_only() -> None:
    assert parse_skip(" recovery, decay ,") == {"recovery", "decay"}
    assert parse_skip("") == frozenset()
    with pytest.raises(ValueError, match="unknown part"):
        parse_skip("baseline,warp")
    assert not BenchOptions(skip=frozenset({"leadscore"})).runs("latency")
    assert all(BenchOptions().runs(part) for part in PARTS)


def test_partitioner_is_kafkas_default() -> None:
    for i in range(200):
        key = f"lead-{i:06x}".encode()
        assert partition_for(key, 8) == DefaultPartitioner()(key, list(range(8)), list(range(8)))


def test_catch_up_input_has_exactly_the_events_asked_in_time_order_all_in_the_past() -> None:
    data = catch_up_input(1, 50, 1500, NOW, TopicNames())  # 50 journeys hold ~500: more rounds
    assert len(data.records) == 1500
    payloads = [orjson.loads(r.value) for r in data.records]
    times = [p["occurred_at"] for p in payloads]
    assert times == sorted(times)
    assert max(times) <= NOW
    assert len({p["event_id"] for p in payloads}) == 1500
    assert data.leads == len({p["lead_id"] for p in payloads}) <= 50
    assert all(r.key == p["lead_id"].encode() for r, p in zip(data.records, payloads, strict=True))
    assert [r.timestamp_ms for r in data.records] == times  # stamped with their event times, as a backfill
    assert sum(data.by_topic.values()) == 1500
    assert "web-visits" in data.by_topic


def test_profile_records_make_one_lead_each() -> None:
    records = list(profile_records(3, NOW, "lead-profiles"))
    assert [r.key for r in records] == [b"rec-0000000", b"rec-0000001", b"rec-0000002"]
    assert all(orjson.loads(r.value)["lead_id"] == r.key.decode() for r in records)


def test_latency_journeys_are_fresh_and_biased_towards_qualifying(scorer: Scorer) -> None:
    templates = latency_templates(11, 150, scorer, NOW)
    assert templates.qualifying
    assert templates.other
    assert 0 < templates.natural_share < 1
    stream = iter(JourneyStream(templates, 0.5, "r1", seed=1))
    events = [next(stream) for _ in range(2000)]
    assert len({payload["event_id"] for _, _, payload in events}) == 2000
    assert all(payload["lead_id"] == lead for _, lead, payload in events)
    assert all(isinstance(kind, EventKind) for kind, _, _ in events)
    # Each lead is a new person: no e-mail address or anonymous id is shared by two leads.
    for field in ("email", "anonymous_id"):
        owners = {payload[field]: lead for _, lead, payload in events if field in payload}
        assert len(owners) == len({lead for _, lead, payload in events if field in payload}) > 10
    domains = {p["email"].rpartition("@")[2] for _, _, p in events if "email" in p}
    assert domains <= {
        p["email"].rpartition("@")[2]
        for t in templates.qualifying + templates.other
        for p in t.payloads
        if "email" in p
    }


def test_percentile_interpolates() -> None:
    assert percentile([], 0.5) == 0.0
    assert percentile([10.0], 0.99) == 10.0
    assert percentile([0.0, 10.0], 0.5) == 5.0
    assert percentile([float(i) for i in range(101)], 0.99) == pytest.approx(99.0)


def test_throughput_counts_after_the_first_sample() -> None:
    result = throughput(Sample(10.0, 1000, 1.0), Sample(12.0, 5000, 1.2))
    assert result.events == 5000
    assert result.events_per_s == 2000
    assert result.cpu_us_per_event == pytest.approx(50.0)
    assert "cpu_s_by_thread" not in result.to_json()  # no thread readings (the raw loop's own samples)


class PolledWorker:
    """A worker whose polls answer from a script: (events done, step CPU, process CPU) per poll."""

    def __init__(self, polls: list[tuple[float, float, float] | None]) -> None:
        self.polls = polls
        self.pid = 0
        self.cpu = 0.0

    def metrics(self, *names: str) -> dict[str, float]:
        poll = self.polls.pop(0)
        if poll is None:
            return {}  # not answering yet (starting)
        events, busy, self.cpu = poll
        return {"leadscore_events_consumed_total": events, "leadscore_step_cpu_seconds_total": busy}

    def check_alive(self) -> None:
        pass


def test_the_catch_up_is_measured_from_the_last_poll_before_any_batch_was_begun(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = PolledWorker([None, (0, 0.0, 2.0), (0, 0.0, 2.1), (0, 0.5, 2.7), (3000, 1.0, 3.3), (4000, 1.4, 4.1)])
    monkeypatch.setattr(bench_proc, "cpu_seconds", lambda pid: worker.cpu)
    monkeypatch.setattr(bench_proc, "thread_cpu_seconds", lambda pid: (worker.cpu - 0.5, 0.1, 0.4))
    monkeypatch.setattr(bench_proc, "POLL_S", 0.0)
    begun: list[int] = []
    result = bench_proc.measure_catch_up([worker], 4000, 60.0, lambda: begun.append(len(worker.polls)))  # type: ignore[list-item]
    assert result.events == 4000
    assert result.cpu_s == pytest.approx(2.0)  # from the idle poll at 2.1 s of CPU: the batches' CPU only
    assert result.cpu_us_per_event == pytest.approx(500.0)
    assert begun == [2]  # at the first poll that found a batch begun
    assert result.to_json()["cpu_s_by_thread"] == {"main": 2.0, "rocksdb": 0.0, "other": 0.0}


def test_a_worker_busy_at_its_first_answer_is_measured_from_that_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    worker = PolledWorker([None, None, (1000, 0.5, 2.0), (4000, 1.4, 3.5)])
    monkeypatch.setattr(bench_proc, "cpu_seconds", lambda pid: worker.cpu)
    monkeypatch.setattr(bench_proc, "thread_cpu_seconds", lambda pid: (worker.cpu, 0.0, 0.0))
    monkeypatch.setattr(bench_proc, "POLL_S", 0.0)
    result = bench_proc.measure_catch_up([worker], 4000, 60.0)  # type: ignore[list-item]
    assert result.cpu_s == pytest.approx(1.5)
    assert result.cpu_us_per_event == pytest.approx(500.0)  # 3,000 events after the first answer


def test_process_readings_of_this_process() -> None:
    assert cpu_seconds() > 0
    assert peak_rss_bytes(os.getpid()) > 1_000_000


def test_thread_readings_put_the_main_thread_and_the_others_apart() -> None:
    spun, done = threading.Event(), threading.Event()

    def spin() -> None:
        began = time.thread_time()
        while time.thread_time() - began < 0.3:
            pass
        spun.set()
        done.wait(10)  # alive while read: an ended thread is in no group

    before = thread_cpu_seconds(os.getpid())
    other = threading.Thread(target=spin)
    other.start()
    spun.wait(10)
    after = thread_cpu_seconds(os.getpid())
    done.set()
    other.join()
    assert after[2] - before[2] >= 0.2  # the spinning thread, counted among the others
    assert after[2] - before[2] > after[0] - before[0]  # the main thread waited meanwhile
    assert after[1] == 0.0  # no RocksDB thread in this process


def test_log_marks_place_the_steps_of_a_start() -> None:
    lines = [
        '{"ts":"2026-01-01T00:00:00.000Z","message":"Executing _on_partitions_assigned"}',
        "not json",
        '{"ts":"2026-01-01T00:01:00.000Z","message":"Executing _on_partitions_assigned"}',
        '{"ts":"2026-01-01T00:01:00.500Z","message":"Executing _on_partitions_assigned"}',
        '{"ts":"2026-01-01T00:01:30.250Z","message":"[^---Recovery]: Restore complete!"}',
        '{"ts":"2026-01-01T00:01:39.000Z","message":"lead table recovered","leads":3}',
    ]
    start = 1767225600.0 + 30  # 2026-01-01T00:00:30Z: the first line belongs to an earlier process
    assert log_marks("\n".join(lines), start) == {
        "assigned": start + 30,
        "changelog_restored": start + 60.25,
        "due_index_rebuilt": start + 69,
    }


def test_source_digest_follows_the_service_source_not_the_benchmark(tmp_path: Path) -> None:
    for folder in ("agents", "scoring", "streams"):
        (tmp_path / folder).mkdir()
    (tmp_path / "agents" / "batch.py").write_text("x = 1\n")
    first = source_digest(tmp_path)
    (tmp_path / "streams" / "bench_new.py").write_text("ignored\n")
    assert source_digest(tmp_path) == first
    (tmp_path / "agents" / "batch.py").write_text("x = 2\n")
    assert source_digest(tmp_path) != first
    report = {"a": {"source_digest": "d1"}, "b": [{"source_digest": ["d1", "d2"]}], "c": 3}
    assert source_digests_in(report) == {"d1", "d2"}


def test_worker_env_keeps_only_the_benchmarks_settings() -> None:
    env = clean_env({"PATH": "/bin", "LEADSCORE_STORE": "memory://"}, {"LEADSCORE_APP_ID": "x"})
    assert env == {"PATH": "/bin", "LEADSCORE_APP_ID": "x"}
    run = Run("s1", "127.0.0.1:9092", Path("/tmp/r"))
    settings = settings_of(run.env("scale2", topic_prefix="bench-s1-s2.", outputs="-x"))
    assert settings.app_id == "bench-s1-scale2"
    assert settings.topics.web_visits == "bench-s1-s2.web-visits"
    assert settings.topics.ticks == "bench-s1-s2.lead-ticks-x"
    assert settings.store == "rocksdb://"
    assert settings.partitions == 8
    assert settings.consumption == "batch"


def test_worker_histogram_quantiles_are_bucket_bounds() -> None:
    def text(counts: list[int]) -> str:
        bounds = ["0.01", "0.1", "1.0", "+Inf"]
        return (
            "\n".join(
                f'leadscore_end_to_end_latency_seconds_bucket{{le="{b}",source="record"}} {c}'
                for b, c in zip(bounds, counts, strict=True)
            )
            + '\nleadscore_end_to_end_latency_seconds_bucket{le="0.01",source="event"} 99'
        )

    def buckets(counts: list[int]) -> dict[float, float]:
        return histogram_buckets(text(counts), "leadscore_end_to_end_latency_seconds", {"source": "record"})

    before, after = buckets([1, 1, 1, 1]), buckets([5, 80, 101, 101])
    assert bucket_quantile(before, after, 0.5) == 0.1
    assert bucket_quantile(before, after, 0.99) == 1.0
    assert bucket_quantile(after, after, 0.5) is None


def test_the_worker_s_fetch_delay_histogram_is_read_by_its_own_name() -> None:
    page = (
        'leadscore_fetch_delay_seconds_bucket{le="0.1"} 3\n'
        'leadscore_fetch_delay_seconds_bucket{le="+Inf"} 4\n'
        'leadscore_end_to_end_latency_seconds_bucket{le="0.1",source="record"} 9\n'
    )
    _, metric, labels = next(h for h in WORKER_HISTOGRAMS if h[0] == "fetch_")
    assert histogram_buckets(page, metric, labels) == {0.1: 3.0, float("inf"): 4.0}


def test_profile_sums_samples_per_frame_without_line_numbers() -> None:
    raw = "\n".join(
        [
            'process 1:"python";main (a.py:1);work (b.py:10);decode (c.py:5) 30',
            'process 1:"python";main (a.py:1);work (b.py:12) 10',
            "main (a.py:1);send (d.py:3) 60",
        ]
    )
    summary = summarize(raw)
    assert summary["samples"] == 100
    assert summary["top_self"][0] == {"frame": "send (d.py)", "samples": 60, "share": 0.6}
    totals = {row["frame"]: row["samples"] for row in summary["top_total"]}
    assert totals == {"main (a.py)": 100, "work (b.py)": 40, "decode (c.py)": 30, "send (d.py)": 60}
    assert summary["by_package"] == {"d.py": 0.6, "c.py": 0.3, "b.py": 0.1}


def test_decay_bench_small(scorer: Scorer) -> None:
    result = decay_bench(scorer, 2000)
    assert result["due_index"]["due"] == result["full_scan"]["due"] == 20
    assert [t["due"] for t in result["due_index"]["ticks"]] == [2, 20, 200]
    assert result["full_scan"]["tick_s"] > 0
    assert result["due_index"]["tick_s"] > 0


def _report() -> dict[str, Any]:
    run = {"events_per_s": 1000.0, "cpu_us_per_event": 20.0, "peak_rss_bytes": 2**27}
    return {
        "started_at": "20260101T000000Z",
        "options": {"leads": 10, "events": 100, "recovery_leads": 1000},
        "machine": {"cores": 2, "cpu_model": "cpu", "python": "3.11", "kafka": "4.1.1", "packages": {}},
        "input": {"partitions": 8},
        "baseline": {"events_per_s": 2000.0, "cpu_us_per_event": 5.0, "peak_rss_bytes": 2**25},
        "leadscore": {
            "events_per_s": 2500.0,
            "ratio_to_baseline": 1.25,
            "cpu_us_per_event": 12.0,
            "peak_rss_bytes": 2**27,
            "changelog_per_event": 0.2,
            "changelog_messages": 20,
            "events": 100,
        },
        "latency": {
            "levels": [
                {
                    "fraction": f,
                    "achieved_rate": 100.0,
                    "samples": 5,
                    "p50_ms": 5.0,
                    "p95_ms": 9.0,
                    "p99_ms": p99,
                    "worker_cpu_us_per_event": 23.7,
                    "worker_cpu_share": 0.8,
                }
                for f, p99 in ((0.25, 10.0), (0.5, 300.0), (0.75, 20.0))
            ]
        },
        "recovery": {
            "leads": 1000,
            "changelog_messages": 1000,
            "empty_start_s": 2.0,
            "same_data_dir": {"ready_s": 61.0, "assigned_s": 60.0, "changelog_restore_s": 0.1},
            "fresh_data_dir": {"ready_s": 9.0, "assigned_s": 3.0, "changelog_restore_s": 5.0, "due_index_rebuild_s": 1},
        },
        "decay": {
            "leads": 1000,
            "due_index": {"due": 10, "tick_s": 0.001, "per_due_lead_spread": 1.2},
            "full_scan": {"tick_s": 0.1},
            "speedup": 100.0,
        },
        "scaling": {
            "note": "2 cores",
            "runs": [{**run, "workers": n, "events_per_s": 1000.0 * n, "ratio_to_one": n} for n in (1, 2, 4)],
        },
    }


def test_targets_are_reported_not_enforced() -> None:
    met = {t.name: t.met for t in targets(_report())}
    assert met["events/s vs baseline"] is True
    assert met["worker CPU per event"] is True
    assert met["p99 event->MQL at 50% of max rate"] is False
    assert met["recovery after a SIGKILL (same data dir, static membership)"] is False  # 61 s
    assert met["recovery of the lead table (fresh data dir)"] is True
    assert met["decay tick cost follows the due leads"] is True
    assert met["4 workers vs 1"] is None  # 2 cores
    assert all(t.met is None for t in targets({"machine": {"cores": 8}}))


def test_markdown() -> None:
    text = markdown(_report())
    assert "| leadscore worker | 2,500 | 1.25 | 12.0 | 128 |" in text
    assert "| 50% of max | 100 | 5 | 5.0 | 9.0 | 300.0 | n/a | 23.7 | 0.80 |" in text
    assert "| p99 event->MQL at 50% of max rate | < 250 ms | 300 ms | no |" in text


def test_markdown_names_a_given_latency_rate() -> None:
    report = _report()
    report["options"]["latency_rate"] = 68000.0
    text = markdown(report)
    assert "| 50% of 68,000/s | 100 | 5 | 5.0 | 9.0 | 300.0 | n/a | 23.7 | 0.80 |" in text
    assert "| 300 ms (at 50% of a given 68,000 events/s, not of the maximum) | no |" in text


def test_the_latency_rate_option_reaches_the_report(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[BenchOptions] = []

    def run(options: BenchOptions) -> tuple[dict[str, Any], list[Path], int]:
        seen.append(options)
        return _report(), [], 0

    monkeypatch.setattr(bench, "run_bench", run)
    result = CliRunner().invoke(bench.bench_command, ["--latency-rate", "68000", "--skip", "baseline"])
    assert result.exit_code == 0, result.output
    assert seen[0].latency_rate == 68000.0
    assert seen[0].to_json()["latency_rate"] == 68000.0
    assert CliRunner().invoke(bench.bench_command, ["--latency-rate", "-1"]).exit_code == 2


def test_cpu_by_step_divides_each_step_by_the_window_and_leaves_the_rest() -> None:
    window = throughput(Sample(10.0, 1000, 1.0), Sample(12.0, 5000, 1.2))  # 4,000 events, 50 us each
    first = {"read": 1.0, "score": 2.0, "encode": 0.5, "store": 0.1}
    last = {"read": 1.004, "score": 2.08, "encode": 0.52, "store": 0.104}
    steps = cpu_by_step(window, {step: last[step] - first[step] for step in first})
    assert steps == {"read": 1.0, "score": 20.0, "encode": 5.0, "store": 1.0, "rest": 23.0}
    assert cpu_by_step(window, {}) == {}  # the worker did not answer


def test_cpu_by_step_splits_the_rest_by_thread() -> None:
    # 4,000 events, 50 us each: 0.16 s on the main thread, 0.008 s RocksDB's, 0.032 s the others'
    window = throughput(
        Sample(10.0, 1000, 1.0, threads_cpu_s=(0.8, 0.1, 0.1)),
        Sample(12.0, 5000, 1.2, threads_cpu_s=(0.96, 0.108, 0.132)),
    )
    steps = cpu_by_step(window, {"read": 0.004, "score": 0.08, "encode": 0.02, "store": 0.004})
    # main 40 us/event of which 27 in the steps; RocksDB 2, the others 8: the rest (23) split 13 + 8 + 2
    assert steps == {
        "read": 1.0,
        "score": 20.0,
        "encode": 5.0,
        "store": 1.0,
        "rest": 23.0,
        "rest_main": 13.0,
        "other_threads": 8.0,
        "rocksdb": 2.0,
    }


def test_markdown_gives_the_delay_before_the_worker_of_each_level() -> None:
    report = _report()
    report["latency"]["levels"][1]["input_p99_ms"] = 212.5
    assert "| 50% of max | 100 | 5 | 5.0 | 9.0 | 300.0 | 212.5 |" in markdown(report)


def test_markdown_gives_the_cpu_by_step() -> None:
    report = _report()
    report["leadscore"]["cpu_us_per_event_by_step"] = {"read": 1, "score": 5, "encode": 2, "store": 0.5, "rest": 3.5}
    text = markdown(report)
    assert "scoring core 5.0 us, reading the batch and its states 1.0, encoding the changed states 2.0" in text
    assert "the rest (Kafka clients, event loop, Faust) 3.5" in text
    assert "the rest by thread" not in text  # no thread readings
    report["leadscore"]["cpu_us_per_event_by_step"] |= {"rest_main": 2.0, "other_threads": 1.2, "rocksdb": 0.3}
    assert (
        "; the rest by thread: the main thread outside the steps 2.0, the other threads (the Kafka consumer's) 1.2, "
        "RocksDB's background threads 0.3"
    ) in markdown(report)


def test_markdown_gives_the_floor_of_one_worker_process() -> None:
    report = _report()
    report["leadscore"]["cpu_us_per_event_by_step"] = {"read": 1, "score": 5, "encode": 2, "store": 0.5, "rest": 3.5}
    assert "floor of one worker process" not in markdown(report)  # no core part
    report["core"] = {
        "events": 100,
        "leads": 10,
        "batch_records": 50,
        "compiled": True,
        "score_us_per_event": 4.0,
        "encode_us_per_event": 2.0,
        "encode_us_per_state": 5.0,
        "states_per_event": 0.4,
        "mean_written_bytes": 900.0,
        "mean_state_bytes": 1000.0,
        "mean_state_objects": 90.0,
        "read_us_per_event": 0.5,
    }
    text = markdown(report)
    # 0.5 + 4.0 + 5.0 x 0.2 changelog records per event + 0.5 = 6.0 us; the baseline's 5.0 us / 6.0
    assert (
        "floor of one worker process (reading its records 0.5 us, scoring 4.0, encoding the states it writes 1.0, "
        in text
    )
    assert "RocksDB 0.5; every other cost taken as free): 6.0 us/event, so at most 0.83x" in text
    assert "the worker took 2.00x its floor" in text
