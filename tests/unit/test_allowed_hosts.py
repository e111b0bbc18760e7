"""The /metrics and /health servers answer only this machine's names in the Host header (DNS rebinding): real local
HTTP requests to each kind of server, with a foreign Host (421) and with good ones (200 and the metrics text)."""

from __future__ import annotations

import contextlib
import http.client
import re
import socket

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, Counter, start_http_server
from pydantic import SecretStr

from finsent.allowed_hosts import AllowedHosts, host_name
from finsent.metrics_server import serve_metrics
from finsent.settings import Settings, load_settings
from tests.conftest import ROOT
from tests.ports import free_port

FOREIGN = "rebound.attacker.example"


@pytest.mark.parametrize("header, name", [
    ("127.0.0.1:9466", "127.0.0.1"), ("[::1]:9466", "::1"), ("[::1]", "::1"), ("LocalHost.", "localhost"),
    ("worker:6066", "worker"), ("worker", "worker"), ("worker:", None), ("worker:x", None), ("[::1", None),
    ("evil.example@127.0.0.1", None), ("a b", None), (":80", None), ("", None),
])
def test_host_name(header, name):
    assert host_name(header) == name


def test_this_machines_names_and_any_ip_address_pass():
    allowed = AllowedHosts.of(Settings(allowed_hosts="scrape.example"), "metrics.internal")
    for header in ("127.0.0.1:9466", "[::1]:9466", "localhost:9466", "10.1.2.3:9466", "[fd00::5]:1",
                   "metrics.internal:9466", f"{socket.gethostname()}:9466", "Scrape.Example:9466", None, ""):
        assert allowed.allows(header), header
    for header in (f"{FOREIGN}:9466", FOREIGN, "localhost.attacker.example", "127.0.0.1.attacker.example",
                   "scrape.example.attacker.example", "evil.example@127.0.0.1"):
        assert not allowed.allows(header), header


def _get(port: int, host: str, path: str = "/metrics") -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})  # given, http.client sends no Host of its own
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        conn.close()


@contextlib.contextmanager
def _served(registry: CollectorRegistry, settings: Settings):
    server = serve_metrics(registry, 0, settings)
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


def _registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    Counter("finsent_probe_total", "A counter a page must not read", ["source"], registry=registry).labels(
        "rss:secret-feed.example").inc(3)
    return registry


def test_the_metrics_server_refuses_a_foreign_host_and_serves_prometheus_clients_text():
    registry = _registry()
    plain_port = free_port()
    server, _ = start_http_server(plain_port, addr="127.0.0.1", registry=registry)  # what alerts, retrain, ingest used
    try:
        plain = _get(plain_port, f"127.0.0.1:{plain_port}")
        assert _get(plain_port, f"{FOREIGN}:{plain_port}")[0] == 200  # the finding: it answers any name
    finally:
        server.shutdown()
        server.server_close()
    assert plain[0] == 200 and b"secret-feed" in plain[2]
    with _served(registry, Settings(allowed_hosts="prometheus-target")) as port:
        status, content_type, body = _get(port, f"{FOREIGN}:{port}")
        assert status == 421 and b"secret-feed" not in body and b"FINSENT_ALLOWED_HOSTS" in body
        assert content_type.startswith("text/plain")
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", f"172.18.0.5:{port}",
                     f"prometheus-target:{port}", socket.gethostname()):
            assert _get(port, host) == plain, host  # status, content type and text as start_http_server's
        assert _get(port, f"{FOREIGN}:{port}", "/")[0] == 421  # every path, not /metrics alone


def test_ingest_metrics_refuse_a_foreign_host():
    from ingest.runner import start_metrics_server

    port = free_port()
    start_metrics_server(_registry(), port, Settings())
    assert _get(port, f"{FOREIGN}:{port}")[0] == 421
    status, _, body = _get(port, f"127.0.0.1:{port}")
    assert status == 200 and b"finsent_probe_total" in body


def test_no_metrics_server_bypasses_the_host_check():
    # prometheus_client's own servers answer any Host: every /metrics server goes through finsent.metrics_server.
    sources = [path for part in ("alerts", "dashboards", "finsent", "ingest", "retrain", "stream", "model", "bench")
               for path in (ROOT / part).rglob("*.py")]
    calls = [str(path.relative_to(ROOT)) for path in sources
             if re.search(r"\bstart_(?:http|wsgi)_server\(", path.read_text())]
    assert len(sources) > 50 and calls == []


async def _aiohttp_get(app, host: str, path: str) -> tuple[int, str]:
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        response = await client.get(path, headers={"Host": host})
        return response.status, await response.text()


async def test_the_worker_web_server_refuses_a_foreign_host():
    from stream.app import create_app

    app = create_app(Settings(metrics_host="0.0.0.0", allowed_hosts="worker"), registry=_registry())
    app.web.init_server()  # the routes /metrics and /health, as the worker's start adds them
    for path in ("/metrics", "/health"):
        status, text = await _aiohttp_get(app.web.web_app, f"{FOREIGN}:6066", path)
        assert status == 421 and "secret-feed" not in text, path
    for host in ("127.0.0.1:6066", "worker:6066", "10.0.0.7:6066"):
        status, text = await _aiohttp_get(app.web.web_app, host, "/metrics")
        assert status == 200 and 'finsent_probe_total{source="rss:secret-feed.example"} 3.0' in text, host


async def test_the_labels_api_metrics_refuse_a_foreign_host(monkeypatch):
    from retrain.labels_http import create_app
    from tests.unit.label_api_fakes import use_fake_publisher

    use_fake_publisher(monkeypatch)
    settings = load_settings().model_copy(update={"label_token": SecretStr("tok"), "label_rate_limit": 0})
    app = create_app(settings, registry=_registry(), serve_metrics=True)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        refused = await client.get("/metrics", headers={"Host": FOREIGN})
        assert refused.status == 421 and "secret-feed" not in await refused.text()
        served = await client.get("/metrics", headers={"Host": "localhost"})
        assert served.status == 200 and "secret-feed" in await served.text()
        # the token is the defence of the API itself: a sender may name the server as it likes
        review = await client.get("/review", headers={"Host": FOREIGN})
        assert review.status == 401
