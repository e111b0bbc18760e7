"""finsent status names a write-blocked index (a full disk, say) against the real Elasticsearch."""

from __future__ import annotations

import pytest

from finsent import clients, system

pytestmark = pytest.mark.integration


def indices_row(settings) -> dict:
    [row] = [row for row in system.status(settings) if row["name"] == "indices"]
    return row


def test_status_names_a_blocked_index_and_says_what_to_do(bootstrapped):
    settings = bootstrapped
    row = indices_row(settings)
    assert row["healthy"] and row["kind"] == "service" and row["address"] == f"{settings.index_prefix}-*"
    assert "% used, 7 indices, none blocked" in row["detail"]
    docs, aggregates = settings.index("docs"), settings.index("aggregates")
    with clients.elasticsearch(settings) as es:
        # What Elasticsearch sets at its flood-stage watermark, and what an operator sets before a shrink.
        es.indices.put_settings(index=docs, settings={"index.blocks.read_only_allow_delete": True})
        es.indices.put_settings(index=aggregates, settings={"index.blocks.write": True})
        try:
            blocked = indices_row(settings)
        finally:
            es.indices.put_settings(index=f"{docs},{aggregates}", settings={
                "index.blocks.read_only_allow_delete": None, "index.blocks.write": None})
    assert not blocked["healthy"]
    assert f"blocked: {aggregates} (write), {docs} (read_only_allow_delete) — disk full" in blocked["detail"]
    assert indices_row(settings)["healthy"]
    with clients.elasticsearch(settings) as es:  # a closed index takes no writes either
        es.indices.close(index=settings.index("drift"))
        try:
            closed = indices_row(settings)
        finally:
            es.indices.open(index=settings.index("drift"), wait_for_active_shards="1")
    assert not closed["healthy"] and f"blocked: {settings.index('drift')} (closed)" in closed["detail"]
