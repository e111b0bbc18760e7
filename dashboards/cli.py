"""`finsent dashboards …`: the built-in dashboard, and Kibana saved objects (import, export, check)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

from finsent.cli_support import fail, settings_of, stopped_while_starting

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)
log = logging.getLogger(__name__)

SHIPPED = Path(__file__).resolve().parent / "kibana" / "finsent.ndjson"


@app.command()
def serve(
    ctx: typer.Context,
    host: Optional[str] = typer.Option(None, help="Address to bind (default FINSENT_DASHBOARD_HOST, 127.0.0.1)"),
    port: Optional[int] = typer.Option(None, min=1, max=65535, help="Port (default FINSENT_DASHBOARD_PORT, 8000)"),
    require_label_token: bool = typer.Option(
        False, "--require-label-token",
        help="Refuse to start without FINSENT_LABEL_TOKEN or FINSENT_LABEL_TOKENS_FILE, or with a tokens file the "
             "labels API cannot use, rather than serve the review page with labelling off (docker-compose.yml)"),
) -> None:
    """Serve the built-in live dashboard (page, JSON API, review page, /health, /metrics)."""
    from dashboards.web_app import REGISTRY, create_app
    from finsent import clients, http_guard
    from finsent.stop_signals import StoppedWhileStarting

    settings = settings_of(ctx)
    if require_label_token:  # checked before Kafka, as `ingest serve --require-token` does
        from retrain.label_tokens import LabelAuth

        try:
            LabelAuth.from_settings(settings)
        except ValueError as exc:
            fail(str(exc))
    host = host or settings.dashboard_host
    port = port or settings.dashboard_port
    try:
        application = create_app(settings, bind_host=host)
    except ValueError as exc:
        fail(str(exc))
    typer.echo(f"dashboard on http://{host}:{port}/ (Elasticsearch {settings.elasticsearch_url}, "
               f"indices {settings.index('*')})")
    try:
        http_guard.run(application, host, port, settings, access_log=None,
                       metrics=http_guard.GuardMetrics(application[REGISTRY], "dashboard"))
    except StoppedWhileStarting:  # the review page's labels API connects to Kafka first
        stopped_while_starting(f"still connecting to Kafka at {settings.kafka_bootstrap}; nothing was served")
    except OSError as exc:
        fail(f"cannot serve on {host}:{port}: {exc}")
    except Exception as exc:  # the review page's Kafka producer: no broker, bad credentials…, not a trace
        fail(f"cannot start the dashboard (Kafka at {settings.kafka_bootstrap}): {clients.error_text(exc)}")


def _objects_text(settings, file: Path | None) -> str:
    from dashboards.kibana_objects import build_objects, parse_ndjson, to_ndjson

    if file is None:
        return to_ndjson(build_objects(settings.index_prefix))
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        fail(f"cannot read {file}: {exc}")
    try:
        parse_ndjson(text, where=str(file))
    except ValueError as exc:
        fail(str(exc))
    return text


@app.command("import")
def import_(
    ctx: typer.Context,
    kibana: Optional[str] = typer.Option(None, "--kibana", help="Kibana URL (default FINSENT_KIBANA_URL)"),
    username: Optional[str] = typer.Option(None, help="Kibana user (default FINSENT_KIBANA_USERNAME)"),
    password: Optional[str] = typer.Option(None, help="Password (better: FINSENT_KIBANA_PASSWORD)"),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="API key (better: FINSENT_KIBANA_API_KEY)"),
    space: Optional[str] = typer.Option(None, help="Kibana space (default FINSENT_KIBANA_SPACE or the default space)"),
    file: Optional[Path] = typer.Option(None, help="NDJSON to import (default: objects for FINSENT_INDEX_PREFIX)"),
    wait: float = typer.Option(0.0, help="Seconds to keep retrying while Kibana starts"),
    insecure: bool = typer.Option(False, help="Do not verify Kibana's TLS certificate"),
) -> None:
    """Import the data views, visualisations and dashboards into Kibana (idempotent: overwrites)."""
    from dashboards.kibana_import import KibanaError, KibanaTarget, import_ndjson

    settings = settings_of(ctx)
    secret = lambda value: value.get_secret_value() if value is not None else None  # noqa: E731
    target = KibanaTarget(
        url=(kibana or settings.kibana_url).rstrip("/"),
        username=username or settings.kibana_username,
        password=password or secret(settings.kibana_password),
        api_key=api_key or secret(settings.kibana_api_key),
        space=space or settings.kibana_space,
        verify=settings.kibana_verify_certs and not insecure,
    )
    if not target.url.startswith(("http://", "https://")):
        fail(f"--kibana: {target.shown()!r} is not an http(s) URL")
    text = _objects_text(settings, file)
    try:
        result = import_ndjson(text, target, wait=wait)
    except KibanaError as exc:
        fail(f"import failed: {exc}")
    for warning in result.warnings:
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(f"imported {result.success_count} saved objects into "
               f"{target.shown(target.import_url().rsplit('/api/', 1)[0])} "
               f"(dashboards: Market sentiment, Pipeline health)")


@app.command()
def export(
    ctx: typer.Context,
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="File to write (default: standard output)"),
    index_prefix: Optional[str] = typer.Option(None, help="Index prefix of the data views (default FINSENT_INDEX_PREFIX)"),
) -> None:
    """Write the saved objects as NDJSON (for Kibana's import page, or to refresh dashboards/kibana/)."""
    from dashboards.kibana_objects import build_objects, to_ndjson

    text = to_ndjson(build_objects(index_prefix or settings_of(ctx).index_prefix))
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {output}", err=True)


@app.command()
def check(ctx: typer.Context, file: Optional[Path] = typer.Option(None, help="NDJSON to check")) -> None:
    """Check the saved objects against the live index mappings: fields exist, references resolve."""
    from dashboards.kibana_check import field_problems, flatten_mapping, reference_problems
    from dashboards.kibana_objects import parse_ndjson
    from finsent import clients

    settings = settings_of(ctx)
    objects = parse_ndjson(_objects_text(settings, file))
    titles = {o["attributes"]["title"] for o in objects if o["type"] == "index-pattern"}
    mappings = {}
    try:
        with clients.elasticsearch(settings) as es:
            for title in sorted(titles):
                found = es.options(ignore_status=404).indices.get_mapping(index=title)
                for body in (found.body if found.meta.status == 200 else {}).values():
                    mappings[title] = flatten_mapping(body["mappings"].get("properties", {}))
    except Exception as exc:  # noqa: BLE001 - a connection problem is one clear line
        fail(f"cannot read the mappings from {settings.elasticsearch_url}: {exc}")
    problems = reference_problems(objects) + field_problems(objects, mappings)
    for problem in problems:
        typer.echo(problem, err=True)
    if problems:
        raise typer.Exit(1)
    typer.echo(f"{len(objects)} saved objects match the mappings of {', '.join(sorted(titles))}")
