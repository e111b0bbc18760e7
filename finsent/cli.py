"""The one entry point, ``finsent``, with a subcommand group per part of the system.

Settings are loaded once here and handed to the commands through the typer context.
Heavy imports (torch, faust) happen inside the commands that need them, so ``finsent
--help`` and ``finsent services status`` stay fast.
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer

from finsent.settings import SettingsError, load_settings

app = typer.Typer(
    name="finsent",
    help="Streaming financial-sentiment monitor: ingest → Kafka → scoring worker → Elasticsearch.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)

# (command group, module holding its typer app, help)
_GROUPS = [
    ("services", "finsent.services.cli", "Local Kafka and Elasticsearch: up, down, status."),
    ("model", "model.cli", "Train, evaluate, serve and version the sentiment model."),
    ("ingest", "ingest.cli", "Pull or receive documents into Kafka."),
    ("stream", "stream.cli", "The scoring and indexing worker."),
    ("labels", "retrain.labels_cli", "Add and review labels."),
    ("retrain", "retrain.cli", "Drift checks, retraining and promotion."),
    ("alerts", "alerts.cli", "Alert rules and webhook delivery."),
    ("dashboards", "dashboards.cli", "Kibana saved objects and the built-in dashboard."),
    ("bench", "bench.cli", "Benchmarks: scorer, pipeline, memory."),
]


@app.callback()
def _root(ctx: typer.Context) -> None:
    try:
        ctx.obj = load_settings()
    except SettingsError as exc:
        typer.echo(f"finsent: {exc}", err=True)
        raise typer.Exit(2) from None
    logging.basicConfig(
        level=ctx.obj.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # Client libraries log every connection at INFO; keep their chatter out of our output.
    for noisy in ("kafka", "elastic_transport", "aiokafka", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


for _name, _module, _help in _GROUPS:
    try:
        _sub = importlib.import_module(_module).app
    except ModuleNotFoundError as _exc:
        if _exc.name is None or not _module.startswith(_exc.name):
            raise
        continue  # that part is not built yet
    app.add_typer(_sub, name=_name, help=_help)


def main() -> None:
    app()
