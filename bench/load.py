"""Load for the pipeline benchmark: synthetic financial documents and two ways to produce them.

The documents are generated from templates (never taken from labelled data): a headline
and one to three sentences, with tickers, so their token lengths spread like real news
items and tweets (about 20 to 90 tokens). ``produce_backlog`` sends as fast as the
producer goes; ``produce_paced`` sends at a fixed rate, stamping ``ingested_at`` at the
moment of sending, as ingest does.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from bench.stats import send_offsets
from finsent.schemas import RawDocument, document_id, utc_now

TICKERS = ("AAPL", "MSFT", "TSLA", "NVDA", "JPM", "XOM", "AMZN", "GOOGL", "META", "BAC", "PFE", "KO")
HEADLINES = (
    "{t} shares jump after quarterly profit beats estimates",
    "{t} cuts full-year outlook as demand weakens",
    "{t} to hold annual shareholder meeting next month",
    "Analysts downgrade {t} on margin pressure",
    "{t} announces buyback and raises dividend",
    "Regulators open probe into {t} accounting",
    "{t} names new chief financial officer",
    "{t} wins multi-year supply contract",
)
SENTENCES = (
    "Revenue rose {n} percent from a year earlier, helped by strong sales in its largest market.",
    "The company said operating costs climbed faster than expected during the quarter.",
    "Management reiterated its guidance and said orders remain in line with seasonal patterns.",
    "Shares fell {n} percent in early trading after the announcement.",
    "The stock gained {n} percent as investors welcomed the news.",
    "Executives warned that supply constraints could weigh on margins through the rest of the year.",
    "The board approved the plan at a meeting on Tuesday, according to a filing.",
    "Several brokers raised their price targets, citing improving cash flow and lower debt.",
    "Trading volume was about {n} million shares, roughly in line with the recent average.",
    "A spokesperson declined to comment beyond the statement.",
)


def synthetic_docs(count: int, source: str, seed: int = 7) -> list[RawDocument]:
    """``count`` reproducible documents of ``source`` (ids ``<source>:<n>``)."""
    rng = random.Random(seed)
    docs = []
    for n in range(count):
        ticker = rng.choice(TICKERS)
        tickers = [ticker] + ([rng.choice([t for t in TICKERS if t != ticker])] if rng.random() < 0.2 else [])
        body = " ".join(rng.choice(SENTENCES).format(n=rng.randint(2, 40)) for _ in range(rng.randint(1, 3)))
        docs.append(RawDocument(
            id=document_id(source, str(n)), source=source, source_id=str(n),
            title=rng.choice(HEADLINES).format(t=ticker), text=body, lang="en", tickers=tickers,
            published_at=utc_now(), ingested_at=utc_now(),
        ))
    return docs


def jsonl_lines(docs: Sequence[RawDocument]) -> bytes:
    """The documents as ``finsent ingest file`` input (no id or ingested_at: ingest sets them)."""
    lines = []
    for doc in docs:
        lines.append(orjson.dumps({"source": doc.source, "source_id": doc.source_id, "title": doc.title,
                                   "text": doc.text, "tickers": doc.tickers, "lang": doc.lang}))
    return b"\n".join(lines) + b"\n"


def _send(producer: Any, topic: str, doc: RawDocument) -> None:
    fresh = doc.model_copy(update={"ingested_at": utc_now()})
    producer.send(topic, key=doc.tickers[0].encode(), value=fresh.to_json())


def produce_backlog(producer: Any, topic: str, docs: Sequence[RawDocument]) -> None:
    for doc in docs:
        _send(producer, topic, doc)
    producer.flush()


def produce_paced(producer: Any, topic: str, docs: Sequence[RawDocument], per_second: float, *,
                  clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                  ) -> float:
    """Send ``docs`` at ``per_second``; returns the achieved rate (docs/s over the sending span)."""
    offsets = send_offsets(len(docs), per_second)
    start = clock()
    for doc, offset in zip(docs, offsets):
        delay = start + offset - clock()
        if delay > 0:
            sleep(delay)
        _send(producer, topic, doc)
    span = clock() - start
    producer.flush()
    return len(docs) / span if span > 0 else float("inf")
