"""The collector part of the bench, pure: wrk's output parsed, the scripts and the Markdown table."""

import pytest

from streams.bench_collector import api_script, markdown_lines, parse_wrk, pixel_script

pytestmark = pytest.mark.unit

WRK_OUTPUT = """Running 10s test @ http://127.0.0.1:40000/t.gif
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     6.31ms    2.01ms  41.98ms   84.29%
    Req/Sec     2.55k   210.77     3.01k    71.50%
  Latency Distribution
     50%    5.98ms
     75%    6.95ms
     90%    8.39ms
     99%    1.20s
  50821 requests in 10.01s, 9.91MB read
  Socket errors: connect 0, read 0, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:   5076.12
Transfer/sec:      0.99MB
"""


def test_parse_wrk() -> None:
    parsed = parse_wrk(WRK_OUTPUT)
    assert parsed == {
        "requests_per_s": 5076.12,
        "requests": 50821,
        "non_2xx": 7,
        "socket_errors": 3,
        "p50_ms": 5.98,
        "p75_ms": 6.95,
        "p90_ms": 8.39,
        "p99_ms": 1200.0,
    }
    with pytest.raises(ValueError, match="not wrk output"):
        parse_wrk("wrk: command not found")


def test_scripts_carry_tokens_key_and_a_browser() -> None:
    pixel = pixel_script(["v1.a.b", "v1.c.d"])
    assert '"v1.a.b","v1.c.d"' in pixel
    assert "Chrome/" in pixel
    api = api_script(1700000000000)
    assert "Bearer bench-write-key" in api
    assert '"occurred_at":1700000000000' in api


def test_markdown_lines() -> None:
    assert markdown_lines({}) == []
    side = {"max": {"requests_per_s": 5000.0, "p99_ms": 20.0}, "at_half": {"achieved_rate": 2500.0}}
    side["at_half"] |= {"p50_ms": 4.0, "p99_ms": 30.0}
    report = {"collector": {"pixel": side | {"accepted": 10, "on_kafka": 10, "lost": 0}, "api": side | {"accepted": 5}}}
    report["collector"]["api"] |= {"on_kafka": 4, "lost": 1}
    lines = markdown_lines(report)
    assert lines[3].startswith("| pixel GET /t.gif | 5,000 | 20.0 | 2,500 | 4.0 | 30.0 | 10 | 10 | 0 |")
    assert lines[4].endswith("| 5 | 4 | 1 |")
