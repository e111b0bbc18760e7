"""Kibana saved objects: the shipped NDJSON is the builder's output, references resolve, and
every field a visualisation reads exists in finsent.topology's mappings with a usable type.
(tests/integration/test_dashboards_kibana_mappings.py repeats the field check against the
mappings a real Elasticsearch reports.)"""

from __future__ import annotations

import copy
import json

import pytest

from dashboards.cli import SHIPPED
from dashboards.kibana_check import field_problems, field_uses, flatten_mapping, reference_problems
from dashboards.kibana_objects import (
    DATA_VIEWS,
    MARKET_DASHBOARD,
    build_objects,
    parse_ndjson,
    to_ndjson,
)
from finsent.topology import MAPPINGS


def _mappings(prefix: str = "finsent") -> dict[str, dict[str, str]]:
    return {f"{prefix}-{name}": flatten_mapping(props) for name, props in MAPPINGS.items()}


def test_shipped_ndjson_is_the_builders_output():
    assert SHIPPED.read_text(encoding="utf-8") == to_ndjson(build_objects("finsent")), (
        "dashboards/kibana/finsent.ndjson is stale: run `finsent dashboards export -o dashboards/kibana/finsent.ndjson`")


def test_objects_cover_the_issue():
    objects = parse_ndjson(SHIPPED.read_text(encoding="utf-8"))
    by_type: dict[str, list[dict]] = {}
    for obj in objects:
        by_type.setdefault(obj["type"], []).append(obj)
    assert {v["attributes"]["title"] for v in by_type["index-pattern"]} >= {
        "finsent-docs", "finsent-aggregates", "finsent-alerts", "finsent-drift", "finsent-models"}
    assert {d["attributes"]["title"] for d in by_type["dashboard"]} == {"Market sentiment", "Pipeline health"}
    titles = {lens["attributes"]["title"] for lens in by_type["lens"]}
    for wanted in ("Sentiment over time per ticker", "Volume per ticker", "Label mix", "Top negative headlines",
                   "Top positive headlines", "Alert timeline", "Model version over time", "Drift statistics"):
        assert wanted in titles
    # The alert engine's dashboard links open this id.
    assert MARKET_DASHBOARD in {d["id"] for d in by_type["dashboard"]}
    for obj in objects:
        assert obj["typeMigrationVersion"] and obj["coreMigrationVersion"], obj["id"]


def test_every_reference_resolves_and_every_panel_has_one():
    objects = build_objects()
    assert reference_problems(objects) == []
    for dashboard in (o for o in objects if o["type"] == "dashboard"):
        panels = json.loads(dashboard["attributes"]["panelsJSON"])
        assert len(panels) == len(dashboard["references"]) >= 6
        for panel in panels:  # inside the 48-column grid
            assert panel["gridData"]["x"] + panel["gridData"]["w"] <= 48


def test_reference_check_catches_breakage():
    objects = build_objects()
    broken = copy.deepcopy(objects)
    lens = next(o for o in broken if o["type"] == "lens")
    lens["references"][0]["id"] = "finsent-dv-nope"
    dashboard = next(o for o in broken if o["type"] == "dashboard")
    dashboard["references"].pop()
    problems = reference_problems(broken)
    assert any("finsent-dv-nope" in p for p in problems)
    assert any("names no reference" in p for p in problems)
    duplicated = objects + [objects[0]]
    assert any("more than once" in p for p in reference_problems(duplicated))


def test_every_field_exists_in_the_topology_mappings():
    objects = build_objects()
    uses = field_uses(objects)
    assert {u.field for u in uses} >= {"sentiment.score", "tickers", "title.keyword", "sentiment.label",
                                       "model_version", "statistic", "monitor", "created_at"}
    assert field_problems(objects, _mappings()) == []


def test_field_check_catches_a_missing_field_and_a_wrong_type():
    objects = copy.deepcopy(build_objects())
    lens = next(o for o in objects if o["id"] == "finsent-sentiment-by-ticker")
    columns = lens["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]["layer1"]["columns"]
    columns["score"]["sourceField"] = "sentiment.mood"
    columns["t"]["sourceField"] = "tickers"  # a keyword cannot make a date histogram
    problems = field_problems(objects, _mappings())
    assert any("'sentiment.mood' is not in the index mapping" in p for p in problems)
    assert any("date_histogram cannot use 'tickers'" in p for p in problems)


@pytest.mark.parametrize("prefix", ["finsent", "acme-prod"])
def test_data_views_follow_the_index_prefix(prefix):
    objects = build_objects(prefix)
    titles = {o["attributes"]["title"] for o in objects if o["type"] == "index-pattern"}
    assert titles == {f"{prefix}-{name}" for name in DATA_VIEWS}
    assert field_problems(objects, _mappings(prefix)) == []


def test_parse_ndjson_names_the_bad_line():
    good = to_ndjson(build_objects()[:1])
    with pytest.raises(ValueError, match=r"objects.ndjson:2: not JSON"):
        parse_ndjson(good + "{nope\n", where="objects.ndjson")
    with pytest.raises(ValueError, match=r":1: a saved object needs type, id and attributes"):
        parse_ndjson('{"type": "lens"}\n')


def test_flatten_mapping_includes_multi_fields_and_skips_disabled_objects():
    fields = flatten_mapping(MAPPINGS["docs"] | {"extra": {"type": "object", "enabled": False}})
    assert fields["title"] == "text" and fields["title.keyword"] == "keyword"
    assert fields["sentiment.probabilities.negative"] == "float"
    assert "extra" not in fields and "sentiment" not in fields
