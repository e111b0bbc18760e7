"""Which Prometheus series the finsent processes expose, and which ones a PromQL expression
reads, so alert rules and Grafana panels can be checked against the code that defines them.

The inventory instantiates each part's metrics class against a fresh registry (what the
processes really register), so a renamed metric fails the check instead of a dashboard.
"""

from __future__ import annotations

import importlib
import re

from prometheus_client import CollectorRegistry

# (module, class) of every part's metrics; a part missing from this build is skipped.
METRIC_CLASSES: list[tuple[str, str]] = [
    ("stream.metrics", "WorkerMetrics"),
    ("ingest.metrics", "IngestMetrics"),
    ("alerts.metrics", "AlertMetrics"),
    ("retrain.metrics", "RetrainMetrics"),
    ("dashboards.web_app", "DashboardMetrics"),
    ("finsent.http_guard", "GuardMetrics"),  # in the registries of push, labels, the dashboard and the worker
]
# Series Prometheus itself adds to every scrape target.
SCRAPE_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created", ""),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
}


def exposed_series(missing: list[str] | None = None) -> set[str]:
    """Every series name the processes can expose (counter ``x`` → ``x_total``, histograms'
    ``_bucket``/``_count``/``_sum``…) plus Prometheus's own ``up``. Modules that cannot be
    imported are appended to ``missing`` when given."""
    names = set(SCRAPE_SERIES)
    for module_name, class_name in METRIC_CLASSES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            if missing is not None:
                missing.append(module_name)
            continue
        registry = CollectorRegistry()
        getattr(module, class_name)(registry)
        for family in registry.collect():
            names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return names


_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
             "offset", "inf", "nan", "atan2", "le"}
_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'')
_GROUPINGS = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_TOKEN = re.compile(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*")  # not the unit of 5m or 1e-9


def series_in(expr: str) -> set[str]:
    """Metric names an expression selects (functions, keywords and label names excluded)."""
    text = _STRINGS.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = _GROUPINGS.sub("", text)
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    found = set()
    for match in _TOKEN.finditer(text):
        name = match.group()
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or name.lower() in _KEYWORDS:
            continue
        found.add(name)
    return found
