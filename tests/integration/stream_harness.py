"""Helpers for the stream worker's integration tests: worker subprocesses, a TCP proxy
that can take Elasticsearch away, and producers/readers against the real servers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

from finsent import clients
from finsent.schemas import RawDocument, document_id, utc_now
from finsent.settings import Settings
from tests.ports import free_port
from tests.tcp_relay import pump
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
FINSENT = ROOT / ".venv" / "bin" / "finsent"
TICKERS = ["AAPL", "MSFT", "TSLA", "NVDA", "JPM", "XOM"]
T0 = datetime(2025, 3, 3, 14, 0, tzinfo=UTC)
# How long one answer (/health, /metrics) of a process a test started may take: a loaded CI machine is 3-5x slower.
ANSWER_WITHIN_S = 30
TEXTS = [
    "{t} shares surge after record quarterly profit beats expectations",
    "{t} warns of weaker demand and cuts its full-year outlook",
    "{t} will hold its annual shareholder meeting in May",
    "Analysts downgrade {t} citing margin pressure and rising costs",
    "{t} announces a new buyback programme and higher dividend",
]


def make_doc(n: int, tag: str = "d") -> RawDocument:
    ticker = TICKERS[n % len(TICKERS)]
    tickers = [ticker] + (["MSFT"] if n % 7 == 0 and ticker != "MSFT" else [])
    return RawDocument(
        id=document_id("test", f"{tag}{n}"), source="test", source_id=f"{tag}{n}",
        title=None, text=TEXTS[n % len(TEXTS)].format(t=ticker) + f" (item {tag}{n})", lang="en",
        tickers=tickers, published_at=T0 + timedelta(seconds=17 * n), ingested_at=utc_now(),
    )


def produce(settings: Settings, docs: list[RawDocument] | None = None, raw: list[tuple[bytes, bytes]] | None = None,
            pause_every: int = 0, pause: float = 0.0, ingested_at: datetime | None = None) -> None:
    """Send ``docs`` (stamped ``ingested_at``, by default now) and ``raw`` records to the raw topic."""
    producer = clients.kafka_producer(settings)
    try:
        for i, doc in enumerate(docs or []):
            doc = doc.model_copy(update={"ingested_at": ingested_at or utc_now()})
            producer.send(settings.topic("raw"), key=doc.tickers[0].encode(), value=doc.to_json())
            if pause_every and i % pause_every == pause_every - 1:
                producer.flush()
                time.sleep(pause)
        for key, value in raw or []:
            producer.send(settings.topic("raw"), key=key, value=value)
        producer.flush()
    finally:
        producer.close()


def read_topic(settings: Settings, name: str, expected: int, timeout: float = 30) -> list[Any]:
    consumer = clients.kafka_consumer(settings, settings.topic(name), consumer_timeout_ms=1000)
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < expected and time.monotonic() < deadline:
            records.extend(consumer)
    finally:
        consumer.close()
    return records


def es_docs(settings: Settings, index: str = "docs") -> list[dict[str, Any]]:
    with clients.elasticsearch(settings) as es:
        es.indices.refresh(index=settings.index(index))
        result = es.search(index=settings.index(index), size=10_000, query={"match_all": {}})
    return [hit["_source"] | {"_id": hit["_id"]} for hit in result["hits"]["hits"]]


def es_count(settings: Settings, index: str = "docs") -> int:
    with clients.elasticsearch(settings) as es:
        es.indices.refresh(index=settings.index(index))
        return es.count(index=settings.index(index))["count"]


def settle_daily_counts(settings: Settings, expected: dict[str, int], timeout: float, what: str) -> None:
    """Wait until the 1d aggregates count ``expected`` per ticker; on timeout say both sides."""
    seen: dict[str, int] = {}

    def settled() -> bool:
        seen.clear()
        seen.update({a["ticker"]: a["count"] for a in es_docs(settings, "aggregates") if a["window"] == "1d"})
        return seen == expected

    try:
        wait_for(settled, timeout, what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: expected {expected}, counted {seen}") from None


def _samples(metrics: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    from prometheus_client.parser import text_string_to_metric_families

    return {tuple(sorted(s.labels.items())): s.value for family in text_string_to_metric_families(metrics)
            for s in family.samples if s.name == name}


class Worker:
    """``finsent stream worker`` as a real subprocess configured through FINSENT_* variables."""

    def __init__(self, settings: Settings, model_dir: Path, state_dir: Path, log: Path,
                 es_url: str | None = None, program: list[str] | None = None, **extra: str) -> None:
        self.program = program or [str(FINSENT)]  # or a script that takes finsent's arguments
        self.port = free_port()
        self.log = log
        self.env = os.environ | {
            "FINSENT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "FINSENT_ELASTICSEARCH_URL": es_url or settings.elasticsearch_url,
            "FINSENT_TOPIC_PREFIX": settings.topic_prefix,
            "FINSENT_INDEX_PREFIX": settings.index_prefix,
            "FINSENT_TOPIC_PARTITIONS": str(settings.topic_partitions),
            "FINSENT_MODEL_DIR": str(model_dir),
            "FINSENT_STATE_DIR": str(state_dir),
            "FINSENT_WORKER_WEB_PORT": str(self.port),
            "FINSENT_WORKER_BATCH_SIZE": "16",
            "FINSENT_WORKER_BATCH_WITHIN": "0.2",
            "FINSENT_WORKER_COMMIT_INTERVAL": "0.5",
            "FINSENT_WORKER_STALL_AFTER": "20",  # a stalled worker rewinds well within the tests' waits
            "FINSENT_WINDOWS": "1m,1d",
            "FINSENT_DEVICE": "cpu",
            "HF_HUB_OFFLINE": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
        } | extra
        self.proc: subprocess.Popen | None = None

    def start(self) -> Worker:
        self._out = open(self.log, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen([*self.program, "stream", "worker", "--model", "champion"],
                                     env=self.env, stdout=self._out, stderr=subprocess.STDOUT, cwd=ROOT)
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def health(self) -> tuple[int, dict[str, Any]] | None:
        """The /health status and body; None when the worker did not answer (a wait_for tries again)."""
        try:
            answer = httpx.get(self.url("/health"), timeout=ANSWER_WITHIN_S)
            return answer.status_code, answer.json()
        except (httpx.HTTPError, ValueError):
            return None

    def wait_ready(self, timeout: float = 120) -> None:
        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited with {self.proc.returncode}:\n{self.tail()}")
            h = self.health()
            return h is not None and h[0] == 200

        wait_for(ready, timeout, f"worker ready (log {self.log})")

    def metrics(self) -> str:
        """The /metrics text, for a read that must succeed (an error fails the test)."""
        return httpx.get(self.url("/metrics"), timeout=ANSWER_WITHIN_S).text

    def metrics_or_none(self) -> str | None:
        """:meth:`metrics` for a wait_for: None when the worker did not answer this time, so the wait tries again
        instead of failing."""
        try:
            return self.metrics()
        except httpx.HTTPError:
            return None

    def samples(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """The values of metric sample ``name`` (``…_total`` for a counter), keyed by sorted labels."""
        return _samples(self.metrics(), name)

    def samples_or_none(self, name: str) -> dict[tuple[tuple[str, str], ...], float] | None:
        """:meth:`samples` for a wait_for: None when the worker did not answer this time."""
        text = self.metrics_or_none()
        return None if text is None else _samples(text, name)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.wait(30)

    def terminate(self, timeout: float = 60) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._out.close()

    def ensure_stopped(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


class TcpProxy:
    """A plain TCP forwarder on 127.0.0.1 that the test can switch off (refusing and cutting
    connections) and on again on the same port: Elasticsearch 'going away' for the worker
    without touching the shared server."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            with self._lock:
                if self._listener is not listener:  # stop() ran while this one was dialled: cut it like the rest
                    client.close()
                    upstream.close()
                    return
                self._conns += [client, upstream]
            threading.Thread(target=pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client), daemon=True).start()

    def stop(self) -> None:
        if self._listener is not None:
            try:  # wakes the thread blocked in accept(); close() alone does not on Linux
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            for conn in self._conns:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                conn.close()
            self._conns.clear()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def json_lines(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]
