"""What ``finsent status`` says about finsent's indices: the disk under them, and any write block.

A full disk is the one Elasticsearch fault the pipeline cannot ride out alone: at the flood-stage
watermark (95% by default) Elasticsearch puts ``read_only_allow_delete`` on every index with a shard
on that node, the worker holds the stream (nothing is lost, nothing is indexed), and only the bulk
retries show it. This names the cause. Elasticsearch lifts that block itself once the disk falls
below the high watermark; a block an operator set (``index.blocks.write``) stays until lifted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class IndexHealth:
    disk_percent: float | None  # the fullest data node's disk, as Elasticsearch reports it
    blocks: dict[str, list[str]]  # index → the blocks set on it (write, read_only_allow_delete, …)

    @property
    def healthy(self) -> bool:
        """Writable: no block that refuses the worker's writes (a read block alone does not)."""
        return not any(set(names) - {"read"} for names in self.blocks.values())

    def describe(self) -> str:
        disk = "disk use unknown" if self.disk_percent is None else f"disk {self.disk_percent:g}% used"
        if not self.blocks:
            return f"{disk}, no index blocked"
        listed = ", ".join(f"{index} ({', '.join(names)})" for index, names in sorted(self.blocks.items()))
        advice = (" — disk full: free space (or lower FINSENT_DOCS_RETENTION_DAYS); Elasticsearch lifts it below "
                  "its high watermark") if any("read_only_allow_delete" in n for n in self.blocks.values()) else ""
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
    """Blocks on ``<index_prefix>-*`` and the fullest data node's disk use."""
    flat = es.indices.get_settings(index=f"{index_prefix}-*", name="index.blocks.*", flat_settings=True,
                                   allow_no_indices=True, ignore_unavailable=True)
    percents = [float(row["disk.percent"]) for row in es.cat.allocation(format="json") if row.get("disk.percent")]
    return IndexHealth(max(percents, default=None), blocks_of(dict(flat)))
