"""Kibana saved objects for finsent: data views, Lens visualisations and two dashboards.

Built in Python rather than hand-edited JSON so that every visualisation says, in one
place, which field of which index it reads; ``dashboards/kibana/finsent.ndjson`` is this
module's output for the default prefix (``finsent dashboards export`` writes it) and the
import command rebuilds the objects for the configured index prefix.

The objects use the Kibana 8.x export format (``typeMigrationVersion`` set), which Kibana
9.x imports and migrates forward. Object ids do not depend on the prefix: importing again
overwrites them. ``finsent-overview`` is the id the alert messages link to.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# short index name (finsent.topology MAPPINGS) -> (time field, data view name)
DATA_VIEWS: dict[str, tuple[str, str]] = {
    # ingested_at, not published_at: every document has it, and Kibana's time filter drops
    # documents whose time field is missing.
    "docs": ("ingested_at", "finsent documents"),
    "aggregates": ("window_start", "finsent window aggregates"),
    "alerts": ("created_at", "finsent alerts"),
    "drift": ("checked_at", "finsent drift checks"),
    "models": ("created_at", "finsent models"),
}
MARKET_DASHBOARD = "finsent-overview"
PIPELINE_DASHBOARD = "finsent-pipeline"

_CORE_MIGRATION = "8.8.0"
_TYPE_MIGRATION = {"index-pattern": "8.0.0", "lens": "8.9.0", "dashboard": "8.9.0"}
RECORDS = "___records___"  # Lens's pseudo-field of a document count
_LAYER = "layer1"


def data_view_id(name: str) -> str:
    return f"finsent-dv-{name}"


# --- Lens columns ------------------------------------------------------------------------

def date_histogram(field: str, label: str | None = None) -> dict[str, Any]:
    return {"label": label or field, "dataType": "date", "operationType": "date_histogram", "sourceField": field,
            "isBucketed": True, "scale": "interval",
            "params": {"interval": "auto", "includeEmptyRows": True, "dropPartials": False}}


def terms(field: str, *, size: int, order_by: str | None = None, direction: str = "desc",
          rank_by: dict[str, Any] | None = None, label: str | None = None, other: bool = True) -> dict[str, Any]:
    """Top values of ``field``, ranked by another column (``order_by``) or by a metric that is not
    shown (``rank_by``, Lens's "custom" ranking; a document count when neither is given)."""
    if order_by is not None:
        order: dict[str, Any] = {"orderBy": {"type": "column", "columnId": order_by}}
    else:
        order = {"orderBy": {"type": "custom"}, "orderAgg": rank_by or metric("count", label="Documents")}
    return {"label": label or f"Top {size} {field}", "dataType": "string", "operationType": "terms",
            "sourceField": field, "isBucketed": True, "scale": "ordinal",
            "params": order | {"size": size, "orderDirection": direction, "otherBucket": other,
                               "missingBucket": False, "parentFormat": {"id": "terms"}}}


def metric(operation: str, field: str = RECORDS, label: str | None = None, data_type: str = "number") -> dict[str, Any]:
    column = {"label": label or f"{operation} of {field}", "dataType": data_type, "operationType": operation,
              "sourceField": field, "isBucketed": False, "scale": "ratio", "params": {}}
    if operation != "count":
        column["params"] = {"emptyAsNull": True}
    return column


# --- Lens visualisation states -----------------------------------------------------------

def xy(series: str, *, x: str, ys: list[str], split: str | None = None) -> dict[str, Any]:
    layer = {"layerId": _LAYER, "layerType": "data", "seriesType": series, "xAccessor": x, "accessors": ys}
    if split:
        layer["splitAccessor"] = split
    return {"legend": {"isVisible": True, "position": "right"}, "valueLabels": "hide",
            "fittingFunction": "Linear", "preferredSeriesType": series, "layers": [layer],
            "axisTitlesVisibilitySettings": {"x": True, "yLeft": True, "yRight": True}}


def pie(*, groups: list[str], value: str) -> dict[str, Any]:
    return {"shape": "donut", "layers": [{"layerId": _LAYER, "layerType": "data", "primaryGroups": groups,
                                          "metrics": [value], "numberDisplay": "percent",
                                          "categoryDisplay": "default", "legendDisplay": "show",
                                          "nestedLegend": False}]}


def table(columns: list[str], *, sort: tuple[str, str] | None = None) -> dict[str, Any]:
    state: dict[str, Any] = {"layerId": _LAYER, "layerType": "data",
                             "columns": [{"columnId": c, "isTransposed": False} for c in columns]}
    if sort:
        state["sorting"] = {"columnId": sort[0], "direction": sort[1]}
    return state


@dataclass(frozen=True)
class Lens:
    id: str
    title: str
    description: str
    view: str  # short index name
    kind: str  # lnsXY, lnsPie, lnsDatatable
    columns: dict[str, dict[str, Any]]
    visualization: dict[str, Any]
    query: str = ""

    def saved_object(self) -> dict[str, Any]:
        # Terms before the date histogram: "top tickers over the whole range", not per interval.
        rank = {"terms": 0, "date_histogram": 1}
        order = sorted(self.columns, key=lambda c: rank.get(self.columns[c]["operationType"], 2))
        layer = {"columnOrder": order, "columns": self.columns, "incompleteColumns": {}}
        state = {"datasourceStates": {"formBased": {"layers": {_LAYER: layer}}}, "filters": [],
                 "internalReferences": [], "adHocDataViews": {},
                 "query": {"language": "kuery", "query": self.query}, "visualization": self.visualization}
        return _saved("lens", self.id, {"title": self.title, "description": self.description,
                                        "visualizationType": self.kind, "state": state},
                      [{"type": "index-pattern", "id": data_view_id(self.view),
                        "name": f"indexpattern-datasource-layer-{_LAYER}"}])


def _saved(kind: str, object_id: str, attributes: dict[str, Any], references: list[dict[str, str]]) -> dict[str, Any]:
    return {"type": kind, "id": object_id, "attributes": attributes, "references": references,
            "coreMigrationVersion": _CORE_MIGRATION, "typeMigrationVersion": _TYPE_MIGRATION[kind],
            "managed": False}


def visualisations() -> list[Lens]:
    docs = metric("count", label="Documents")
    return [
        Lens("finsent-sentiment-by-ticker", "Sentiment over time per ticker",
             "Mean sentiment score (P(pos) − P(neg)) of the 10 busiest tickers", "docs", "lnsXY",
             {"t": date_histogram("ingested_at", "Ingested"), "ticker": terms("tickers", size=10, label="Ticker"),
              "score": metric("average", "sentiment.score", "Mean sentiment")},
             xy("line", x="t", ys=["score"], split="ticker")),
        Lens("finsent-volume-by-ticker", "Volume per ticker", "Documents per interval, 10 busiest tickers",
             "docs", "lnsXY",
             {"t": date_histogram("ingested_at", "Ingested"), "ticker": terms("tickers", size=10, label="Ticker"),
              "n": docs},
             xy("bar_stacked", x="t", ys=["n"], split="ticker")),
        Lens("finsent-label-mix", "Label mix", "Share of negative, neutral and positive documents", "docs",
             "lnsPie",
             {"label": terms("sentiment.label", size=3, order_by="n", label="Label", other=False), "n": docs},
             pie(groups=["label"], value="n")),
        Lens("finsent-label-mix-over-time", "Label mix over time", "Share of each label per interval", "docs",
             "lnsXY",
             {"t": date_histogram("ingested_at", "Ingested"),
              "label": terms("sentiment.label", size=3, label="Label", other=False), "n": docs},
             xy("bar_percentage_stacked", x="t", ys=["n"], split="label")),
        Lens("finsent-top-negative", "Top negative headlines", "Lowest sentiment score in the time range",
             "docs", "lnsDatatable",
             {"title": terms("title.keyword", size=15, order_by="score", direction="asc", label="Headline",
                             other=False),
              "score": metric("min", "sentiment.score", "Score")},
             table(["title", "score"], sort=("score", "asc")), query='sentiment.label : "negative"'),
        Lens("finsent-top-positive", "Top positive headlines", "Highest sentiment score in the time range",
             "docs", "lnsDatatable",
             {"title": terms("title.keyword", size=15, order_by="score", direction="desc", label="Headline",
                             other=False),
              "score": metric("max", "sentiment.score", "Score")},
             table(["title", "score"], sort=("score", "desc")), query='sentiment.label : "positive"'),
        Lens("finsent-sentiment-z", "Sentiment z-score per ticker",
             "Window z-score of the mean sentiment against the ticker's baseline (1h windows)", "aggregates",
             "lnsXY",
             {"t": date_histogram("window_start", "Window"),
              "ticker": terms("ticker", size=10, label="Ticker", rank_by=metric("sum", "count", "Documents")),
              "z": metric("max", "sentiment_z", "Sentiment z")},
             xy("line", x="t", ys=["z"], split="ticker"), query='window : "1h"'),
        Lens("finsent-alert-timeline", "Alert timeline", "Alerts raised per interval and rule", "alerts",
             "lnsXY",
             {"t": date_histogram("created_at", "Raised"), "rule": terms("rule", size=10, label="Rule"),
              "n": metric("count", label="Alerts")},
             xy("bar_stacked", x="t", ys=["n"], split="rule")),
        Lens("finsent-alert-status", "Alert delivery status", "Webhook delivery state of the alerts", "alerts",
             "lnsPie",
             {"status": terms("status", size=5, order_by="n", label="Status", other=False),
              "n": metric("count", label="Alerts")},
             pie(groups=["status"], value="n")),
        Lens("finsent-model-version-over-time", "Model version over time",
             "Documents scored per interval by each model version", "docs", "lnsXY",
             {"t": date_histogram("scored_at", "Scored"),
              "version": terms("model_version", size=10, label="Model version"), "n": docs},
             xy("bar_stacked", x="t", ys=["n"], split="version")),
        Lens("finsent-models", "Model registry", "Model versions, when created and promoted", "models",
             "lnsDatatable",
             {"version": terms("version", size=50, order_by="created", label="Version", other=False),
              "status": terms("status", size=5, order_by="created", label="Status", other=False),
              "created": metric("max", "created_at", "Created", data_type="date"),
              "promoted": metric("max", "promoted_at", "Promoted", data_type="date")},
             table(["version", "status", "created", "promoted"], sort=("created", "desc"))),
        Lens("finsent-drift-statistics", "Drift statistics", "Statistic of each drift monitor per check",
             "drift", "lnsXY",
             {"t": date_histogram("checked_at", "Checked"), "monitor": terms("monitor", size=10, label="Monitor"),
              "stat": metric("max", "statistic", "Statistic")},
             xy("line", x="t", ys=["stat"], split="monitor")),
        Lens("finsent-drift-detections", "Drift detections", "Checks that detected drift, per monitor", "drift",
             "lnsXY",
             {"t": date_histogram("checked_at", "Checked"), "monitor": terms("monitor", size=10, label="Monitor"),
              "n": metric("count", label="Detections")},
             xy("bar_stacked", x="t", ys=["n"], split="monitor"), query="drift_detected : true"),
        Lens("finsent-indexing-rate", "Documents indexed per source", "Documents indexed per interval and source",
             "docs", "lnsXY",
             {"t": date_histogram("indexed_at", "Indexed"), "source": terms("source", size=10, label="Source"),
              "n": docs},
             xy("area_stacked", x="t", ys=["n"], split="source")),
    ]


# (dashboard id, title, description, [(lens id, width, height)]) laid out left to right on 48 columns
DASHBOARDS: list[tuple[str, str, str, list[tuple[str, int, int]]]] = [
    (MARKET_DASHBOARD, "Market sentiment", "What the market feels: sentiment, volume and headlines per ticker",
     [("finsent-sentiment-by-ticker", 32, 14), ("finsent-label-mix", 16, 14),
      ("finsent-volume-by-ticker", 24, 12), ("finsent-sentiment-z", 24, 12),
      ("finsent-top-negative", 24, 15), ("finsent-top-positive", 24, 15),
      ("finsent-alert-timeline", 32, 11), ("finsent-label-mix-over-time", 16, 11)]),
    (PIPELINE_DASHBOARD, "Pipeline health", "How the pipeline is doing: indexing, models, drift and alerts",
     [("finsent-indexing-rate", 32, 12), ("finsent-alert-status", 16, 12),
      ("finsent-model-version-over-time", 24, 12), ("finsent-models", 24, 12),
      ("finsent-drift-statistics", 24, 12), ("finsent-drift-detections", 24, 12)]),
]


def _layout(panels: list[tuple[str, int, int]]) -> list[tuple[str, dict[str, int]]]:
    x = y = row_height = 0
    placed = []
    for lens_id, w, h in panels:
        if x + w > 48:
            x, y, row_height = 0, y + row_height, 0
        placed.append((lens_id, {"x": x, "y": y, "w": w, "h": h}))
        x, row_height = x + w, max(row_height, h)
    return placed


def dashboard(object_id: str, title: str, description: str, panels: list[tuple[str, int, int]]) -> dict[str, Any]:
    panels_json, references = [], []
    for i, (lens_id, grid) in enumerate(_layout(panels), start=1):
        index = f"p{i}"
        panels_json.append({"version": "8.9.0", "type": "lens", "gridData": grid | {"i": index},
                            "panelIndex": index, "embeddableConfig": {"enhancements": {}},
                            "panelRefName": f"panel_{index}"})
        references.append({"type": "lens", "id": lens_id, "name": f"panel_{index}"})
    search = {"query": {"query": "", "language": "kuery"}, "filter": []}
    attributes = {"title": title, "description": description, "timeRestore": True, "timeFrom": "now-24h",
                  "timeTo": "now", "refreshInterval": {"pause": False, "value": 30_000},
                  "panelsJSON": json.dumps(panels_json),
                  "optionsJSON": json.dumps({"useMargins": True, "syncColors": True, "syncCursor": True,
                                             "syncTooltips": False, "hidePanelTitles": False}),
                  "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(search)}}
    return _saved("dashboard", object_id, attributes, references)


def data_view(name: str, index_prefix: str) -> dict[str, Any]:
    time_field, display = DATA_VIEWS[name]
    title = f"{index_prefix}-{name}"
    return _saved("index-pattern", data_view_id(name),
                  {"title": title, "name": f"{display} ({title})" if index_prefix != "finsent" else display,
                   "timeFieldName": time_field, "allowNoIndex": True}, [])


def build_objects(index_prefix: str = "finsent") -> list[dict[str, Any]]:
    """Every saved object, referenced objects before the ones that reference them."""
    objects = [data_view(name, index_prefix) for name in DATA_VIEWS]
    objects += [lens.saved_object() for lens in visualisations()]
    objects += [dashboard(*spec) for spec in DASHBOARDS]
    return objects


def to_ndjson(objects: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(obj, sort_keys=True, ensure_ascii=False) + "\n" for obj in objects)


def parse_ndjson(text: str, where: str = "<ndjson>") -> list[dict[str, Any]]:
    """Saved objects from NDJSON, with the line of any malformed object in the error."""
    objects = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}:{number}: not JSON: {exc}") from None
        if not isinstance(obj, dict) or not {"type", "id", "attributes"} <= set(obj):
            raise ValueError(f"{where}:{number}: a saved object needs type, id and attributes")
        objects.append(obj)
    return objects
