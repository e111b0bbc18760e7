"""Prometheus rules and config checked by promtool (Debian's prometheus package, installed by
tests/setup_promtool.sh), rule unit tests, and the Grafana dashboard's shape and metric names."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest
import yaml

from dashboards.metric_inventory import exposed_series, series_in
from tests.conftest import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
GRAFANA = ROOT / "deploy" / "grafana" / "finsent-pipeline.json"


@pytest.fixture(scope="module")
def promtool() -> str:
    setup = subprocess.run(["sh", str(ROOT / "tests" / "setup_promtool.sh")], capture_output=True, text=True,
                           timeout=600)
    path = shutil.which("promtool")
    if path is None:
        if "Temporary failure resolving" in setup.stderr or "Could not resolve" in setup.stderr:
            pytest.skip(f"promtool is missing and no Debian mirror is reachable: {setup.stderr.strip()[-300:]}")
        pytest.fail(f"tests/setup_promtool.sh could not install promtool: {setup.stdout}{setup.stderr}")
    return path


@pytest.fixture(scope="module")
def inventory() -> set[str]:
    missing: list[str] = []
    names = exposed_series(missing)
    assert not missing, f"metric modules missing from this build: {missing}"
    return names


def _run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=120, cwd=cwd)


def test_promtool_checks_the_rules(promtool):
    result = _run(promtool, "check", "rules", str(PROMETHEUS / "alerts.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 25 rules found" in result.stdout


def test_rule_unit_tests_fire_the_alerts(promtool):
    # worker down or stalled, no partition owned, DLQ rate, webhook failures, latency objective and
    # lag growth, each with a series that must fire and (for some) one that must not.
    result = _run(promtool, "test", "rules", "alerts.test.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_checks_the_scrape_config(promtool, tmp_path):
    config = (PROMETHEUS / "prometheus.yml").read_text()
    assert "/etc/prometheus/alerts.yml" in config  # where docker-compose mounts deploy/prometheus
    (tmp_path / "prometheus.yml").write_text(config.replace("/etc/prometheus/alerts.yml", str(tmp_path / "alerts.yml")))
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    result = _run(promtool, "check", "config", str(tmp_path / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_rules_cover_the_issue_and_read_only_real_metrics(inventory):
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    rules = {rule["alert"]: rule for group in groups for rule in group["rules"]}
    for wanted in ("FinsentWorkerDown", "FinsentConsumerLagGrowing", "FinsentDeadLetterRateHigh",
                   "FinsentWebhookDeliveriesFailing", "FinsentLatencyObjectiveMissed"):
        assert wanted in rules
    for name, rule in rules.items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        assert rule["annotations"]["summary"], name
        unknown = series_in(rule["expr"]) - inventory
        assert not unknown, f"{name} reads series no finsent process exposes: {unknown}"


def test_scrape_ports_match_the_settings_defaults():
    from finsent.settings import Settings

    defaults = Settings()
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"][0]
               for job in config["scrape_configs"] if "static_configs" in job}
    assert targets["finsent-alerts"].endswith(f":{defaults.alerts_metrics_port}")
    assert targets["finsent-scheduler"].endswith(f":{defaults.retrain_metrics_port}")
    assert targets["finsent-dashboard"].endswith(f":{defaults.dashboard_port}")


def _exposed_buckets() -> dict[str, set[str]]:
    """``le`` values of every unlabelled histogram, spelt as the processes expose them (30 → "30.0")."""
    import importlib

    from prometheus_client import CollectorRegistry

    from dashboards.metric_inventory import METRIC_CLASSES

    buckets: dict[str, set[str]] = {}
    for module_name, class_name in METRIC_CLASSES:
        registry = CollectorRegistry()
        getattr(importlib.import_module(module_name), class_name)(registry)
        for family in registry.collect():
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    buckets.setdefault(sample.name, set()).add(sample.labels["le"])
    return buckets


def test_bucket_bounds_in_rules_and_panels_are_spelt_as_exposed():
    # le is a string label: le="30" matches nothing when the client exposes le="30.0", and the
    # alert that reads it then never fires.
    buckets = _exposed_buckets()
    texts = [PROMETHEUS / "alerts.yml", PROMETHEUS / "alerts.test.yml", GRAFANA]
    found = 0
    for path in texts:
        for name, le in re.findall(r'(\w+_bucket)\{[^}]*?le=\\?"([^"\\]+)\\?"', path.read_text()):
            found += 1
            assert le in buckets.get(name, set()), f"{path.name}: {name}{{le={le!r}}} is not a bucket the " \
                                                   f"processes expose ({sorted(buckets.get(name, []))})"
    assert found >= 3


def _grafana_exprs(dashboard: dict) -> list[tuple[str, str]]:
    return [(panel["title"], target["expr"]) for panel in dashboard["panels"] for target in panel.get("targets", [])]


def test_grafana_dashboard_shape():
    dashboard = json.loads(GRAFANA.read_text())
    assert dashboard["uid"] == "finsent-pipeline" and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"], panel["title"]
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
    assert len(_grafana_exprs(dashboard)) >= 20


def test_grafana_queries_read_only_real_metrics(inventory):
    dashboard = json.loads(GRAFANA.read_text())
    for title, expr in _grafana_exprs(dashboard):
        unknown = series_in(expr) - inventory
        assert not unknown, f"panel {title!r} reads series no finsent process exposes: {unknown}"


def test_grafana_queries_parse_as_promql(promtool, tmp_path):
    # promtool parses PromQL only inside rule files: wrap each panel query in a recording rule,
    # with Grafana's interval variables replaced by a fixed range.
    dashboard = json.loads(GRAFANA.read_text())
    rules = [{"record": f"finsent:grafana_panel_{i}", "expr": expr.replace("$__rate_interval", "5m")
              .replace("$__interval", "1m").replace("$__range", "1h")}
             for i, (_, expr) in enumerate(_grafana_exprs(dashboard))]
    path = tmp_path / "grafana_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "grafana", "rules": rules}]}))
    result = _run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_series_in_ignores_functions_labels_and_keywords():
    expr = ('sum by (le) (rate(a_bucket{le="30", job=~"x.*"}[5m])) / on(job) group_left(version) '
            'b_count offset 5m and deriv(sum(c)[15m:1m]) > 0 unless absent(up{job="w"})')
    assert series_in(expr) == {"a_bucket", "b_count", "c", "up"}
