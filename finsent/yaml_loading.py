"""YAML configuration files (the alert rules, ``sources.yml``) read one way: safely, and a key given twice refused.

PyYAML keeps the last of two equal keys in a mapping: a second ``rules:`` or ``sources:`` further down a file
would drop everything above it, a repeated field the first value, and the file would still load. Errors are
:class:`yaml.YAMLError`; :func:`finsent.yaml_errors.yaml_problem` tells them without quoting the file.
"""

from __future__ import annotations

from typing import Any

import yaml

_MERGE = "tag:yaml.org,2002:merge"


class UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a key given twice in one mapping, naming both lines. Keys a merge
    (``<<: *defaults``) brings in may be overridden: that is what a merge is for."""

    def compose_mapping_node(self, anchor: str | None) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], yaml.Node] = {}
        for key, _ in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE:
                continue
            if (key.tag, key.value) in first:
                raise yaml.constructor.ConstructorError(
                    f"key {key.value!r} first given", first[key.tag, key.value].start_mark,
                    "given again in the same mapping (the second would silently replace the first)", key.start_mark)
            first[key.tag, key.value] = key
        return node


def load_yaml(text: str) -> Any:
    """The document in ``text``; :class:`yaml.YAMLError` for invalid YAML or a key given twice."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader
