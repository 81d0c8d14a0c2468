"""The benchmark's pure parts: summary arithmetic, wrk's report, the load split, the table's width."""

from __future__ import annotations

import re

import msgspec
import pytest
from rich.console import Console

from ollamaflow.bench.loadgen import _shares
from ollamaflow.bench.runner import BenchReport, Row, TranslatedRow, _median_translated, _overhead_content
from ollamaflow.bench.scenarios import OPENAI_HOST, SCENARIOS, TRANSLATED, Summary, percentile, summarise
from ollamaflow.bench.table import render
from ollamaflow.bench.wrk import lua_script, parse_report


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) == 0.0


def test_summarise_counts_rate_and_percentiles() -> None:
    summary = summarise([3.0, 1.0, 2.0, 4.0], errors=1, elapsed_s=2.0)
    assert summary.requests == 4
    assert summary.errors == 1
    assert summary.rps == pytest.approx(2.0)
    assert summary.p50_ms == 2.0
    assert summary.p99_ms == 4.0


def test_scenarios_cover_streamed_and_not() -> None:
    streams = {msgspec.json.decode(s.body)["stream"] for s in SCENARIOS}
    assert streams == {True, False}


def test_translated_streams_reach_the_other_api() -> None:
    """Each translated scenario's Host picks a frontend whose backend speaks the other API."""
    content = _overhead_content("http://127.0.0.1:1", "http://127.0.0.1:2")
    formats = {b.id: b.api_format for b in content.backends}
    by_host = {f.hostname: f.backends for f in content.frontends}
    for scenario in TRANSLATED:
        assert msgspec.json.decode(scenario.body)["stream"] is True
        (backend,) = by_host[scenario.host or "*"]
        client = "OpenAI" if scenario.path.startswith("/v1/") else "Ollama"
        assert formats[backend] != client
    openai = next(b for b in content.backends if b.api_format == "OpenAI")
    # Listed with the simulator's exact names, so that "llama3.2" is sent as "llama3.2:latest".
    assert openai.models_known and "llama3.2:latest" in openai.models
    assert _overhead_content("http://127.0.0.1:1").frontends[0].hostname == "*"


def test_lua_script_sets_the_host_only_when_asked() -> None:
    assert "Host" not in lua_script(b"{}")
    assert f'wrk.headers["Host"] = "{OPENAI_HOST}"' in lua_script(b"{}", host=OPENAI_HOST)


def _lua_unescape(literal: str) -> bytes:
    assert literal.startswith('"') and literal.endswith('"')
    return re.sub(r"\\(\d{3})", lambda m: chr(int(m.group(1))), literal[1:-1]).encode("latin-1")


def test_lua_script_carries_the_body_byte_for_byte() -> None:
    body = b'{"q": "it\'s \\"quoted\\"\\n", "u": "\xc3\xa9"}\n'
    script = lua_script(body)
    literal = re.search(r"^wrk\.body = (.*)$", script, re.MULTILINE)
    assert literal is not None
    assert _lua_unescape(literal.group(1)) == body
    assert 'wrk.method = "POST"' in script


def test_wrk_report_is_read_from_the_last_marked_line() -> None:
    stdout = (
        "Running 5s test @ http://127.0.0.1:1/api/chat\n  1 threads and 32 connections\n"
        'OLLAMAFLOW-BENCH {"requests":1000,"duration_us":2000000,"connect":0,"read":1,"write":0,'
        '"status":10,"timeout":2,"p50_us":1500.0,"p99_us":9000.5}\n'
    )
    report = parse_report(stdout)
    summary = report.summary()
    assert summary.requests == 990  # non-2xx/3xx answers are errors, not requests
    assert summary.errors == 13
    assert summary.rps == pytest.approx(495.0)
    assert summary.p50_ms == pytest.approx(1.5)
    assert summary.p99_ms == pytest.approx(9.0005)
    assert "status 10" in summary.first_error
    with pytest.raises(RuntimeError, match="no report"):
        parse_report("wrk: connection refused\n")


def test_connections_spread_over_processes() -> None:
    assert _shares(32, 2) == [16, 16]
    assert _shares(5, 2) == [3, 2]
    assert _shares(2, 8) == [1, 1]
    assert sum(_shares(33, 4)) == 33


def _summary(rps: float) -> Summary:
    return Summary(requests=int(rps * 5), errors=0, rps=rps, p50_ms=12.345, p99_ms=123.456)


def test_table_fits_80_columns_uncut() -> None:
    row = Row(
        scenario=SCENARIOS[1].name,
        direct=_summary(123_456.7),
        through=_summary(98_765.4),
        rps_ratio=0.8,
        dataplane_cpu_ms_per_request=0.123,
        ratios=[0.7, 0.8, 0.9],
    )
    translated = TranslatedRow(
        scenario=TRANSLATED[0].name,
        through=_summary(76_543.2),
        stream_ratio=0.812,
        dataplane_cpu_ms_per_request=1.234,
        ratios=[0.8, 0.81, 0.9],
    )
    report = BenchReport(
        generator="python/aiohttp (2 processes)",
        connections=32,
        duration_s=5.0,
        rows=[row, row],
        translated=[translated, translated],
    )
    console = Console(width=80, record=True, color_system=None)
    console.print(render(report))
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    for cell in ("123,457", "98,765", "0.80x", "0.123", "via DP", "chat stream", "python/aiohttp"):
        assert cell in text
    for cell in ("ollama→openai", "76,543", "0.81x", "1.234", "0.90x"):
        assert cell in text


def test_translated_rounds_keep_the_median_ratio_and_every_round() -> None:
    rounds = [
        TranslatedRow(
            scenario=TRANSLATED[1].name,
            through=_summary(ratio * 1000),
            stream_ratio=ratio,
            dataplane_cpu_ms_per_request=0.5,
            ratios=[ratio],
        )
        for ratio in (0.9, 0.7, 0.8)
    ]
    median = _median_translated(rounds)
    assert median.stream_ratio == 0.8
    assert median.through.rps == 800.0
    assert median.ratios == [0.9, 0.7, 0.8]
