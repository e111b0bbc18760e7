"""The dashboard on loopback answers only requests that name this machine (DNS rebinding)."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from dashboards.web_app import create_app
from finsent.allowed_hosts import is_loopback
from finsent.settings import Settings


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True),
                                           ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                           ("dashboard.internal", False), ("10.0.0.5", False)])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


async def _status(app, host_header: str | None) -> int:
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        headers = {"Host": host_header} if host_header else {}
        return (await client.get("/", headers=headers)).status


async def test_a_page_from_another_name_is_refused_on_loopback():
    app = create_app(Settings(), registry=CollectorRegistry(), es=object())
    assert await _status(app, None) == 200  # the client's own 127.0.0.1:port
    assert await _status(create_app(Settings(), registry=CollectorRegistry(), es=object()), "localhost:8000") == 200
    refused = create_app(Settings(), registry=CollectorRegistry(), es=object())
    assert await _status(refused, "attacker.example:8000") == 421


async def test_a_name_in_allowed_hosts_reaches_the_dashboard_on_loopback():
    settings = Settings(allowed_hosts="dashboard.internal")
    assert await _status(create_app(settings, registry=CollectorRegistry(), es=object()), "dashboard.internal") == 200
    app = create_app(settings, registry=CollectorRegistry(), es=object())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        refused = await client.get("/metrics", headers={"Host": "attacker.example"})
        assert refused.status == 421 and "FINSENT_ALLOWED_HOSTS" in (await refused.json())["error"]


async def test_a_dashboard_served_to_the_network_answers_any_name():
    app = create_app(Settings(dashboard_host="0.0.0.0"), registry=CollectorRegistry(), es=object())
    assert await _status(app, "dashboard.internal:8000") == 200
    app = create_app(Settings(), registry=CollectorRegistry(), es=object(), bind_host="0.0.0.0")  # --host
    assert await _status(app, "dashboard.internal:8000") == 200


async def test_error_answers_carry_the_security_headers_and_tickers_are_ascii():
    app = create_app(Settings(), registry=CollectorRegistry(), es=object())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        for path in ("/api/timeline?ticker=AAPL&range=1y", "/api/documents?limit=-1", "/api/timeline?ticker=%C3%9F",
                     "/no-such-page"):
            response = await client.get(path)
            assert response.status in (400, 404), path
            assert response.headers.get("Content-Security-Policy", "").startswith("default-src 'self'"), path
            assert response.headers.get("X-Content-Type-Options") == "nosniff", path
        assert "not a ticker symbol" in (await (await client.get("/api/timeline?ticker=%C3%9F")).json())["error"]
