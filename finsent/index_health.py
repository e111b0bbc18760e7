"""What ``finsent status`` says about finsent's indices: the disk under them, and any block.

A full disk is the one Elasticsearch fault the pipeline cannot ride out alone: at the flood-stage
watermark (95% by default) Elasticsearch puts ``read_only_allow_delete`` on every index with a shard
on that node, the worker holds the stream (nothing is lost, nothing is indexed), and only the bulk
retries show it. This names the cause. Elasticsearch lifts that block itself once the disk falls
below the high watermark; the block refuses document deletes too, so only freeing or adding disk
helps. (The local single node that ``finsent services up`` runs has the disk thresholds off.) Any
other block is reported too: ``write`` and ``metadata`` stop the worker or ``init``, ``read`` the
alerts, the dashboard, the drift checks and retention.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class IndexHealth:
    disk_percent: float | None  # the fullest data node's disk; None when Elasticsearch would not say
    blocks: dict[str, list[str]]  # index → the blocks set on it (write, read_only_allow_delete, …)
    indices: int  # finsent's indices these credentials can see

    @property
    def healthy(self) -> bool:
        return self.indices > 0 and not self.blocks

    def describe(self) -> str:
        disk = "disk use unknown" if self.disk_percent is None else f"disk {self.disk_percent:g}% used"
        if not self.indices:
            return f"{disk}, no finsent index visible: run `finsent services init`, or let these credentials see them"
        if not self.blocks:
            return f"{disk}, {self.indices} indices, none blocked"
        listed = ", ".join(f"{index} ({', '.join(names)})" for index, names in sorted(self.blocks.items()))
        advice = (" — disk full: free or add disk; Elasticsearch lifts it below its high watermark (the block "
                  "refuses deletes, so retention cannot)") if any(
            "read_only_allow_delete" in names for names in self.blocks.values()) else ""
        return f"{disk}, blocked: {listed}{advice}"


def blocks_of(flat_settings: dict[str, Any]) -> dict[str, list[str]]:
    """Index → the ``index.blocks.*`` set to true, from ``GET <indices>/_settings/index.blocks.*?flat_settings``."""
    found = {}
    for index, entry in flat_settings.items():
        names = sorted(key.removeprefix("index.blocks.") for key, value in entry.get("settings", {}).items()
                       if str(value).lower() == "true")
        if names:
            found[index] = names
    return found


def read(es: Any, index_prefix: str) -> IndexHealth:
    """Blocks on ``<index_prefix>-*`` and the fullest data node's disk use (left unknown where the
    credentials may not read it: it informs, the blocks decide)."""
    pattern = f"{index_prefix}-*"
    # Every index, closed ones too (a closed index takes no writes); the settings list only those with a block.
    status = {row["index"]: row["status"]
              for row in es.cat.indices(index=pattern, format="json", h="index,status", expand_wildcards="all")}
    blocks = blocks_of(dict(es.indices.get_settings(index=pattern, name="index.blocks.*", flat_settings=True,
                                                    allow_no_indices=True, ignore_unavailable=True)))
    for index in (index for index, state in status.items() if state == "close"):
        blocks[index] = [*blocks.get(index, []), "closed"]
    try:
        rows = es.cat.allocation(format="json", h="disk.percent")
        disk = max((float(row["disk.percent"]) for row in rows if row.get("disk.percent")), default=None)
    except Exception:  # noqa: BLE001 - a 403 or a slow node: the disk figure is only shown
        disk = None
    return IndexHealth(disk, blocks, len(status))
