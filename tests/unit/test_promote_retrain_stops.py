"""SIGTERM to the one-shot commands that move the champion, retrain or drain the labels topic.

`model promote` and `rollback` stopped while the workers are told leave the pointer moved and say so, with the command
that tells them; stopped before the move they change nothing. `retrain run` stopped while it trains or judges leaves
no version registered and the champion as it was, as the scheduler's stop does; `retrain check` stopped while it
scores records nothing; `labels index` ends after the batch under way, indexed and committed. Each one-shot command
exits 128 + the signal's number (143). Before, SIGTERM killed each wherever it was, status 143 and no line: a promote's
pointer moved with the workers never told and nothing said, a retrain's challenger stayed registered, undecided.
Without a stop: a promote or rollback whose message Kafka does not take names the command that sends it again and
exits 4 (it exited 0, as with --no-notify, which still does), and `labels index --once` with Kafka away says so in one
line (it ended in a traceback).

The signal is real, sent to this process. Until a command puts its handler in, a test handler stands in for the
default action (the process ends where it is: :class:`Killed`), so that the old code fails a test rather than end
the run. Kafka and Elasticsearch are stand-ins; a closed Kafka port is tests/unit/test_stop_while_starting.py.
"""

from __future__ import annotations

import signal
import threading
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from finsent.cli import app
from finsent.schemas import LabelRecord
from model.registry import Registry
from tests.unit.test_one_shot_stops import STOPPED, _sigterm, export_stopped_by_sigterm
from tests.unit.test_retrain_promotion import FRESH, NOW, _BatchedScorer, _retrain_to_judge, _version



class Killed(BaseException):
    """What SIGTERM's default action amounts to here: the command ends where it is, its clean-up skipped."""


@pytest.fixture(autouse=True)
def killed_by_default():
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def kill(signum, frame):
        raise Killed(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, kill)
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.fixture
def env(tmp_path):
    return {"FINSENT_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "200"}


# --- finsent model promote, rollback --------------------------------------------------------------------------------

@pytest.fixture
def registry(tmp_path, monkeypatch) -> tuple[Registry, str, str]:
    """The registry of ``env`` (no Elasticsearch mirror) with two versions, promoted in turn: the newer one is the
    champion, the older the rollback target."""
    registry = Registry(tmp_path / "state" / "models")
    monkeypatch.setattr("model.registry.open_registry", lambda settings, mirror=True: registry)
    older, newer = (_version(registry, tmp_path, name) for name in ("older", "newer"))
    registry.promote(older)
    registry.promote(newer)
    return registry, older, newer


class Unanswered:
    """``stream.control.publish`` to a Kafka that does not answer (its bootstrap retries for 30 s): SIGTERM once
    it began."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.released = threading.Event()

    def __call__(self, settings, message) -> None:
        self.calls.append(message.model_version)
        _sigterm()
        self.released.wait(30)
        raise ConnectionError("Kafka away")


@pytest.mark.parametrize("command", ["promote", "rollback"])
def test_a_move_stopped_while_the_workers_are_told_says_it_moved_and_how_to_tell_them(
        registry, env, monkeypatch, command):
    registry, older, newer = registry
    publish = Unanswered()
    monkeypatch.setattr("stream.control.publish", publish)
    args = ["model", "promote", older] if command == "promote" else ["model", "rollback"]
    try:
        result = CliRunner().invoke(app, args, env=env)
    finally:
        publish.released.set()
    assert result.exit_code == STOPPED, result.output
    assert publish.calls == [older] and registry.champion() == older  # the pointer moved: the line must say so
    assert f"champion is now {older}" in result.stdout
    assert (f"finsent: stopped by SIGTERM: the champion is now {older} (was {newer}), but running workers were not "
            f"told: the control message on finsent.control was not confirmed sent; they score with {newer} until they "
            f"restart; run `finsent model promote {older}` to tell them") in result.stderr


@pytest.mark.parametrize("command", ["promote", "rollback"])
def test_a_move_whose_workers_kafka_cannot_reach_exits_4_and_says_how_to_tell_them(registry, env, monkeypatch,
                                                                                   command):
    # Before, it exited 0: `finsent model promote V && …` went on as if the workers scored with V.
    registry, older, newer = registry

    def away(settings, message):
        raise ConnectionError("Kafka away")

    monkeypatch.setattr("stream.control.publish", away)
    args = ["model", "promote", older] if command == "promote" else ["model", "rollback"]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 4, result.output  # moved (not 1), but the workers were not told (not 0)
    assert registry.champion() == older  # the move stands: the registry is the truth
    assert f"champion is now {older}" in result.stdout
    assert (f"warning: could not tell workers on finsent.control (Kafka away); they load the champion when they "
            f"restart, or `finsent model promote {older}` tells them") in result.stderr


@pytest.mark.parametrize("command", ["promote", "rollback"])
def test_a_move_told_to_no_one_exits_0(registry, env, monkeypatch, command):
    registry, older, newer = registry
    sent: list[str] = []
    monkeypatch.setattr("stream.control.publish", lambda settings, message: sent.append(message.model_version))
    args = ["model", "promote", older] if command == "promote" else ["model", "rollback"]
    result = CliRunner().invoke(app, [*args, "--no-notify"], env=env)
    assert result.exit_code == 0, result.output  # no one to tell, on purpose: nothing failed
    assert registry.champion() == older and sent == []
    assert "warning" not in result.stderr


def test_a_promote_stopped_while_the_onnx_export_is_built_changes_nothing(registry, env, monkeypatch):
    registry, older, newer = registry
    exported: list[str] = []
    export_apart = export_stopped_by_sigterm(exported)

    def onnx_file(folder, **kwargs):  # in this process, as before: a SIGTERM killed it half-written
        exported.append(folder.name)
        _sigterm()

    monkeypatch.setattr("model.onnx_runtime.export_apart", export_apart)
    monkeypatch.setattr("model.onnx_runtime.onnx_file", onnx_file)
    monkeypatch.setattr("stream.control.publish", lambda *_: pytest.fail("workers told of a promotion not made"))
    result = CliRunner().invoke(app, ["model", "promote", older], env=env | {"FINSENT_MODEL_QUANTIZE": "onnx-int8"})
    assert result.exit_code == STOPPED, result.output
    assert exported == [older] and registry.champion() == newer
    assert (f"finsent: stopped by SIGTERM: {older} not promoted: stopped while its ONNX export was built; nothing was "
            f"changed: the champion is still {newer}") in result.stderr


@pytest.mark.parametrize("notify", [True, False])
def test_a_rollback_stopped_while_the_onnx_export_is_built_says_the_champion_moved(registry, env, monkeypatch,
                                                                                   notify):
    # The rollback's target is known once the pointer moved, so its export is built after: the line said "was not
    # confirmed sent" (no message was tried) and, with --no-notify, told the user to tell the workers.
    registry, older, newer = registry

    monkeypatch.setattr("model.onnx_runtime.export_apart", export_stopped_by_sigterm([]))
    monkeypatch.setattr("stream.control.publish", lambda *_: pytest.fail("workers told after the stop"))
    command = ["model", "rollback"] + ([] if notify else ["--no-notify"])
    result = CliRunner().invoke(app, command, env=env | {"FINSENT_MODEL_QUANTIZE": "onnx-int8"})
    assert result.exit_code == STOPPED, result.output
    assert registry.champion() == older
    assert (f"finsent: stopped by SIGTERM: the champion is now {older} (was {newer}), but its ONNX export was stopped "
            "before it was built; ") in result.stderr
    assert "not confirmed sent" not in result.stderr
    assert (f"`finsent model promote {older}` builds it and tells them" in result.stderr) is notify


# --- finsent retrain run, retrain check -----------------------------------------------------------------------------

class Producer:
    def close(self, timeout=None) -> None:
        pass


def _opened(ctx, monkeypatch) -> None:
    """`finsent retrain …` gets ``ctx`` for its Context.open."""
    from retrain.context import Context

    ctx.producer = Producer()
    ctx.es.close = lambda: None
    monkeypatch.setattr(Context, "open", classmethod(lambda cls, settings, **kwargs: ctx))


def test_a_retrain_stopped_while_it_trains_registers_nothing_and_keeps_the_champion(tmp_path, env, monkeypatch):
    from model.training import TrainingStopped

    ctx, audits, champion = _retrain_to_judge(tmp_path, monkeypatch, lambda version: pytest.fail("judged"))

    def train(*args, registry, should_stop=None, **kwargs):  # the trainer asks should_stop before each step
        for step in range(50):
            if should_stop is not None and should_stop():
                raise TrainingStopped(f"training stopped at step {step} of 50")
            if step == 3:
                _sigterm()
        return SimpleNamespace(version=_version(registry, tmp_path, "challenger"))

    monkeypatch.setattr("model.training.train", train)
    _opened(ctx, monkeypatch)
    result = CliRunner().invoke(app, ["retrain", "run"], env=env)
    assert result.exit_code == STOPPED, result.output
    assert "stopped: training stopped at step 4 of 50" in result.stdout
    assert (f"finsent: stopped by SIGTERM: the retrain did not finish; the champion is still {champion} (a stopped "
            "retrain is no attempt: run the command again to retrain)") in result.stderr
    assert [p.name for p in ctx.registry.versions_dir.iterdir()] == [champion] and ctx.registry.champion() == champion
    assert audits.docs[-1]["decision"] == "stopped"


def test_a_retrain_stopped_while_it_reads_the_labels_loads_nothing_more_and_trains_nothing(tmp_path, env,
                                                                                            monkeypatch):
    # It went on to read every label, load the training rows and the golden set, and load the model, to stop at
    # step 0 of the training.
    from retrain import golden as goldenmod

    ctx, audits, champion = _retrain_to_judge(tmp_path, monkeypatch, lambda version: pytest.fail("judged"))
    fresh_labels = ctx.fresh_labels

    def stopped_while_read(*args, **kwargs):
        _sigterm()
        return fresh_labels(*args, **kwargs)

    monkeypatch.setattr(ctx, "fresh_labels", stopped_while_read)
    monkeypatch.setattr(ctx, "all_labels", lambda: pytest.fail("every label read after the stop"))
    monkeypatch.setattr(goldenmod, "load_rows", lambda paths: pytest.fail("training rows loaded after the stop"))
    monkeypatch.setattr("model.training.train", lambda *a, **kw: pytest.fail("trained after the stop"))
    _opened(ctx, monkeypatch)
    result = CliRunner().invoke(app, ["retrain", "run"], env=env)
    assert result.exit_code == STOPPED, result.output
    assert "stopped: stopped before training began" in result.stdout
    assert audits.docs[-1]["decision"] == "stopped" and ctx.registry.champion() == champion


class StoppedAtBatch(_BatchedScorer):
    """SIGTERM while the second batch is scored (the champion's, of the golden rows)."""

    def predict_proba(self, texts, on_batch=None):
        def after_batch():
            if len(self.batches) == 2:
                _sigterm()
            if on_batch is not None:
                on_batch()

        return super().predict_proba(texts, after_batch)

    def score(self, texts):  # what the drift check called before
        from model.scorer import to_sentiment

        return [to_sentiment(p) for p in self.predict_proba(texts)]


def test_a_retrain_stopped_while_it_judges_leaves_no_challenger_registered(tmp_path, env, monkeypatch):
    # Killed there, the challenger stayed registered, "undecided", until a prune.
    batches: list[str] = []
    ctx, audits, champion = _retrain_to_judge(tmp_path, monkeypatch, lambda version: StoppedAtBatch(version, batches))
    _opened(ctx, monkeypatch)
    result = CliRunner().invoke(app, ["retrain", "run"], env=env)
    assert result.exit_code == STOPPED, result.output
    assert batches == [champion, champion]
    challenger = audits.docs[-1]["challenger_version"]
    assert challenger and audits.docs[-1]["decision"] == "stopped"
    assert f"{challenger} deleted, its judging unfinished" in result.stdout
    assert [p.name for p in ctx.registry.versions_dir.iterdir()] == [champion] and ctx.registry.champion() == champion
    assert "finsent: stopped by SIGTERM: the retrain did not finish" in result.stderr


class NoDocuments:
    """Elasticsearch as a drift check reads it: no scored document yet."""

    def count(self, **kwargs):
        return {"count": 0}


def test_a_drift_check_stopped_while_it_scores_records_and_publishes_nothing(tmp_path, env, monkeypatch):
    recorded: list[object] = []
    batches: list[str] = []
    ctx, _, champion = _retrain_to_judge(tmp_path, monkeypatch, lambda version: StoppedAtBatch(version, batches))
    ctx.es = NoDocuments()
    ctx.publish_control = lambda message: pytest.fail("a drift message for a check not done")
    monkeypatch.setattr("retrain.drift_check.helpers.bulk", lambda es, actions, **kwargs: recorded.extend(actions))
    _opened(ctx, monkeypatch)
    result = CliRunner().invoke(app, ["retrain", "check"], env=env)
    assert result.exit_code == STOPPED, result.output
    assert batches == [champion, champion] and recorded == []  # 60 fresh labels are 15 batches
    assert (f"finsent: stopped by SIGTERM: drift check of {champion} stopped while scoring {len(FRESH)} fresh labels, "
            "after 2 batch(es): nothing was recorded or published; run it again") in result.stderr


# --- finsent labels index -------------------------------------------------------------------------------------------

class LabelsTopic:
    """One partition of the labels topic, three batches of four labels; SIGTERM while the second is polled."""

    def __init__(self) -> None:
        label = LabelRecord(text="Profit rose", label="positive", labeled_at=NOW)
        self.batches = [[SimpleNamespace(topic="finsent.labels", partition=0, offset=4 * b + n, value=label.to_json())
                         for n in range(4)] for b in range(3)]
        self.polls = 0
        self.commits: list[int] = []
        self.closed = False

    def poll(self, timeout_ms=0, max_records=None):
        self.polls += 1
        if self.polls == 2:
            _sigterm()
        batch = self.batches[self.polls - 1] if self.polls <= len(self.batches) else []
        return {("finsent.labels", 0): batch} if batch else {}

    def commit(self) -> None:
        self.commits.append(self.batches[self.polls - 1][-1].offset + 1)

    # --- where a drain (--once) ends: offset 12 ------------------------------------------------------------------

    def partitions_for_topic(self, topic) -> set[int]:
        return {0}

    def end_offsets(self, partitions, timeout_ms=None) -> dict:
        return dict.fromkeys(partitions, 12)

    def beginning_offsets(self, partitions, timeout_ms=None) -> dict:
        return dict.fromkeys(partitions, 0)

    def committed(self, partition, metadata=False, timeout_ms=None) -> int | None:
        return self.commits[-1] if self.commits else None

    def seek(self, tp, offset) -> None:
        pytest.fail("a batch failed")

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("once", [True, False], ids=["--once", "until stopped"])
def test_labels_index_stopped_half_way_indexes_and_commits_the_batch_under_way_then_ends(env, monkeypatch, once):
    from finsent import clients
    from retrain.label_store import IndexReport

    topic = LabelsTopic()
    indexed: list[int] = []

    def index_labels(es, settings, records, **kwargs):
        indexed.append(len(records))
        return IndexReport(indexed=len(records))

    monkeypatch.setattr(clients, "kafka_consumer", lambda settings, *topics, **kwargs: topic)
    monkeypatch.setattr(clients, "kafka_producer", lambda settings, **kwargs: Producer())
    monkeypatch.setattr(clients, "elasticsearch", lambda settings: SimpleNamespace(close=lambda: None))
    monkeypatch.setattr("finsent.topology.update_mapping", lambda es, settings, name: None)
    monkeypatch.setattr("retrain.label_indexer.index_labels", index_labels)
    result = CliRunner().invoke(app, ["labels", "index", *(["--once"] if once else [])], env=env)
    assert result.exit_code == (STOPPED if once else 0), result.output  # the long-running one ends as it should
    assert indexed == [4, 4] and topic.commits == [4, 8] and topic.closed  # the third batch is the next run's
    if once:
        assert "read 8 record(s): 8 indexed, 0 to the DLQ" in result.stdout
        assert ("finsent: stopped by SIGTERM: the topic was not drained: what was read is indexed and committed; run "
                "it again to go on") in result.stderr


def test_labels_index_once_with_kafka_away_says_so_in_one_line(env, monkeypatch):
    # It ended in kafka-python's traceback (after 30 s of bootstrap against a real closed port).
    from kafka.errors import KafkaTimeoutError

    from finsent import clients

    def away(settings, *topics, **kwargs):
        raise KafkaTimeoutError("Unable to bootstrap from ['127.0.0.1:9']")

    monkeypatch.setattr(clients, "kafka_producer", away)
    monkeypatch.setattr(clients, "elasticsearch", lambda settings: SimpleNamespace(close=lambda: None))
    monkeypatch.setattr("finsent.topology.update_mapping", lambda es, settings, name: None)
    env |= {"FINSENT_KAFKA_BOOTSTRAP": "127.0.0.1:9"}
    result = CliRunner().invoke(app, ["labels", "index", "--once"], env=env)
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == ("finsent: cannot start the label indexer (Kafka at 127.0.0.1:9): "
                                     "KafkaTimeoutError: Unable to bootstrap from ['127.0.0.1:9']")
