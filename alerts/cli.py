"""``finsent alerts``: run the alert engine, check a rules file, list alerts, test a webhook."""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Optional

import typer

from finsent.cli_support import fail, settings_of, start_or_exit

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)

RulesOption = Annotated[Path, typer.Option("--rules", "-r", help="Rules file (YAML); see alerts/rules.example.yml")]


def _load(path: Path, windows: str):
    from alerts.rules import RulesError, load_rules

    try:
        return load_rules(path, windows=windows)  # rules may only filter on windows the stream emits
    except RulesError as exc:
        fail(str(exc))


@app.command()
def check(ctx: typer.Context, rules: RulesOption) -> None:
    """Validate a rules file (against this environment's FINSENT_WINDOWS) and show what it will do."""
    import textwrap

    from alerts.service import AlertsConfigError, webhook_secret
    from finsent.cli_tables import Column, print_table, terminal_width
    from finsent.durations import format_duration

    settings = settings_of(ctx)
    parsed = _load(rules, settings.windows)
    rows = []
    for rule in parsed.rules:
        condition = {
            "sentiment_shift": lambda r: f"|z| >= {r.threshold:g} ({r.direction}), count >= {r.min_count}",
            "volume_spike": lambda r: f"volume z >= {r.threshold:g}, count >= {r.min_count}",
            "negative_burst": lambda r: f">= {r.count} negative (conf >= {r.min_confidence:g}) within {format_duration(r.within)}",
            "model": lambda r: ", ".join(r.actions),
            "drift": lambda r: "drift event" + (f" from {', '.join(r.monitors)}" if r.monitors else ""),
        }[rule.kind](rule)
        filters = []
        if getattr(rule, "tickers", None):
            filters.append("tickers " + ",".join(rule.tickers))
        if getattr(rule, "windows", None):
            filters.append("windows " + ",".join(rule.windows))
        rows.append([rule.name + ("" if rule.enabled else " (off)"), rule.kind, condition, "; ".join(filters) or "all",
                     format_duration(rule.cooldown), ", ".join(parsed.webhooks_of(rule)) or "-"])
    # Names stay whole (a rule's name is what its alerts carry); below 100 columns the kind goes (the
    # condition says it).
    columns = [Column("rule"), Column("kind", from_width=100), Column("condition", whole=False),
               Column("filters", whole=False), Column("cooldown"), Column("webhooks", whole=False)]
    print_table(columns, rows, title=f"{rules}: {len(parsed.rules)} rules, {len(parsed.webhooks)} webhooks")
    warnings = parsed.warnings()  # valid, so the engine runs it; likely not what was meant
    try:  # `run` checks the signing keys before it starts; the file may be meant for another environment
        webhook_secret(settings, parsed)
    except AlertsConfigError:
        unsigned = ", ".join(sorted(name for name, hook in parsed.webhooks.items() if hook.secret is None))
        warnings.append(f"FINSENT_ALERTS_WEBHOOK_SECRET is not set here and webhook(s) {unsigned} have no secret of "
                        "their own: `finsent alerts run` refuses to start without one (alerts/WEBHOOKS.md)")
    for warning in warnings:
        typer.echo(textwrap.fill(f"warning: {warning}", terminal_width(), subsequent_indent="  ",
                                 break_long_words=False, break_on_hyphens=False))
    typer.echo("rules ok")


@app.command()
def run(
    ctx: typer.Context,
    rules: RulesOption,
    metrics_port: Annotated[Optional[int], typer.Option(help="Prometheus port (default FINSENT_ALERTS_METRICS_PORT; 0: off)")] = None,
) -> None:
    """Consume aggregates, scored documents and control messages; deliver alerts to webhooks."""
    from prometheus_client import CollectorRegistry

    from alerts.service import AlertsConfigError, AlertService, consumer_group, outbox_path
    from finsent.metrics_server import serve_metrics
    from finsent.settings import without_credentials
    from finsent.stop_signals import StopSignals

    settings = settings_of(ctx)
    parsed = _load(rules, settings.windows)
    registry = CollectorRegistry()
    try:
        service = AlertService(settings, parsed, registry=registry)
    except AlertsConfigError as exc:
        fail(str(exc))
    port = settings.alerts_metrics_port if metrics_port is None else metrics_port
    stop = threading.Event()
    signals = StopSignals(then=stop)

    def failed(exc: Exception) -> None:
        service.close()
        fail(f"cannot start the alert engine: {exc}")

    start_or_exit(service.start, signals, f"still connecting to Kafka at {settings.kafka_bootstrap} or Elasticsearch "
                                          f"at {without_credentials(settings.elasticsearch_url)}; nothing was consumed",
                  one_shot=False, failed=failed)
    if port:  # after the start: `finsent up` reads a listening port as a started engine
        try:
            serve_metrics(registry, port, settings)
        except OSError as exc:
            service.close()
            fail(f"cannot serve metrics on {settings.metrics_host}:{port}: {exc.strerror or exc} "
                 "(FINSENT_ALERTS_METRICS_PORT)")
    typer.echo(f"alerts: {len(parsed.enabled_rules())} rules, group {consumer_group(settings)}, "
               f"outbox {outbox_path(settings)}" + (f", metrics on {settings.metrics_host}:{port}" if port else ""),
               err=True)
    try:
        service.run(stop)
    except Exception as exc:
        logging.getLogger("alerts").exception("alert engine stopped")
        fail(f"alert engine stopped: {type(exc).__name__}: {exc} (restart it: nothing is lost)")
    finally:
        service.close()


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[Optional[str], typer.Option(help="pending, delivered or failed")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 20,
    outbox: Annotated[bool, typer.Option("--outbox", help="Read this machine's outbox instead of Elasticsearch")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line")] = False,
) -> None:
    """Recent alerts with their delivery status."""
    import orjson

    from finsent import clients

    if status not in (None, "pending", "delivered", "failed"):
        fail(f"--status must be pending, delivered or failed, not {status!r}")
    settings = settings_of(ctx)
    if outbox:
        from alerts.outbox import Outbox
        from alerts.service import outbox_path

        path = outbox_path(settings)
        if not path.exists():
            fail(f"no outbox at {path} (has `finsent alerts run` run here?)")
        with Outbox(path) as box:
            docs = [row.listing() for row in box.list(status, limit)]
    else:
        query = {"term": {"status": status}} if status else {"match_all": {}}
        try:
            with clients.elasticsearch(settings) as es:
                found = es.options(ignore_status=404).search(
                    index=settings.index("alerts"), query=query, size=limit,
                    sort=[{"created_at": {"order": "desc"}}])
        except Exception as exc:
            fail(f"cannot read {settings.index('alerts')} from {settings.elasticsearch_url}: {exc}")
        docs = [hit["_source"] for hit in found.get("hits", {}).get("hits", [])]
    if as_json:
        for doc in docs:
            typer.echo(orjson.dumps(doc).decode())
        return
    from finsent.cli_tables import Column, print_table

    # The message (or the last delivery error, or why the alerts index refused it) folds; below 100 columns the
    # tries and window go.
    columns = [Column("created (UTC)"), Column("status"), Column("tries", from_width=100), Column("rule"),
               Column("ticker"), Column("window", from_width=100), Column("message", whole=False)]
    print_table(columns, [
        [doc["created_at"][:16].replace("T", " "), doc["status"], str(doc["attempts"]), doc["rule"],
         doc.get("ticker") or "", doc.get("window") or "",
         (doc.get("last_error") or doc.get("sync_error") or doc["message"])[:120]]
        for doc in docs], title=f"{len(docs)} alerts" + (f" ({status})" if status else ""))


@app.command()
def retry(
    ctx: typer.Context,
    key: Annotated[Optional[str], typer.Argument(help="Idempotency key (default: every failed delivery)")] = None,
) -> None:
    """Give dead-lettered deliveries a fresh set of attempts (the running engine picks them up)."""
    from alerts.outbox import Outbox
    from alerts.service import outbox_path

    path = outbox_path(settings_of(ctx))
    if not path.exists():
        fail(f"no outbox at {path}")
    with Outbox(path) as box:
        count = box.requeue_failed(time.time(), key)
    typer.echo(f"requeued {count} deliveries")


@app.command("test-webhook")
def test_webhook(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(
        metavar="URL|NAME", help="Receiver URL (http:// or https://), or with --rules a webhook's name")],
    rules: Annotated[Optional[Path], typer.Option(
        "--rules", "-r", help="Rules file: send to its webhook NAME with that webhook's URL, format, timeout, "
                              "headers and secret")] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="json or slack (default json)")] = None,
    timeout: Annotated[Optional[float], typer.Option(min=0.1, max=300, help="seconds (default 10)")] = None,
) -> None:
    """Send one signed sample alert to a URL, or to a webhook of a rules file, and report the answer."""
    from alerts.delivery import post, webhook_client
    from alerts.payload import idempotency_key
    from finsent.schemas import Alert

    settings = settings_of(ctx)
    if rules:
        hook = _rules_webhook(rules, target, settings.windows, fmt, timeout)
    else:
        hook = _url_webhook(target, fmt, timeout)
    shared = settings.alerts_webhook_secret.get_secret_value() if settings.alerts_webhook_secret else ""
    secret = hook.signing_secret(shared)
    if not secret:
        fail("FINSENT_ALERTS_WEBHOOK_SECRET is not set" + (f" and webhook {target!r} has no secret" if rules else "")
             + ": webhooks are always signed")
    now = datetime.now(UTC)
    alert = Alert(idempotency_key=idempotency_key("test-webhook", None, None, now), rule="test-webhook",
                  kind="model", z=None, message="finsent test alert: if you can read this, the webhook works.",
                  created_at=now)  # z set (None) as the engine sets it: the body has every field of a real one
    shown = f"webhook {target!r}" if rules else _shown_url(target)  # either URL may carry a token
    started = time.perf_counter()
    try:
        with webhook_client() as client:  # the engine's client: the same deadline, the same redirects
            response = post(client, hook, alert, secret, attempt=1, now=time.time())
    except Exception as exc:  # whatever the send raised, the answer is that this URL does not work
        fail(f"{shown}: {type(exc).__name__}: {exc}")
    elapsed = (time.perf_counter() - started) * 1000
    typer.echo(f"{shown}: HTTP {response.status_code} in {elapsed:.0f} ms (key {alert.idempotency_key})")
    if not 200 <= response.status_code < 300:
        fail(f"receiver answered {response.status_code}: {response.text[:200]}")


def _shown_url(url: str) -> str:
    """A typed webhook URL as messages quote it: the user part masked, and the path and query cut, since Slack's,
    Discord's and Teams' webhook URLs carry their token in the path (``https://***@hooks.example.com/…``)."""
    from urllib.parse import urlsplit

    from finsent.settings import without_credentials

    parts = urlsplit(url)  # one that httpx accepted (_url_webhook)
    cut = "/…" if parts.path.strip("/") or parts.query or parts.fragment else ""
    return without_credentials(f"{parts.scheme}://{parts.netloc}") + cut


def _url_webhook(url: str, fmt: str | None, timeout: float | None):
    from pydantic import ValidationError

    from alerts.rules import Webhook

    try:
        return Webhook(url=url, format=fmt or "json", timeout=timeout or 10.0)
    except ValidationError as exc:
        fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))


def _rules_webhook(path: Path, name: str, windows: str, fmt: str | None, timeout: float | None):
    if fmt is not None or timeout is not None:
        fail("with --rules, the format and timeout are the webhook's own: drop --format and --timeout")
    parsed = _load(path, windows)
    if name not in parsed.webhooks:
        fail(f"{path}: no webhook {name!r} (known: {', '.join(sorted(parsed.webhooks)) or 'none'})")
    return parsed.webhooks[name]


@app.command()
def receive(
    ctx: typer.Context,
    port: Annotated[Optional[int], typer.Option(min=1, max=65535, help="default FINSENT_RECEIVER_PORT")] = None,
) -> None:
    """Run the reference receiver on 127.0.0.1:PORT: verifies signatures and prints each alert."""
    from alerts.receiver import WebhookReceiver, body_key
    from finsent.stop_signals import StopSignals

    settings = settings_of(ctx)
    port = settings.receiver_port if port is None else port
    secret = settings.alerts_webhook_secret.get_secret_value() if settings.alerts_webhook_secret else ""
    if not secret:
        fail("FINSENT_ALERTS_WEBHOOK_SECRET is not set: the receiver needs it to verify signatures")

    def show(record) -> None:
        if record.error:
            typer.echo(f"rejected: {record.error}", err=True)
            return
        try:
            body = record.json()
        except ValueError:  # signed, yet not JSON: shown, not a crash of the request's thread
            body = None
        what = (body.get("message") or body.get("text")) if isinstance(body, dict) else "(not a JSON object)"
        state = "duplicate" if record.duplicate else "new"
        key = body_key(record.body) or record.headers.get("X-Finsent-Idempotency-Key")
        typer.echo(f"{state} {key}: {what}")

    signals = StopSignals()
    receiver = WebhookReceiver(secret, port=port, on_receive=show).start()
    typer.echo(f"listening on {receiver.url} (Ctrl-C to stop)", err=True)
    signals.wait()
    receiver.stop()
