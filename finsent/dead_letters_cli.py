"""``finsent dlq``: read the dead-letter topic, and replay the letters that would now pass.

Reading never joins a consumer group and commits nothing, so it can run beside the services.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Annotated, Any, Optional

import typer

from finsent.cli_support import fail, settings_of, stop_signals, stopped_before_the_end
from finsent.dead_letters import (
    REPLAY, LetterFilter, ReplayPlanner, StoredLetter, Summary, replay_headers, verdict_counts)
from finsent.settings import Settings

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)

SinceOption = Annotated[str, typer.Option(
    "--since", help="How far back: a duration (30m, 24h, 7d) or an ISO time with its zone")]
UntilOption = Annotated[Optional[str], typer.Option(
    "--until", help="Only letters that failed before this: a duration ago or an ISO time (default: now)")]
StageOption = Annotated[Optional[str], typer.Option(
    "--stage", help="Only this stage (validate, score, index, windows, labels, alerts.input, …)")]
GrepOption = Annotated[Optional[str], typer.Option("--grep", help="Only letters whose reason contains this text")]
JsonOption = Annotated[bool, typer.Option("--json", help="JSON lines instead of tables")]
_CHUNK = 500  # letters planned, checked against the index and sent at a time
_STUCK_AFTER_S = 60  # a read that gets no record for this long while the topic has more is given up


def parse_moment(value: str, now: datetime) -> datetime:
    """``24h`` → that long before ``now``; an ISO time must carry its zone."""
    from finsent.durations import parse_duration

    try:
        return now - parse_duration(value)
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is neither a duration (24h) nor an ISO time") from None
    if at.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone (add Z or +00:00)")
    return at


def _moment(option: str, value: str) -> datetime:
    try:
        return parse_moment(value, datetime.now(UTC))
    except ValueError as exc:
        fail(f"{option}: {exc}", code=2)


class DeadLetterReader:
    """The letters of the DLQ topic written since ``since``, up to its end when :meth:`open` ran. ``in_range`` is how
    many records lie there, ``read`` how many have been read: what a replay stopped before the end reports."""

    def __init__(self, settings: Settings, since: datetime) -> None:
        self.settings = settings
        self.since = since
        self.topic = settings.topic("dlq")
        self.in_range = 0
        self.read = 0
        self._consumer: Any = None
        self._left: dict[Any, int] = {}

    def open(self) -> DeadLetterReader:
        from kafka import TopicPartition

        from finsent import clients

        consumer = self._consumer = clients.kafka_consumer(self.settings, group_id=None)  # no group: no commit
        partitions = consumer.partitions_for_topic(self.topic)
        if not partitions:
            raise RuntimeError(f"Kafka at {self.settings.kafka_bootstrap} has no topic {self.topic} "
                               "(run `finsent init`)")
        tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        starts = consumer.offsets_for_times({tp: int(self.since.timestamp() * 1000) for tp in tps})
        ends = consumer.end_offsets(tps)
        for tp in tps:
            if starts[tp] is not None and starts[tp].offset < ends[tp]:
                consumer.seek(tp, starts[tp].offset)
                self._left[tp] = ends[tp]
                self.in_range += ends[tp] - starts[tp].offset
        return self

    def letters(self, unreadable: list[str], stopped: Callable[[], bool] = lambda: False) -> Iterator[StoredLetter]:
        """The letters, in each partition's order; records that are not dead letters are described in ``unreadable``.
        ``stopped()`` true ends them before the next record."""
        from finsent.dead_letters import read_letter
        from finsent.schemas import RecordError

        progress_at = time.monotonic()
        while self._left and not stopped():
            batch = self._consumer.poll(timeout_ms=1000)
            if batch:
                progress_at = time.monotonic()
            elif time.monotonic() - progress_at > _STUCK_AFTER_S:
                raise RuntimeError(f"no record from {self.topic} for {_STUCK_AFTER_S} s, with more to read")
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= self._left.get(tp, -1):
                        continue
                    if stopped():  # the records polled after this one are read again by the next run
                        return
                    self.read += 1
                    try:
                        yield read_letter(record.partition, record.offset, record.key, record.value)
                    except RecordError as exc:
                        unreadable.append(f"{self.topic}[{record.partition}]@{record.offset}: {exc.reason}")
                if tp in self._left and self._consumer.position(tp) >= self._left[tp]:
                    del self._left[tp]

    @property
    def unfinished(self) -> bool:
        """Whether the letters ended before the end of the range (once :meth:`letters` ran out: a stop)."""
        return bool(self._left)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()


def read_dead_letters(settings: Settings, since: datetime, unreadable: list[str]) -> Iterator[StoredLetter]:
    """Every letter of the DLQ topic written since ``since``, up to its end when the call began."""
    reader = DeadLetterReader(settings, since)
    try:
        yield from reader.open().letters(unreadable)
    finally:
        reader.close()


def _letter_json(stored: StoredLetter, **extra: Any) -> dict[str, Any]:
    where = {"dlq_partition": stored.partition, "dlq_offset": stored.offset}
    return where | stored.letter.model_dump(mode="json") | extra


def _warn_unreadable(unreadable: list[str]) -> None:
    for line in unreadable:
        typer.echo(f"not a dead letter: {line}", err=True)


def _source(stored: StoredLetter) -> str:
    letter = stored.letter
    return f"{letter.topic}[{letter.partition}]@{letter.offset}" if letter.topic else "-"


@app.command()
def show(
    ctx: typer.Context,
    since: SinceOption = "24h",
    until: UntilOption = None,
    stage: StageOption = None,
    grep: GrepOption = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Newest letters listed")] = 20,
    as_json: JsonOption = False,
) -> None:
    """Dead letters: counts by stage and source topic, then the newest, with their reasons."""
    import orjson

    from finsent.cli_tables import Column, print_table

    settings = settings_of(ctx)
    start, end = _moment("--since", since), _moment("--until", until) if until else None
    wanted = LetterFilter(stage=stage, reason_contains=grep, until=end)
    summary, unreadable = Summary(newest_kept=limit), []
    try:
        for stored in read_dead_letters(settings, start, unreadable):
            if wanted.matches(stored):
                summary.add(stored)
                if as_json:
                    typer.echo(orjson.dumps(_letter_json(stored)).decode())
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
        fail(f"cannot read {settings.topic('dlq')}: {exc}")
    _warn_unreadable(unreadable)
    if as_json:
        return
    typer.echo(f"{settings.topic('dlq')} since {since}: {summary.total} letters")
    print_table([Column("stage"), Column("from topic"), Column("letters", justify="right")],
                ((s, topic or "-", n) for (s, topic), n in summary.by_stage.most_common()))
    if summary.total:
        typer.echo(f"the newest {len(summary.newest)}:")
        print_table([Column("failed at (UTC)"), Column("stage"), Column("source"), Column("reason", whole=False)], (
            (stored.letter.failed_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"), stored.letter.stage,
             _source(stored), stored.letter.reason[:300]) for stored in summary.newest_first()))


def _checks(settings: Settings) -> dict[str, Any]:
    """The check each entry topic's consumer makes, as a replay needs it."""
    from finsent.schemas import LabelRecord, parse_record
    from stream.validation import parse_raw

    def raw_id(value: bytes) -> str:
        return parse_raw(value, settings.max_text_bytes).id

    def label(value: bytes) -> None:
        # As the label indexer reads them; labels have no document id.
        parse_record(LabelRecord, value, max_bytes=settings.label_max_bytes, ignore_unknown=True)

    return {settings.topic("raw"): raw_id, settings.topic("labels"): label}


def _chunks(letters: Iterable[StoredLetter], size: int) -> Iterator[list[StoredLetter]]:
    chunk: list[StoredLetter] = []
    for stored in letters:
        chunk.append(stored)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _indexed(es: Any, settings: Settings, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    answer = es.mget(index=settings.index("docs"), ids=ids, source=False)
    return {doc["_id"] for doc in answer["docs"] if doc.get("found")}


def _connect(settings: Settings, signals: Any, dry_run: bool, reader: DeadLetterReader) -> Any:
    """The producer (None for a dry run), with ``reader`` opened: each in a thread a stop leaves behind (Kafka's
    bootstrap retries for 30 s), so a stop then ends the command at once, nothing sent."""
    from finsent import clients
    from finsent.cli_support import stopped_while_starting
    from finsent.stop_signals import StoppedWhileStarting, start_unless_stopped, stopped_status

    try:
        producer = None if dry_run else start_unless_stopped(lambda: clients.kafka_producer(settings), signals)
        try:
            start_unless_stopped(reader.open, signals)
        except BaseException:
            if producer is not None:
                producer.close(timeout=10)
            raise
    except StoppedWhileStarting:
        stopped_while_starting(f"still connecting to Kafka at {settings.kafka_bootstrap}; nothing was replayed",
                               code=stopped_status(signals))
    except Exception as exc:  # noqa: BLE001 - no broker, no topic, bad credentials: one line, not a traceback
        fail(f"cannot connect to Kafka at {settings.kafka_bootstrap} to read {reader.topic}"
             f"{'' if dry_run else ' and send its letters'}: {clients.error_text(exc)}")
    return producer


@app.command()
def replay(
    ctx: typer.Context,
    since: SinceOption = "24h",
    until: UntilOption = None,
    stage: StageOption = None,
    grep: GrepOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be sent; send nothing")] = False,
    as_json: JsonOption = False,
) -> None:
    """Send dead-lettered documents and labels back to their topic, once they pass its checks.

    Documents already in the index are skipped, so a second replay sends nothing twice. Replayed
    documents keep their ingest time; a header carries the replay's, from which the worker measures
    their latency (their wait in the DLQ is not the pipeline's).

    SIGTERM or Ctrl-C stops it before the next letter: the letters read are sent and flushed, the counts printed,
    and the exit status is 128 + the signal's number (143, 130); run it again to go on.
    """
    import orjson

    from finsent import clients
    from finsent.cli_tables import Column, print_table
    from finsent.schemas import utc_now

    settings = settings_of(ctx)
    start, end = _moment("--since", since), _moment("--until", until) if until else None
    wanted = LetterFilter(stage=stage, reason_contains=grep, until=end)
    planner = ReplayPlanner(_checks(settings))
    counts: Counter[str] = Counter()
    unreadable: list[str] = []
    signals = stop_signals(ctx)  # the first stop ends the reading; a second one ends the process
    reader = DeadLetterReader(settings, start)
    producer = _connect(settings, signals, dry_run, reader)
    es = clients.elasticsearch(settings)
    try:
        letters = reader.letters(unreadable, stopped=lambda: bool(signals.received))
        for chunk in _chunks((s for s in letters if wanted.matches(s)), _CHUNK):
            planned = planner.plan(chunk)
            planned = ReplayPlanner.drop_indexed(planned, _indexed(
                es, settings, [i.doc_id for i in planned if i.verdict == REPLAY and i.doc_id]))
            headers = replay_headers(utc_now())
            sends = [producer.send(i.target, key=i.stored.key, value=i.value, headers=headers)
                     for i in planned if producer is not None and i.verdict == REPLAY]
            if producer is not None:
                producer.flush(timeout=60)
            for send in sends:
                send.get(timeout=60)  # raises if the broker did not take it
            if as_json:
                for item in planned:
                    typer.echo(orjson.dumps(_letter_json(item.stored, verdict=item.verdict)).decode())
            counts.update(verdict_counts(planned))
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
        fail(f"replay stopped after {counts[REPLAY]} sent: {exc}")
    finally:
        if producer is not None:
            producer.close(timeout=10)
        es.close()
        reader.close()
    _warn_unreadable(unreadable)
    if not as_json:
        typer.echo(f"{'dry run: ' if dry_run else ''}{counts.total()} letters since {since}")
        print_table([Column("verdict"), Column("letters", justify="right")], counts.most_common())
        typer.echo(f"{'would send' if dry_run else 'sent'} {counts[REPLAY]}")
    if reader.unfinished:
        stopped_before_the_end(signals, _stopped_line(reader, since, counts[REPLAY], dry_run))


def _stopped_line(reader: DeadLetterReader, since: str, sent: int, dry_run: bool) -> str:
    done = f"{reader.read} of the {reader.in_range} records of {reader.topic} since {since} read"
    if dry_run:
        return f"{done}, {sent} would be sent"
    # The next run skips what the index holds by then; it cannot know what this one sent that is not indexed yet.
    return (f"{done}, {sent} sent and acknowledged; run it again to go on once the worker has caught up: it skips the "
            "documents the index holds by then (one sent now and not indexed yet would go again, and count twice in "
            "the windows), and a label sent again overwrites itself")
