"""A retrain's promotion step on a real registry of stand-in model folders, with a real Kafka producer
pointed at a port where no broker listens (Kafka down): what it promotes, and what it says."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from finsent import clients
from finsent.settings import Settings
from model.registry import Registry
from retrain.conflicts import ResolvedLabel
from retrain.context import Context
from retrain.metrics import RetrainMetrics
from retrain.retraining import Outcome, promote_challenger
from tests.ports import free_port


@pytest.fixture
def ctx(tmp_path):
    settings = Settings(state_dir=tmp_path / "state", model_dir=tmp_path / "models",
                        kafka_bootstrap=f"127.0.0.1:{free_port()}")
    # Kafka down: the send gives up after max_block_ms, as it does after a minute in service.
    producer = clients.kafka_producer(settings, api_version=(2, 8), max_block_ms=200)
    context = Context(settings=settings, es=None, registry=Registry(settings.models_path), producer=producer,
                      metrics=RetrainMetrics())
    yield context
    producer.close(timeout=1)


def _version(reg: Registry, tmp_path, name: str) -> str:
    folder = tmp_path / "src" / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"name": name}))
    return reg.register(folder, {"base_model": "b"})


def _decided(ctx: Context, tmp_path) -> tuple[str, str, Outcome]:
    """A champion and a challenger that beat it, the challenger's metadata written as _train_and_decide does."""
    champion, challenger = _version(ctx.registry, tmp_path, "champion"), _version(ctx.registry, tmp_path, "challenger")
    ctx.registry.promote(champion)
    ctx.registry.update_metadata(challenger, retrain={"decision": "promoted", "figures": {}, "reasons": ["better"]})
    return champion, challenger, Outcome("promoted", ["better"], champion_version=champion,
                                         challenger_version=challenger, figures={"fresh_gain": 0.1})


def test_a_champion_promoted_meanwhile_is_not_overridden(ctx, tmp_path) -> None:
    from retrain.cli import run_exit_code

    compared_with, challenger, outcome = _decided(ctx, tmp_path)
    meanwhile = _version(ctx.registry, tmp_path, "by-hand")
    ctx.registry.promote(meanwhile)  # `finsent model promote` while the challenger trained
    promote_challenger(ctx, outcome, trigger="cron")
    assert ctx.registry.champion() == meanwhile
    assert outcome.decision == "superseded" and outcome.workers_notified is None  # nothing to announce
    assert f"champion changed to {meanwhile}" in outcome.reasons[-1] and compared_with in outcome.reasons[-1]
    assert ctx.registry.get(challenger)["retrain"]["decision"] == "superseded"
    assert run_exit_code(outcome) == 0


def test_a_promotion_whose_control_message_fails_is_reported_as_promoted(ctx, tmp_path) -> None:
    from retrain.cli import run_exit_code

    champion, challenger, outcome = _decided(ctx, tmp_path)
    promote_challenger(ctx, outcome, trigger="manual")
    assert ctx.registry.champion() == challenger
    assert outcome.decision == "promoted" and outcome.reasons == ["better"]
    assert outcome.workers_notified is False and outcome.figures["workers_notified"] is False
    (warning,) = outcome.warnings
    assert f"finsent model promote {challenger}" in warning and champion in warning and "KafkaTimeoutError" in warning
    assert ctx.metrics.registry.get_sample_value("finsent_retrain_unannounced_promotions_total") == 1
    assert run_exit_code(outcome) == 4  # not 1: the retrain did not fail, the announcement did
    assert run_exit_code(Outcome("failed", ["boom"])) == 1


def test_a_promotion_announces_the_number_of_its_move(ctx, tmp_path) -> None:
    champion, challenger, outcome = _decided(ctx, tmp_path)
    sent = []
    ctx.publish_control = sent.append  # the broker's side is the integration tests'
    promote_challenger(ctx, outcome, trigger="cron")
    (message,) = sent
    pointer = ctx.registry.pointer()
    assert (message.model_version, message.sequence, message.registry_id) == (challenger, 2, pointer.registry_id)
    assert pointer.sequence == 2 and outcome.workers_notified is True  # the champion's promotion was move 1


def test_every_retrain_decision_is_counted_from_zero():
    # FinsentRetrainFailed reads increase(): a series that is born at 1 shows no increase.
    from retrain.metrics import DECISIONS, RetrainMetrics

    registry = RetrainMetrics().registry
    for decision in DECISIONS:
        assert registry.get_sample_value("finsent_retrain_decisions_total", {"decision": decision}) == 0.0


def test_the_gate_scores_models_as_the_workers_do(tmp_path, monkeypatch):
    # Loaded in fp32 whatever FINSENT_MODEL_QUANTIZE said, the gate judged a model other than the one served.
    from model.scorer import Scorer

    loads = []
    monkeypatch.setattr(Scorer, "load", classmethod(lambda cls, ref, **kwargs: loads.append((ref, kwargs)) or ref))
    settings = Settings(model_dir=tmp_path / "models", model_quantize="int8", max_length=200, model_batch_size=7)
    context = Context(settings=settings, es=None, registry=Registry(settings.models_path), producer=None, metrics=None)
    assert context.scorer("v1") == context.scorer("v1") == "v1"
    ((ref, kwargs),) = loads
    assert ref == "v1" and (kwargs["quantize"], kwargs["max_length"], kwargs["batch_size"]) == ("int8", 200, 7)


class AuditIndex:  # the retrain index: no earlier attempt; the audit records are kept
    def __init__(self) -> None:
        self.docs: list[dict] = []

    def options(self, **kwargs):
        return self

    def search(self, **kwargs):
        return {"hits": {"hits": []}}

    def index(self, index, document, **kwargs):
        self.docs.append(document)


NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
FRESH = [ResolvedLabel(key=f"k{i}", doc_id=f"d{i}", text=f"text {i}", label="neutral",
                       labeled_at=NOW - timedelta(minutes=60 - i), annotators=1, rule="single") for i in range(60)]


def _retrain_to_judge(tmp_path, monkeypatch, scorer) -> tuple[Context, AuditIndex, str]:
    """A context whose retrain trains a stand-in challenger (a registry copy) on 60 fresh labels and judges it on
    10 golden rows with ``scorer(version)``, loaded through the context's scorer cache; returns it, its audit index
    and the champion."""
    from model.scorer import Scorer
    from retrain import golden as goldenmod

    class Judging(Context):
        def all_labels(self):
            return []

        def fresh_labels(self, champion_meta, stored=None):
            return FRESH, []

        def earlier_labels(self, fresh, stored=None):
            return []

    monkeypatch.setattr(Scorer, "from_settings", classmethod(lambda cls, settings, ref, **kwargs: scorer(ref)))

    settings = Settings(state_dir=tmp_path / "state", model_dir=tmp_path / "models")
    es = AuditIndex()
    ctx = Judging(settings=settings, es=es, registry=Registry(settings.models_path), producer=None,
                  metrics=RetrainMetrics(), clock=lambda: NOW)
    champion = _version(ctx.registry, tmp_path, "champion")
    ctx.registry.promote(champion)
    rows = [goldenmod.Row(f"row {i}", "neutral") for i in range(10)]
    monkeypatch.setattr(goldenmod, "data_paths", lambda s: [])
    monkeypatch.setattr(goldenmod, "load_rows", lambda paths: rows)
    monkeypatch.setattr(goldenmod, "ensure_golden", lambda s, r, **kw: rows)
    monkeypatch.setattr("model.training.train", lambda *a, registry, **kw: SimpleNamespace(
        version=_version(registry, tmp_path, "challenger")))
    return ctx, es, champion


def test_a_retrain_that_fails_judging_its_challenger_names_it_and_marks_it_failed(tmp_path, monkeypatch) -> None:
    # The challenger stays in the registry: unnamed, and without the labels it saw, a promotion by hand made every
    # label fresh again to it (labels it trained on held back to judge the next challenger).
    from retrain.retraining import run_retrain

    def out_of_memory(version):
        raise RuntimeError("CUDA out of memory")

    ctx, es, champion = _retrain_to_judge(tmp_path, monkeypatch, out_of_memory)
    outcome = run_retrain(ctx, trigger="manual")
    challenger = outcome.challenger_version
    assert outcome.decision == "failed" and challenger and challenger != champion
    assert es.docs[-1]["challenger_version"] == challenger and es.docs[-1]["decision"] == "failed"
    meta = ctx.registry.get(challenger)
    assert meta["retrain"] == {"decision": "failed", "reasons": ["RuntimeError: CUDA out of memory"]}
    assert meta["labels_until"] == FRESH[-1].labeled_at.isoformat() and meta["labels_read_at"]
    assert ctx.registry.champion() == champion


class _BatchedScorer:
    """Scores four texts a batch, as Scorer.predict_proba does, calling ``on_batch`` after each; records them."""

    def __init__(self, version: str, batches: list[str]) -> None:
        self.version, self.batches = version, batches

    def predict_proba(self, texts, on_batch=None):
        probs = []
        for start in range(0, len(texts), 4):
            self.batches.append(self.version)
            probs += [[0.1, 0.8, 0.1]] * len(texts[start:start + 4])
            if on_batch is not None:
                on_batch()
        return probs


def test_a_scheduler_stopped_while_judging_stops_after_the_batch_and_deletes_the_unjudged_challenger(
        tmp_path, monkeypatch) -> None:
    # Judging ran to its end (both models on the golden set and the held-back labels) while a SIGTERM waited; then
    # the challenger stayed, undecided, until a prune (nothing judges it later: the next retrain trains a new one).
    from retrain.retraining import run_retrain

    batches: list[str] = []
    ctx, es, champion = _retrain_to_judge(tmp_path, monkeypatch, lambda version: _BatchedScorer(version, batches))
    # The stop comes while the champion's second golden batch is scored (of 3, then the challenger's 3 and more).
    outcome = run_retrain(ctx, trigger="cron", should_stop=lambda: len(batches) >= 2)
    challenger = outcome.challenger_version
    assert batches == [champion, champion]
    assert outcome.decision == "stopped" and challenger and challenger != champion
    stopped, deleted = outcome.reasons
    assert "judging stopped" in stopped and "after 2 batch(es)" in stopped
    assert deleted == f"{challenger} deleted, its judging unfinished (the next retrain trains a new one)"
    assert not ctx.registry.exists(challenger) and outcome.pruned == [challenger]
    assert [p.name for p in ctx.registry.versions_dir.iterdir()] == [champion]
    assert ctx.registry.champion() == champion
    assert (es.docs[-1]["decision"], es.docs[-1]["challenger_version"]) == ("stopped", challenger)
    assert es.docs[-1]["pruned_versions"] == [challenger] and deleted in es.docs[-1]["reasons"]
    assert ctx.metrics.registry.get_sample_value("finsent_retrain_decisions_total", {"decision": "stopped"}) == 1


@pytest.mark.parametrize("in_use", ["held by a worker", "promoted by hand"])
def test_a_challenger_stopped_while_judged_that_is_in_use_stays_undecided(tmp_path, monkeypatch, in_use) -> None:
    from model.registry import VersionHold
    from retrain.retraining import run_retrain

    batches: list[str] = []
    holds: list[VersionHold] = []

    def scorer(version):  # the first call is for the champion
        (challenger,) = [meta["version"] for meta in ctx.registry.list() if meta["version"] != version]
        if not batches and in_use == "held by a worker":
            holds.append(VersionHold(ctx.registry.path(challenger)))  # a worker pinned to it (model.scorer_process)
        elif not batches:
            ctx.registry.promote(challenger)  # `finsent model promote` while it is judged
        return _BatchedScorer(version, batches)

    ctx, es, champion = _retrain_to_judge(tmp_path, monkeypatch, scorer)
    outcome = run_retrain(ctx, trigger="cron", should_stop=lambda: len(batches) >= 1)
    challenger = outcome.challenger_version
    assert outcome.decision == "stopped" and ctx.registry.exists(challenger) and outcome.pruned == []
    stopped, kept = outcome.reasons
    why = "a running worker scores with" if in_use == "held by a worker" else "is or was the champion"
    assert kept.startswith(f"{challenger} stays registered, undecided: ") and why in kept
    assert ctx.registry.get(challenger)["retrain"] == {"decision": "undecided", "reasons": [stopped, kept]}
    assert es.docs[-1]["pruned_versions"] == [] and why in es.docs[-1]["reasons"]
    for hold in holds:
        hold.release()


class _ChallengerBetter(_BatchedScorer):
    """The challenger right on every (neutral) row, the champion wrong: judged better, it is promoted."""

    def __init__(self, version: str, champion: str, batches: list[str]) -> None:
        super().__init__(version, batches)
        self.champion = champion

    def predict_proba(self, texts, on_batch=None):
        probs = super().predict_proba(texts, on_batch)
        return [[0.1, 0.1, 0.8]] * len(probs) if self.version == self.champion else probs


def test_a_scheduler_stopped_during_the_onnx_export_kills_it_and_deletes_the_challenger(tmp_path, monkeypatch) -> None:
    # Judged better, the challenger was exported for onnx-int8 workers in process: a stop waited for the whole
    # export (6-10 s for MiniLM here, more for a larger model), then promoted it.
    import functools

    from model import onnx_runtime
    from retrain.retraining import run_retrain
    from tests.unit.test_model_onnx_export import partial_written, writes_then_hangs

    batches: list[str] = []
    champion_of = {}
    ctx, es, champion = _retrain_to_judge(
        tmp_path, monkeypatch, lambda version: _ChallengerBetter(version, champion_of["v"], batches))
    champion_of["v"] = champion
    ctx.settings = ctx.settings.model_copy(update={"model_quantize": "onnx-int8"})
    monkeypatch.setattr(onnx_runtime, "export_apart",
                        functools.partial(onnx_runtime.export_apart, export=writes_then_hangs, timeout=120))
    folders = ctx.registry.versions_dir
    outcome = run_retrain(ctx, trigger="cron",
                          should_stop=lambda: any(partial_written(folder) for folder in folders.iterdir()))
    challenger = outcome.challenger_version
    assert outcome.decision == "stopped" and challenger, outcome.reasons
    stopped, deleted = outcome.reasons
    assert f"judging stopped while exporting {challenger} to ONNX" in stopped and "asked to stop" in stopped
    assert deleted.startswith(f"{challenger} deleted, its judging unfinished") and not ctx.registry.exists(challenger)
    assert [p.name for p in folders.iterdir()] == [champion] and ctx.registry.champion() == champion
    assert es.docs[-1]["decision"] == "stopped"


def test_an_onnx_export_out_of_time_fails_the_retrain_and_marks_the_challenger_failed(tmp_path, monkeypatch) -> None:
    # Without a time limit the scheduler waited for a hung export (here one that ends after 30 s), holding the retrain
    # lock, then promoted the challenger.
    import functools

    from model import onnx_runtime
    from retrain.retraining import run_retrain
    from tests.unit.test_model_onnx_export import exports_after_half_a_minute

    champion_of = {}
    ctx, es, champion = _retrain_to_judge(
        tmp_path, monkeypatch, lambda version: _ChallengerBetter(version, champion_of["v"], []))
    champion_of["v"] = champion
    ctx.settings = ctx.settings.model_copy(update={"model_quantize": "onnx-int8", "retrain_export_timeout_s": 1.0})
    monkeypatch.setattr(onnx_runtime, "export_apart",
                        functools.partial(onnx_runtime.export_apart, export=exports_after_half_a_minute))
    outcome = run_retrain(ctx, trigger="cron", should_stop=lambda: False)
    challenger = outcome.challenger_version
    assert outcome.decision == "failed" and challenger, outcome.reasons
    [why] = outcome.reasons
    assert why.startswith("ExportTimedOut: the export of ") and "took over 1 s" in why
    assert why.endswith("(FINSENT_RETRAIN_EXPORT_TIMEOUT_S)")
    assert ctx.registry.get(challenger)["retrain"] == {"decision": "failed", "reasons": [why]}
    assert ctx.registry.champion() == champion and es.docs[-1]["decision"] == "failed"
    assert not (ctx.registry.path(challenger) / onnx_runtime.CACHE_DIR / "done.onnx").exists()



@pytest.mark.parametrize("ending", ["stopped", "failed"])
def test_a_challenger_stopped_or_failed_while_judged_leaves_no_scorer_in_memory(tmp_path, monkeypatch, ending) -> None:
    # The context's cache kept the challenger's scorer (a model's memory: ~90 MB for MiniLM) after its judging ended
    # in a stop (the challenger deleted) or a failure, until the next check loaded the champion.
    import gc
    import weakref

    from retrain import retraining

    batches: list[str] = []
    loaded: dict[str, weakref.ref] = {}

    def scorer(version):
        made = _BatchedScorer(version, batches)
        loaded[version] = weakref.ref(made)
        return made

    def fails(*args, **kwargs):  # after the scoring: the log record pytest keeps holds no frame of the scorer
        raise RuntimeError("no decision")

    ctx, es, champion = _retrain_to_judge(tmp_path, monkeypatch, scorer)
    if ending == "failed":
        monkeypatch.setattr(retraining, "decide_promotion", fails)
    outcome = retraining.run_retrain(
        ctx, trigger="cron", should_stop=lambda: ending == "stopped" and any(v != champion for v in batches))
    challenger = outcome.challenger_version
    assert outcome.decision == ending and challenger in loaded, outcome.reasons
    assert ctx.registry.exists(challenger) == (ending == "failed")
    gc.collect()
    assert loaded[challenger]() is None


@pytest.mark.parametrize("ending", ["rejected", "superseded", "promoted"])
def test_a_decided_challenger_leaves_the_scorer_cache_unless_it_became_champion(tmp_path, monkeypatch, ending) -> None:
    # A challenger rejected, or superseded (better, but the champion was promoted by hand meanwhile), kept its scorer
    # in the context's cache (a model's memory) until the next check loaded the champion. A promoted one is the
    # champion the next drift check scores: it stays, and is not loaded again.
    import gc
    import weakref

    from retrain.retraining import run_retrain

    batches: list[str] = []
    loaded: dict[str, weakref.ref] = {}
    champion_of: dict[str, str] = {}

    def scorer(version):
        if version != champion_of["v"] and ending == "superseded":
            ctx.registry.promote(_version(ctx.registry, tmp_path, "by-hand"))  # `finsent model promote` meanwhile
        made = (_BatchedScorer(version, batches) if ending == "rejected"
                else _ChallengerBetter(version, champion_of["v"], batches))
        loaded[version] = weakref.ref(made)
        return made

    ctx, es, champion = _retrain_to_judge(tmp_path, monkeypatch, scorer)
    champion_of["v"] = champion
    ctx.publish_control = lambda message: None  # the broker's side is the integration tests'
    outcome = run_retrain(ctx, trigger="cron", should_stop=lambda: False)
    challenger = outcome.challenger_version
    assert outcome.decision == ending and challenger in loaded, outcome.reasons
    assert (ctx.registry.champion() == challenger) == (ending == "promoted")
    gc.collect()
    if ending == "promoted":
        assert ctx.scorer(challenger) is loaded[challenger]()  # cached, not loaded again
    else:
        assert loaded[challenger]() is None


def test_a_scheduler_sigtermed_with_its_family_during_the_onnx_export_records_a_stop(tmp_path, monkeypatch) -> None:
    # `finsent down` SIGTERMs the scheduler and its export child alike: the child died at once, the retrain read a
    # failed export before its own stop, and recorded "failed" (the challenger kept, an attempt counted).
    import functools
    import os
    import signal

    from model import onnx_runtime
    from retrain.retraining import run_retrain
    from tests.unit.test_model_onnx_export import partial_written, says_its_pid_then_hangs

    champion_of: dict[str, str] = {}
    ctx, es, champion = _retrain_to_judge(
        tmp_path, monkeypatch, lambda version: _ChallengerBetter(version, champion_of["v"], []))
    champion_of["v"] = champion
    ctx.settings = ctx.settings.model_copy(update={"model_quantize": "onnx-int8"})
    monkeypatch.setattr(onnx_runtime, "export_apart", functools.partial(
        onnx_runtime.export_apart, export=says_its_pid_then_hangs, timeout=120, poll_s=0.5))
    signalled: list[int] = []

    def sigterm_to_the_family() -> bool:
        if signalled:  # the scheduler's own handler, a poll later
            return True
        for folder in ctx.registry.versions_dir.iterdir():
            if (folder / "pid.txt").exists() and partial_written(folder):
                signalled.append(int((folder / "pid.txt").read_text()))
                os.kill(signalled[0], signal.SIGTERM)
        return False

    outcome = run_retrain(ctx, trigger="cron", should_stop=sigterm_to_the_family)
    assert signalled and outcome.decision == "stopped", outcome.reasons
    assert "asked to stop" in outcome.reasons[0] and not ctx.registry.exists(outcome.challenger_version)
    assert es.docs[-1]["decision"] == "stopped" and ctx.registry.champion() == champion
