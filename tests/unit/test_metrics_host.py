"""FINSENT_METRICS_HOST decides where the /metrics servers listen: loopback unless the user opens it
(docker-compose sets 0.0.0.0 so that Prometheus's container can scrape)."""

from __future__ import annotations

import psutil
from prometheus_client import CollectorRegistry

from finsent.settings import Settings
from tests.ports import free_port


def _listening_addresses(port: int) -> set[str]:
    return {conn.laddr.ip for conn in psutil.Process().net_connections(kind="tcp")
            if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port}


def test_ingest_metrics_listen_on_the_configured_host():
    from ingest.runner import start_metrics_server

    port = free_port()
    start_metrics_server(CollectorRegistry(), port, Settings())
    assert _listening_addresses(port) == {"127.0.0.1"}


def test_worker_web_server_binds_the_configured_host():
    from stream.app import create_app

    assert create_app(Settings()).conf.web_bind == "127.0.0.1"
    assert create_app(Settings(metrics_host="0.0.0.0")).conf.web_bind == "0.0.0.0"


def test_the_worker_web_server_serves_no_table_state_or_cluster_routes():
    from stream.app import create_app

    conf = create_app(Settings(metrics_host="0.0.0.0")).conf
    assert not conf.web_tables_enabled and not conf.web_router_enabled
    assert not conf.web_stats_enabled and not conf.web_graph_enabled  # Faust's defaults while debug is off
