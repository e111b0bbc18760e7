"""The Kibana saved objects against the mappings a real Elasticsearch reports for the indices
`finsent init` creates (isolated per test by the `bootstrapped` fixture)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from dashboards.kibana_check import field_problems, field_uses, flatten_mapping, reference_problems
from dashboards.kibana_objects import DATA_VIEWS, build_objects
from finsent import clients

pytestmark = pytest.mark.integration


def test_every_visualisation_field_exists_in_the_real_mappings(bootstrapped):
    objects = build_objects(bootstrapped.index_prefix)
    mappings = {}
    with clients.elasticsearch(bootstrapped) as es:
        for name in DATA_VIEWS:
            index = bootstrapped.index(name)
            body = es.indices.get_mapping(index=index)[index]["mappings"]
            assert body.get("dynamic") == "strict"
            mappings[index] = flatten_mapping(body["properties"])
    assert len(field_uses(objects)) >= 30
    assert reference_problems(objects) == []
    assert field_problems(objects, mappings) == []


def test_check_command_reads_the_live_mappings(bootstrapped, monkeypatch):
    from finsent.cli import app

    monkeypatch.setenv("FINSENT_INDEX_PREFIX", bootstrapped.index_prefix)
    result = CliRunner().invoke(app, ["dashboards", "check"])
    assert result.exit_code == 0, result.output
    assert f"match the mappings of {bootstrapped.index('aggregates')}" in result.output

    # A data view whose index does not exist is reported, not silently passed.
    monkeypatch.setenv("FINSENT_INDEX_PREFIX", bootstrapped.index_prefix + "-missing")
    missing = CliRunner().invoke(app, ["dashboards", "check"])
    assert missing.exit_code == 1
    assert "no mapping for index" in missing.output
