"""The status line about finsent's indices, from what Elasticsearch reports."""

from __future__ import annotations

from finsent.index_health import IndexHealth, blocks_of


def test_blocks_are_read_from_flat_settings_and_only_those_set_to_true_count():
    flat = {"finsent-docs": {"settings": {"index.blocks.read_only_allow_delete": "true", "index.blocks.write": "false"}},
            "finsent-labels": {"settings": {}},
            "finsent-alerts": {"settings": {"index.blocks.read": "true"}}}
    assert blocks_of(flat) == {"finsent-docs": ["read_only_allow_delete"], "finsent-alerts": ["read"]}


def test_a_read_block_alone_leaves_the_pipeline_writing():
    assert IndexHealth(40.0, {"finsent-alerts": ["read"]}).healthy
    assert not IndexHealth(40.0, {"finsent-docs": ["write"]}).healthy
    full = IndexHealth(95.5, {"finsent-docs": ["read_only_allow_delete"]})
    assert not full.healthy and full.describe().startswith("disk 95.5% used, blocked: finsent-docs")
    assert "disk full" in full.describe() and "disk full" not in IndexHealth(40.0, {"x": ["write"]}).describe()
    assert IndexHealth(None, {}).describe() == "disk use unknown, no index blocked"
