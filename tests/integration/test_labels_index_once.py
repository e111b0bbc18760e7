"""``finsent labels index --once`` against the real Kafka and Elasticsearch: it reads the topic to the end offsets it
had at the start, however many polls that takes, and exits 0; Kafka or Elasticsearch away ends it non-zero with one
line, and a rerun goes on from where it got.

Before, it ended after two empty polls in a row or 60 s with exit 0 whatever it had read
(tests/unit/test_labels_drain.py has the cases a local broker does not show: a group slow to form, a backlog of
minutes, Kafka gone away after the start)."""

from __future__ import annotations

import http.client
import re
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest
from kafka import TopicPartition
from typer.testing import CliRunner

from finsent import clients
from finsent.cli import app
from finsent.schemas import LabelRecord
from tests.ports import free_port

pytestmark = pytest.mark.integration
LABELED_AT = datetime(2025, 3, 1, tzinfo=UTC)
MAX_POLL_RECORDS = 500  # the label indexer's batch


def env_of(settings, **more: str) -> dict[str, str]:
    return {"FINSENT_TOPIC_PREFIX": settings.topic_prefix, "FINSENT_INDEX_PREFIX": settings.index_prefix,
            "FINSENT_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
            "FINSENT_ELASTICSEARCH_URL": settings.elasticsearch_url} | more


def produce_labels(settings, count: int) -> None:
    producer = clients.kafka_producer(settings)
    try:
        for n in range(count):
            record = LabelRecord(text=f"Quarterly profit rose {n} percent", label="positive", labeled_at=LABELED_AT)
            producer.send(settings.topic("labels"), value=record.to_json())
        producer.flush(60)
    finally:
        producer.close(10)


def labels_stored(settings) -> int:
    with clients.elasticsearch(settings) as es:
        es.indices.refresh(index=settings.index("labels"))
        return es.count(index=settings.index("labels"))["count"]


def committed_and_ends(settings) -> tuple[dict[int, int | None], dict[int, int]]:
    """The indexers' group's committed offsets and the end offsets of the labels topic, by partition."""
    topic = settings.topic("labels")
    consumer = clients.kafka_consumer(settings, group_id=f"{settings.topic_prefix}-labels-indexer")
    try:
        partitions = [TopicPartition(topic, n) for n in sorted(consumer.partitions_for_topic(topic))]
        ends = consumer.end_offsets(partitions)
        return ({tp.partition: consumer.committed(tp) for tp in partitions},
                {tp.partition: end for tp, end in ends.items()})
    finally:
        consumer.close()


def index_once(settings, **env: str):
    return CliRunner().invoke(app, ["labels", "index", "--once"], env=env_of(settings, **env))


def test_index_once_reads_a_topic_of_many_polls_to_its_end_and_exits_0(bootstrapped) -> None:
    settings = bootstrapped
    produce_labels(settings, 3 * MAX_POLL_RECORDS + 200)
    result = index_once(settings)
    assert result.exit_code == 0, result.output
    assert result.stdout == "read 1700 record(s): 1700 indexed, 0 to the DLQ\n"
    assert labels_stored(settings) == 1700
    committed, ends = committed_and_ends(settings)
    assert sum(ends.values()) == 1700 and {n: offset or 0 for n, offset in committed.items()} == ends

    again = index_once(settings)  # nothing new: the group is at the end, and says so at once
    assert again.exit_code == 0 and again.stdout == "read 0 record(s): 0 indexed, 0 to the DLQ\n", again.output


def test_index_once_with_kafka_away_exits_1_in_one_line(bootstrapped) -> None:
    settings = bootstrapped
    closed = f"127.0.0.1:{free_port()}"
    result = index_once(settings, FINSENT_KAFKA_BOOTSTRAP=closed)
    assert result.exit_code == 1, result.output
    [line] = result.stderr.splitlines()
    assert line.startswith(f"finsent: cannot start the label indexer (Kafka at {closed}): "), line


class ElasticsearchGoingAway:
    """A real HTTP server in front of the test's Elasticsearch: it passes requests on until ``bulks`` bulk writes went
    through, then drops every connection unanswered (Elasticsearch gone away) until ``back()``."""

    def __init__(self, upstream_url: str, bulks: int) -> None:
        upstream = urlsplit(upstream_url)
        self.upstream = (upstream.hostname, upstream.port or 9200)
        self.bulks_left = bulks
        self.away = False
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def back(self) -> None:
        self.away, self.bulks_left = False, 1_000_000

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _lets_through(self, path: str) -> bool:
        with self._lock:
            if not self.away and path.split("?")[0].endswith("/_bulk"):
                self.away = self.bulks_left == 0
                self.bulks_left -= 1
            return not self.away

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Forward(BaseHTTPRequestHandler):
            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not proxy._lets_through(self.path):
                    self.close_connection = True  # no answer: the client's connection ends, as with a server down
                    return
                upstream = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream.request(self.command, self.path, body=body, headers=headers)
                answer = upstream.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in ("connection", "content-length", "transfer-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

            def log_message(self, format, *args) -> None:  # noqa: A002 - the base class's name
                pass

        return Forward


def test_index_once_with_elasticsearch_gone_away_says_how_far_it_got_and_a_rerun_goes_on(bootstrapped) -> None:
    settings = bootstrapped
    produce_labels(settings, 3000)
    es = ElasticsearchGoingAway(settings.elasticsearch_url, bulks=1)
    try:
        result = index_once(settings, FINSENT_ELASTICSEARCH_URL=es.url, FINSENT_LABELS_DRAIN_STALL_S="5")
        assert result.exit_code == 1, result.output
        stored = labels_stored(settings)
        assert 0 < stored <= MAX_POLL_RECORDS  # the first batch, indexed and committed
        assert result.stdout == f"read {stored} record(s): {stored} indexed, 0 to the DLQ\n"
        line = result.stderr.splitlines()[-1]
        assert re.fullmatch(
            rf"finsent: {re.escape(settings.topic('labels'))} was not drained: {3000 - stored} of its 3000 unread "
            r"record\(s\) left after 5 s without progress \(ConnectionError: .*\); what was read is indexed and "
            r"committed: run it again to go on from there", line), line
        committed, _ = committed_and_ends(settings)
        assert sum(offset or 0 for offset in committed.values()) == stored

        es.back()
        rerun = index_once(settings, FINSENT_ELASTICSEARCH_URL=es.url)
        assert rerun.exit_code == 0, rerun.output
        assert rerun.stdout == f"read {3000 - stored} record(s): {3000 - stored} indexed, 0 to the DLQ\n"
        assert labels_stored(settings) == 3000
    finally:
        es.close()
