"""``finsent labels``: add labels, see the review queue, serve the labels API, index the topic."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import typer

from finsent.cli_support import (fail, settings_of, start_or_exit, stop_signals, stopped_before_the_end,
                                 stopped_while_starting)

app = typer.Typer(no_args_is_help=True, help="Add and review labels.")


@app.command()
def add(
    ctx: typer.Context,
    text: str | None = typer.Option(None, "--text", help="Text of the labelled document"),
    label: str | None = typer.Option(None, "--label", help="negative, neutral or positive"),
    doc_id: str | None = typer.Option(None, "--doc-id", help="Id of the document in <prefix>-docs"),
    csv_file: Path | None = typer.Option(None, "--csv", help="CSV with text,label[,doc_id][,annotator]"),
    annotator: str = typer.Option("cli", "--annotator", help="Who labelled (when the CSV does not say)"),
    from_review: bool = typer.Option(
        False, "--from-review", help="The documents came from `finsent labels review` (the model's least sure): "
                                     "the performance drift monitor leaves them out, as it does the review page's"),
) -> None:
    """Publish one label (--text/--label) or a CSV of labels to the labels topic.

    SIGTERM or Ctrl-C stops it before the next label: those sent are acknowledged, and the exit status is 128 + the
    signal's number (143, 130). Publishing the file again is harmless: a label's id is its document's and annotator's.
    """
    from finsent import clients
    from retrain.label_intake import LabelInputError, LabelPublisher, build_records, read_csv
    from retrain.review import REVIEW_SOURCE

    settings = settings_of(ctx)
    try:
        if csv_file is not None:
            if text or label or doc_id:
                fail("give either --csv or --text/--label, not both")
            records = read_csv(csv_file, annotator=annotator, source=REVIEW_SOURCE if from_review else "csv")
        elif text is not None and label is not None:
            records = build_records([{"text": text, "label": label, "doc_id": doc_id}], where="label",
                                    annotator=annotator, source=REVIEW_SOURCE if from_review else "cli")
        else:
            fail("give --text and --label, or --csv FILE")
    except LabelInputError as exc:
        fail("labels refused, nothing was published:\n  " + "\n  ".join(exc.problems))
    if not records:
        fail(f"{csv_file}: no labels in the file")
    signals = stop_signals(ctx)  # the first stop ends the sending; a second one ends the process
    publisher = LabelPublisher(settings)

    def failed(exc: Exception) -> None:
        publisher.close()
        fail(f"could not publish to {settings.topic('labels')} at {settings.kafka_bootstrap}: "
             f"{clients.error_text(exc)}")

    # A stop while starting leaves the start going on in a daemon thread: the publisher is not closed under it.
    start_or_exit(publisher.start, signals, f"still connecting to Kafka at {settings.kafka_bootstrap}; nothing was "
                                            "published", failed=failed)
    try:
        ids = publisher.publish(records, stopped=lambda: bool(signals.received))
    except Exception as exc:
        failed(exc)
    publisher.close()
    typer.echo(f"published {len(ids)} label(s) to {settings.topic('labels')}")
    if len(ids) < len(records):
        stopped_before_the_end(signals, f"{len(records) - len(ids)} of the {len(records)} labels not published; run "
                                        "the command again to publish them (the index keeps a label published twice "
                                        "once: its id is its document's and annotator's)")


@app.command()
def review(
    ctx: typer.Context,
    limit: int = typer.Option(20, "--limit", min=1, max=500),
    as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table"),
) -> None:
    """Recent unlabelled documents the model is least sure about (and drifted ones) first."""
    from finsent import clients
    from retrain.review import review_queue

    settings = settings_of(ctx)
    try:
        with clients.elasticsearch(settings) as es:
            items = review_queue(es, settings, limit=limit)
    except Exception as exc:
        fail(f"could not read {settings.index('docs')} at {settings.elasticsearch_url}: {exc}")
    if as_json:
        for item in items:
            typer.echo(json.dumps(item.to_dict(), ensure_ascii=False))
        return
    from finsent.cli_tables import Column, print_table

    # The doc id is what `finsent labels add --doc-id` (with --from-review) takes, so it is never cut; below 100 columns
    # the two parts of the priority go.
    columns = [Column("priority"), Column("uncertainty", from_width=100), Column("novelty", from_width=100),
               Column("predicted"), Column("doc id"), Column("text", whole=False)]
    print_table(columns, [[f"{item.priority:.3f}", f"{item.uncertainty:.3f}", f"{item.novelty:.2f}", item.predicted,
                           item.doc_id, (item.title or item.text)[:80]] for item in items])


@app.command()
def index(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Index every record the topic holds now, then exit; exit 1 when "
                                                    "Kafka or Elasticsearch stay away (FINSENT_LABELS_DRAIN_STALL_S)"),
) -> None:
    """Consume the labels topic into the labels index (bad records to the DLQ).

    With --once it reads what the topic held when it started (up to the end offsets its partitions had then; another
    indexer of the consumer group may read some), indexes and commits it, and exits 0. A failure is retried until
    FINSENT_LABELS_DRAIN_STALL_S seconds go by without progress; it then exits 1 with how far it got: what was read is
    indexed and committed, and a rerun goes on from there.

    SIGTERM or Ctrl-C ends it after the batch under way, indexed and committed: exit 0, or with --once, whose topic
    is then not drained, 128 + the signal's number (143, 130); run it again to go on."""
    from finsent import clients
    from retrain.label_indexer import LabelIndexer

    settings = settings_of(ctx)
    stop = threading.Event()
    signals = stop_signals(ctx, then=stop)  # the first stop ends the loop; a second one ends the process
    indexer = LabelIndexer(settings, refresh=once)
    # A stop while starting leaves the start going on in a daemon thread: the indexer is not closed under it. No
    # broker, bad credentials: one line, not a traceback.
    start_or_exit(indexer.start, signals, f"still connecting to Kafka at {settings.kafka_bootstrap}; nothing was "
                                          "indexed", one_shot=once,
                  failed=lambda exc: fail(f"cannot start the label indexer (Kafka at {settings.kafka_bootstrap}): "
                                          f"{clients.error_text(exc)}"))
    try:
        if not once:
            indexer.run(stop)
            return
        drained = indexer.drain(stop, stall_s=settings.labels_drain_stall_s)
    finally:
        indexer.close()
    typer.echo(f"read {drained.records} record(s): {indexer.indexed} indexed, {indexer.dead} to the DLQ")
    if drained.to_the_end:
        return
    if signals.received:
        stopped_before_the_end(signals, "the topic was not drained: what was read is indexed and committed; run it "
                                        "again to go on")
    why = drained.error or "no record came: the consumer group gave this run none of the partitions left"
    fail(f"{settings.topic('labels')} was not drained: {_how_far(drained)} after {settings.labels_drain_stall_s:g} s "
         f"without progress ({why}); what was read is indexed and committed: run it again to go on from there")


def _how_far(drained) -> str:
    if drained.left is None:
        return "its end offsets could not be read"
    return f"{drained.left} of its {drained.at_start} unread record(s) left"


@app.command()
def serve(
    ctx: typer.Context,
    host: str | None = typer.Option(None, "--host"),
    port: int | None = typer.Option(None, "--port"),
    with_indexer: bool = typer.Option(True, "--indexer/--no-indexer", help="Also index the labels topic"),
) -> None:
    """Serve POST /labels and GET /review (bearer FINSENT_LABEL_TOKEN or FINSENT_LABEL_TOKENS_FILE), plus /metrics."""
    from prometheus_client import CollectorRegistry

    from finsent import clients, http_guard
    from finsent.stop_signals import StoppedWhileStarting
    from retrain.label_indexer import indexing_in_background
    from retrain.labels_http import create_app

    settings = settings_of(ctx)
    registry = CollectorRegistry()
    try:
        api = create_app(settings, registry=registry, serve_metrics=True, bind_host=host)
    except ValueError as exc:
        fail(str(exc))
    with indexing_in_background(settings, with_indexer):
        try:
            http_guard.run(api, host or settings.labels_host, port or settings.labels_port, settings,
                           started=lambda url: typer.echo(f"labels API on {url} (Ctrl-C to stop)"),
                           metrics=http_guard.GuardMetrics(registry, "labels"))
        except StoppedWhileStarting:
            stopped_while_starting(f"still connecting to Kafka at {settings.kafka_bootstrap}; nothing was served")
        except OSError:
            raise  # a port in use, say: finsent.cli prints it
        except Exception as exc:  # no broker, bad credentials…: say so, do not dump a trace
            fail(f"cannot start the labels API (Kafka at {settings.kafka_bootstrap}): {clients.error_text(exc)}")
