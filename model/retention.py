"""Which registry versions a prune keeps: the champion, the versions a rollback can reach, and the
newest few.

Every retrain registers its challenger, promoted or not (about 90 MB of weights, more with an ONNX
cache), so a registry that is never pruned grows by one version per retrain.
"""

from __future__ import annotations

from collections.abc import Sequence


def rollback_targets(history: Sequence[str], champion: str | None, count: int) -> list[str]:
    """The first ``count`` champions that successive rollbacks reach, nearest first.

    ``history`` is the champion pointer's versions in promotion order. A rollback steps back to the
    version promoted before the current reign, so the targets are the earlier champions, newest
    first, each once."""
    targets: list[str] = []
    for version in reversed(history):
        if len(targets) == count:
            break
        if version != champion and version not in targets:
            targets.append(version)
    return targets


def versions_to_prune(versions: Sequence[str], champion: str | None, history: Sequence[str],
                      keep: int) -> list[str]:
    """The versions to delete, oldest first. ``versions`` are in creation order (oldest first).

    Kept: the champion, the newest ``keep`` versions (a challenger being judged is one of them)
    and the ``keep`` nearest rollback targets."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    kept = set(versions[-keep:]) | set(rollback_targets(history, champion, keep))
    if champion:
        kept.add(champion)
    return [v for v in versions if v not in kept]
