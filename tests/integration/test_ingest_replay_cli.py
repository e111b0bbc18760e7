"""File replay (exact counts, restart, bad lines) and the ``finsent ingest`` commands as
processes: ``file``, ``rss --once``, and SIGTERM on a polling command."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from ingest.pipeline import Pipeline
from ingest.replay import replay
from tests.integration.ingest_support import FakeSite, consume_raw
from tests.integration.test_ingest_sources import RSS

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "ingest" / "data" / "sample_news.jsonl"


@pytest.fixture
def ingest_settings(bootstrapped, tmp_path):
    return bootstrapped.model_copy(update={"state_dir": tmp_path / "state"})


async def test_replay_sample_exact_count_then_nothing_again(ingest_settings) -> None:
    lines = sum(1 for line in SAMPLE.read_text("utf-8").splitlines() if line.strip())
    for attempt in range(2):
        pipeline = Pipeline.build(ingest_settings, CollectorRegistry())
        pipeline.start()
        try:
            report = await replay(SAMPLE, pipeline)
        finally:
            pipeline.close()
        expected = (lines, 0) if attempt == 0 else (0, lines)
        assert (report.produced, report.duplicates) == expected and not report.rejected
    records = consume_raw(ingest_settings, lines)
    assert len(records) == lines
    assert len({d.id for _, d in records}) == lines
    assert all(d.tickers for _, d in records) and all(d.published_at for _, d in records)


async def test_replay_skips_bad_lines_and_reads_csv(ingest_settings, tmp_path) -> None:
    jsonl = tmp_path / "mixed.jsonl"
    jsonl.write_bytes(b"\n".join([
        b'{"text": "Apple opens a new campus", "source_id": "1"}',
        b'{"text": "caf\xe9 bytes"}',
        b'{"text": "unclosed',
        b'{"title": "no text"}',
        b'{"text": "naive", "published_at": "2026-11-27 10:00:00"}',
        b'{"text": "Tesla \\u0000recalls\\u0007 cars", "source_id": "2", "label": "negative"}',
        b"",
        b'["not", "an", "object"]',
    ]))
    csv_file = tmp_path / "rows.csv"
    csv_file.write_text('text,source_id,published_at,tickers\n"Nvidia, again",c1,2026-11-27T10:00:00Z,"NVDA;AMD"\n'
                        ",c2,,\n", "utf-8")
    pipeline = Pipeline.build(ingest_settings, CollectorRegistry())
    pipeline.start()
    try:
        mixed = await replay(jsonl, pipeline)
        rows = await replay(csv_file, pipeline)
    finally:
        pipeline.close()
    assert mixed.produced == 2
    assert sorted(r.code for r in mixed.rejected) == [
        "bad_shape", "invalid_document", "invalid_json", "invalid_utf8", "naive_timestamp"]
    assert all(r.where.startswith("mixed.jsonl:") for r in mixed.rejected)
    assert rows.produced == 1 and [r.where for r in rows.rejected] == ["rows.csv:3"]
    docs = {d.source_id: d for _, d in consume_raw(ingest_settings, 3)}
    assert docs["2"].text == "Tesla recalls cars" and docs["c1"].tickers == ["NVDA", "AMD"]


def _env(settings, tmp_path: Path) -> dict[str, str]:
    return os.environ | {
        "FINSENT_TOPIC_PREFIX": settings.topic_prefix, "FINSENT_INDEX_PREFIX": settings.index_prefix,
        "FINSENT_STATE_DIR": str(tmp_path / "cli-state"), "FINSENT_INGEST_METRICS_PORT": "0",
        "HF_HUB_OFFLINE": "1",
    }


async def _finsent(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "finsent"), *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)


async def test_cli_file_and_rss_once(bootstrapped, tmp_path) -> None:
    env = _env(bootstrapped, tmp_path)
    proc = await _finsent("ingest", "file", str(SAMPLE), "--rate", "5000", env=env)
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()
    assert "produced 200, duplicates 0, skipped 0, failed 0" in out.decode()

    async with FakeSite() as site:
        site.serve("/feed.xml", RSS, "application/rss+xml")
        proc = await _finsent("ingest", "rss", site.url("/feed.xml"), site.url("/missing.xml"), "--once", env=env)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 1  # one feed answered 404: said so, and the other still went through
    assert "produced 3" in out.decode() and "fetch errors 1" in out.decode()
    assert "HTTP 404" in err.decode()
    assert len(consume_raw(bootstrapped, 203)) == 203


async def test_cli_sigterm_flushes_and_exits_cleanly(bootstrapped, tmp_path) -> None:
    env = _env(bootstrapped, tmp_path)
    async with FakeSite() as site:
        site.serve("/feed.xml", RSS, "application/rss+xml")
        proc = await _finsent("ingest", "rss", site.url("/feed.xml"), "--interval", "0.2", env=env)
        try:
            for _ in range(600):  # the second request starts only after the first poll was produced
                if len(site.requests) >= 2 or proc.returncode is not None:
                    break
                await asyncio.sleep(0.1)
            assert len(site.requests) >= 2
            proc.send_signal(signal.SIGTERM)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
    assert proc.returncode == 0, err.decode()
    records = consume_raw(bootstrapped, 3)
    assert len(records) == 3


async def test_cli_run_config_and_api_once(bootstrapped, tmp_path) -> None:
    import orjson

    listing = {"kind": "Listing", "data": {"children": [{"kind": "t3", "data": {
        "id": "q", "name": "t3_q", "title": "Is $NVDA still a buy?", "selftext": "", "created_utc": 1795773600,
        "permalink": "/r/stocks/comments/q/x/"}}]}}
    stream = {"messages": [{"id": 77, "body": "$TSLA breakout", "created_at": "2026-11-27T13:00:00Z",
                            "user": {"username": "u"}, "symbols": [{"symbol": "TSLA"}]}]}
    news = {"articles": [{"uid": "w1", "body": "Boeing wins a large jet order", "ts": "2026-11-27T09:00:00Z"}]}
    async with FakeSite() as site:
        site.serve("/feed.xml", RSS, "application/rss+xml")
        site.serve("/r/stocks/new.json", orjson.dumps(listing))
        site.serve("/streams/symbol/TSLA.json", orjson.dumps(stream))
        site.serve("/news", orjson.dumps(news))
        env = _env(bootstrapped, tmp_path) | {"FINSENT_REDDIT_BASE_URL": site.url(""),
                                              "FINSENT_STOCKTWITS_BASE_URL": site.url("")}
        config = tmp_path / "sources.yml"
        config.write_text(f"""
sources:
  - {{type: rss, urls: ["{site.url('/feed.xml')}"]}}
  - {{type: reddit, subreddit: stocks}}
  - {{type: stocktwits, symbols: [tsla]}}
""", "utf-8")
        proc = await _finsent("ingest", "run", "--config", str(config), "--once", env=env)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        assert "produced 5" in out.decode()

        api = tmp_path / "api.yml"
        api.write_text(f"name: wire\nurl: {site.url('/news')}\nitems: articles\n"
                       "fields: {text: body, source_id: uid, published_at: ts}\n", "utf-8")
        proc = await _finsent("ingest", "api", "--config", str(api), "--once", env=env)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, err.decode()
        assert "produced 1" in out.decode()

        bad = tmp_path / "bad.yml"
        bad.write_text("sources: [{type: rss}]", "utf-8")
        proc = await _finsent("ingest", "run", "--config", str(bad), env=env)
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 1 and "sources.0.rss.urls" in err.decode()
    sources = sorted(d.source for _, d in consume_raw(bootstrapped, 6))
    assert sources == ["api:wire", "reddit", "rss:127.0.0.1", "rss:127.0.0.1", "rss:127.0.0.1", "stocktwits"]
