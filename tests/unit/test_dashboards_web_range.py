"""Every panel of the built-in dashboard follows the chosen range: the page sends it, the API bounds its searches."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from dashboards.web_app import STATIC, create_app
from finsent.settings import Settings

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


class _Answer:
    body: dict = {}


class _RecordingElasticsearch:
    def __init__(self) -> None:
        self.searches: list[tuple[str, dict]] = []

    async def search(self, *, index: str, body: dict, **_: object) -> _Answer:
        self.searches.append((index, body))
        return _Answer()


async def test_each_panel_searches_only_the_chosen_range():
    es = _RecordingElasticsearch()
    app = create_app(Settings(), registry=CollectorRegistry(), es=es, clock=lambda: NOW)
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        for panel in ("documents", "alerts", "model", "drift"):
            response = await client.get(f"/api/{panel}?range=6h")
            assert response.status == 200 and (await response.json())["range"] == "6h", panel
    bounded = {index: body for index, body in es.searches if not index.endswith("models")}
    assert sorted(bounded) == ["finsent-alerts", "finsent-docs", "finsent-drift"]
    for index, body in es.searches:
        if index.endswith("models"):  # the champion: one registry entry per trained version, whatever its age
            continue
        [(field, bound)] = [next(iter(f["range"].items())) for f in body["query"]["bool"]["filter"] if "range" in f]
        assert bound == {"gte": "2026-03-01T06:00:00Z", "lte": "2026-03-01T12:00:00Z"}, (index, field)


def test_the_page_sends_the_chosen_range_to_every_panel():
    script = (STATIC / "dashboard.js").read_text()
    calls = re.findall(r"api\(`/api/(\w+)([^)]*)\)", script)  # to the ")": the documents URL nests a template
    assert {panel for panel, _ in calls} >= {"timeline", "documents", "alerts", "model", "drift"}
    for panel, query in calls:
        if panel != "tickers":  # the ticker picker lists the longest range on purpose
            assert "range=${range}" in query, panel
