"""The status line about finsent's indices, from what Elasticsearch reports."""

from __future__ import annotations

from types import SimpleNamespace

from finsent.index_health import IndexHealth, blocks_of, read


def test_blocks_are_read_from_flat_settings_and_only_those_set_to_true_count():
    flat = {"finsent-docs": {"settings": {"index.blocks.read_only_allow_delete": "true",
                                          "index.blocks.write": "false"}},
            "finsent-labels": {"settings": {}},
            "finsent-alerts": {"settings": {"index.blocks.read": "true"}}}
    assert blocks_of(flat) == {"finsent-docs": ["read_only_allow_delete"], "finsent-alerts": ["read"]}


def test_any_block_or_no_index_at_all_is_unhealthy_and_a_full_disk_gets_its_advice():
    fine = IndexHealth(40.0, {}, 7)
    assert fine.healthy and fine.describe() == "disk 40% used, 7 indices, none blocked"
    assert not IndexHealth(40.0, {"finsent-alerts": ["read"]}, 7).healthy  # alerts and dashboards read them
    full = IndexHealth(95.5, {"finsent-docs": ["read_only_allow_delete"]}, 7)
    assert not full.healthy and full.describe().startswith("disk 95.5% used, blocked: finsent-docs")
    assert "free or add disk" in full.describe()
    assert "free or add disk" not in IndexHealth(None, {"finsent-docs": ["write"]}, 7).describe()  # an operator's
    none = IndexHealth(None, {}, 0)
    assert not none.healthy and none.describe().startswith("disk use unknown, no finsent index visible")


class Forbidden(Exception):
    pass


def _refused(**_):
    raise Forbidden("403: no monitor privilege")


def test_credentials_that_may_not_read_the_disk_leave_it_unknown_not_unhealthy():
    # A stand-in for a cluster whose API key reads finsent's indices but not the nodes' disks (the local
    # server's one user is a superuser, so it cannot refuse).
    es = SimpleNamespace(
        cat=SimpleNamespace(indices=lambda **_: [{"index": "finsent-docs", "status": "open"},
                                                 {"index": "finsent-old", "status": "close"}],
                            allocation=_refused),
        indices=SimpleNamespace(get_settings=lambda **_: {}))
    health = read(es, "finsent")
    assert (health.disk_percent, health.indices, health.blocks) == (None, 2, {"finsent-old": ["closed"]})
