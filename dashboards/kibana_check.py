"""Checks of saved objects that need no Kibana: every reference resolves, and every field a
visualisation reads exists in the index it reads, with a type its operation accepts.

Pure functions over saved objects and Elasticsearch mappings; ``finsent dashboards check``
and the tests feed them the real mappings of a running cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from dashboards.kibana_objects import RECORDS

_NUMERIC = {"long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float", "unsigned_long"}
_DATES = {"date", "date_nanos"}
# Field types each Lens operation accepts (Kibana's data view field types, as ES types).
ACCEPTS: dict[str, set[str]] = {
    "date_histogram": _DATES,
    "average": _NUMERIC, "sum": _NUMERIC, "median": _NUMERIC, "standard_deviation": _NUMERIC,
    "min": _NUMERIC | _DATES, "max": _NUMERIC | _DATES,
    "terms": {"keyword", "boolean", "ip"} | _NUMERIC,
    "unique_count": {"keyword", "boolean", "ip"} | _NUMERIC | _DATES,
}


@dataclass(frozen=True)
class FieldUse:
    object_id: str
    data_view: str  # the referenced data view's id
    field: str
    operation: str


def flatten_mapping(properties: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"sentiment.score": "float", "title.keyword": "keyword", ...}`` from mapping properties."""
    fields: dict[str, str] = {}
    for name, spec in properties.items():
        path = f"{prefix}{name}"
        if "properties" in spec:
            fields.update(flatten_mapping(spec["properties"], f"{path}."))
            continue
        kind = spec.get("type", "object")
        if kind == "object":
            continue  # a disabled object: neither searchable nor aggregatable
        fields[path] = kind
        for sub, sub_spec in spec.get("fields", {}).items():
            fields[f"{path}.{sub}"] = sub_spec.get("type", "object")
    return fields


def _lens_columns(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    layers = obj["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]
    for layer_id, layer in layers.items():
        for column in layer["columns"].values():
            yield layer_id, column
            rank = column.get("params", {}).get("orderAgg")
            if rank:
                yield layer_id, rank


def field_uses(objects: list[dict[str, Any]]) -> list[FieldUse]:
    """Every (visualisation, data view, field, operation) the objects contain."""
    uses = []
    for obj in objects:
        if obj["type"] != "lens":
            continue
        refs = {ref["name"]: ref["id"] for ref in obj.get("references", [])}
        for layer_id, column in _lens_columns(obj):
            view = refs.get(f"indexpattern-datasource-layer-{layer_id}", "?")
            if column.get("sourceField") and column["sourceField"] != RECORDS:
                uses.append(FieldUse(obj["id"], view, column["sourceField"], column["operationType"]))
    return uses


def reference_problems(objects: list[dict[str, Any]]) -> list[str]:
    """References to objects that are not in the set, and Lens/dashboard internals that
    name a reference or column that does not exist."""
    known = {(obj["type"], obj["id"]) for obj in objects}
    problems = []
    ids = [(obj["type"], obj["id"]) for obj in objects]
    for dup in {i for i in ids if ids.count(i) > 1}:
        problems.append(f"{dup[0]} {dup[1]!r} appears more than once")
    for obj in objects:
        where = f"{obj['type']} {obj['id']!r}"
        names = set()
        for ref in obj.get("references", []):
            names.add(ref["name"])
            if (ref["type"], ref["id"]) not in known:
                problems.append(f"{where}: reference {ref['name']!r} → {ref['type']} {ref['id']!r} is not defined")
        if obj["type"] == "dashboard":
            for panel in json.loads(obj["attributes"]["panelsJSON"]):
                if panel.get("panelRefName") not in names:
                    problems.append(f"{where}: panel {panel.get('panelIndex')!r} names no reference")
        if obj["type"] == "lens":
            problems += [f"{where}: {p}" for p in _lens_problems(obj, names)]
    return problems


def _lens_problems(obj: dict[str, Any], reference_names: set[str]) -> list[str]:
    problems = []
    state = obj["attributes"]["state"]
    layers = state["datasourceStates"]["formBased"]["layers"]
    for layer_id, layer in layers.items():
        if f"indexpattern-datasource-layer-{layer_id}" not in reference_names:
            problems.append(f"layer {layer_id!r} has no data view reference")
        if sorted(layer["columns"]) != sorted(layer["columnOrder"]):
            problems.append(f"layer {layer_id!r}: columnOrder differs from its columns")
        for column in layer["columns"].values():
            target = column.get("params", {}).get("orderBy", {}).get("columnId")
            if target is not None and target not in layer["columns"]:
                problems.append(f"layer {layer_id!r}: terms ranked by missing column {target!r}")
    columns = {c for layer in layers.values() for c in layer["columns"]}
    for accessor in _accessors(state["visualization"]):
        if accessor not in columns:
            problems.append(f"visualisation uses missing column {accessor!r}")
    shown = set(_accessors(state["visualization"]))
    for hidden in columns - shown:
        problems.append(f"column {hidden!r} is not shown by the visualisation")
    return problems


def _accessors(vis: dict[str, Any]) -> list[str]:
    found = []
    for layer in vis.get("layers", []):
        found += [layer[k] for k in ("xAccessor", "splitAccessor") if layer.get(k)]
        found += layer.get("accessors", []) + layer.get("primaryGroups", []) + layer.get("metrics", [])
    found += [c["columnId"] for c in vis.get("columns", [])]
    if vis.get("sorting"):
        found.append(vis["sorting"]["columnId"])
    return found


def field_problems(objects: list[dict[str, Any]], mappings: Mapping[str, Mapping[str, str]]) -> list[str]:
    """``mappings``: data view title → flattened field types (``flatten_mapping``) of that index.
    Reports fields missing from the index and fields whose type the operation does not accept."""
    views = {obj["id"]: obj["attributes"] for obj in objects if obj["type"] == "index-pattern"}
    problems = []
    for view_id, attributes in views.items():
        fields = mappings.get(attributes["title"])
        if fields is None:
            problems.append(f"data view {view_id!r}: no mapping for index {attributes['title']!r}")
        elif fields.get(attributes.get("timeFieldName", "")) not in _DATES:
            problems.append(f"data view {view_id!r}: time field {attributes.get('timeFieldName')!r} is not a date")
    for use in field_uses(objects):
        view = views.get(use.data_view)
        fields = mappings.get(view["title"]) if view else None
        if fields is None:
            continue  # reported above or by reference_problems
        kind = fields.get(use.field)
        where = f"lens {use.object_id!r} ({view['title']})"
        if kind is None:
            problems.append(f"{where}: field {use.field!r} is not in the index mapping")
        elif use.operation in ACCEPTS and kind not in ACCEPTS[use.operation]:
            problems.append(f"{where}: {use.operation} cannot use {use.field!r} of type {kind}")
    for obj in objects:
        if obj["type"] == "lens":
            problems += _query_problems(obj, views, mappings)
    return problems


def _query_problems(obj: dict[str, Any], views: dict[str, Any], mappings: Mapping[str, Mapping[str, str]]) -> list[str]:
    # The simple `field : value` queries these objects use name a field that must exist too.
    query = obj["attributes"]["state"]["query"]["query"].strip()
    if not query:
        return []
    field = query.split(":", 1)[0].strip()
    view = next((views[r["id"]] for r in obj["references"] if r["id"] in views), None)
    fields = mappings.get(view["title"]) if view else None
    if fields is not None and field not in fields:
        return [f"lens {obj['id']!r}: query field {field!r} is not in {view['title']!r}"]
    return []
