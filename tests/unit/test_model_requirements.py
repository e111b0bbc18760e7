"""A model lists the options a scorer must know to score it (``requires`` in its metadata); this code refuses one
that requires an option it does not know, instead of scoring it wrongly (model/requirements.py). Stand-in model
folders: every refusal comes before any weight is read."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from finsent.settings import Settings
from model.registry import Registry, RegistryError

FUTURE = "pooling:attention"  # an option of a later release


def folder(tmp_path, name: str, **config) -> object:
    path = tmp_path / "src" / name
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert"} | config))
    return path


@pytest.fixture
def registry(tmp_path):
    return Registry(tmp_path / "models")


def future_version(registry: Registry, tmp_path) -> str:
    """A version as a later release registers it: a feature this code does not know among its requirements."""
    version = registry.register(folder(tmp_path, "future"), {})
    registry.update_metadata(version, requires=[FUTURE, "label_biases"])
    return version


def test_a_new_version_lists_what_its_config_uses_and_only_that(registry, tmp_path):
    plain = registry.register(folder(tmp_path, "plain", finsent_pooling="cls", finsent_temperature=1.0,
                                     finsent_logit_bias=None), {"requires": ["stale"]})
    tuned = registry.register(folder(tmp_path, "tuned", finsent_pooling="mean", finsent_temperature=1.4,
                                     finsent_logit_bias={"negative": 0.3, "neutral": 0.0, "positive": -0.2}), {})
    zero_bias = registry.register(folder(tmp_path, "zero", finsent_logit_bias={"negative": 0.0}), {})
    assert registry.get(plain)["requires"] == []  # a caller's value (a parent's, inherited) is not trusted
    assert registry.get(tuned)["requires"] == ["pooling:mean", "label_biases", "temperature"]
    assert registry.get(zero_bias)["requires"] == []


def test_promote_and_rollback_refuse_an_unscorable_model_before_the_champion_moves(registry, tmp_path):
    old = registry.register(folder(tmp_path, "old"), {})
    registry.promote(old)
    future = future_version(registry, tmp_path)
    with pytest.raises(RegistryError, match=f"{future} not promoted: model {future} requires {FUTURE}, which"):
        registry.promote(future)
    assert registry.champion() == old and registry.get(future)["status"] == "registered"
    assert registry.get(old)["status"] == "champion" and [h["version"] for h in registry.history()] == [old]
    # A rollback to it (a champion before a rollback of the code) is refused the same way.
    registry.update_metadata(future, requires=[])
    registry.promote(future)
    newest = registry.register(folder(tmp_path, "newest"), {})
    registry.promote(newest)
    registry.update_metadata(future, requires=[FUTURE])
    with pytest.raises(RegistryError, match=f"{future} not rolled back to: .*requires {FUTURE}"):
        registry.rollback()
    assert registry.champion() == newest and registry.get(newest)["status"] == "champion"


def test_a_version_without_the_list_loads_and_promotes_as_before(registry, tmp_path):
    from model.requirements import check, check_folder

    version = registry.register(folder(tmp_path, "old", finsent_pooling="mean"), {})
    meta = json.loads((registry.path(version) / "metadata.json").read_text())
    del meta["requires"]  # as a release before the field wrote it
    (registry.path(version) / "metadata.json").write_text(json.dumps(meta))
    check(registry.get(version))
    check_folder(registry.path(version))
    registry.promote(version)
    assert registry.champion() == version


def test_a_list_that_is_not_a_list_of_names_is_a_clear_error(registry, tmp_path):
    from model.requirements import UnscorableModel, check

    with pytest.raises(UnscorableModel, match="'requires' is not a list of feature names: 'pooling:mean'"):
        check({"version": "v1", "requires": "pooling:mean"})


def test_the_scorer_refuses_it_by_name_before_reading_any_weight(registry, tmp_path):
    from model.requirements import UnscorableModel
    from model.scorer import Scorer

    future = future_version(registry, tmp_path)
    for ref in (future, registry.path(future)):  # a version, or its folder given as a path
        with pytest.raises(UnscorableModel, match=f"requires {FUTURE}, which this release does not know"):
            Scorer.load(ref, registry=registry if ref == future else None, device="cpu")


def test_the_workers_scorer_process_refuses_it_before_starting_or_exporting(registry, tmp_path):
    from model.requirements import UnscorableModel
    from model.scorer_process import ScorerProcess

    future = future_version(registry, tmp_path)
    settings = Settings(state_dir=tmp_path, model_dir=registry.root, model_quantize="onnx-int8")
    process = ScorerProcess(settings, serve=lambda *args: pytest.fail("no child should start"))
    with pytest.raises(UnscorableModel, match=FUTURE):
        process.load(future)
    assert process.pid is None and not list(registry.path(future).glob("*.onnx"))


def test_a_retrain_or_a_training_from_it_is_refused(registry, tmp_path):
    from model.requirements import UnscorableModel
    from model.training import _resolve

    future = future_version(registry, tmp_path)
    registry.update_metadata(future, requires=[])
    registry.promote(future)
    registry.update_metadata(future, requires=[FUTURE])  # a champion promoted before a rollback of the code
    for base in ("champion", future, str(registry.path(future))):  # `--base-model`, and a retrain's folder
        with pytest.raises(UnscorableModel, match=FUTURE):
            _resolve(base, registry)


def test_model_list_warns_of_it_and_promote_fails(registry, tmp_path):
    from finsent.cli import app

    registry.promote(registry.register(folder(tmp_path, "old"), {}))
    future = future_version(registry, tmp_path)
    env = {"FINSENT_MODEL_DIR": str(registry.root), "FINSENT_STATE_DIR": str(tmp_path),
           "FINSENT_ELASTICSEARCH_URL": "http://127.0.0.1:9"}
    listed = CliRunner().invoke(app, ["model", "list"], env=env)
    assert listed.exit_code == 0 and future in listed.stdout
    assert f"warning: model {future} requires {FUTURE}, which this release does not know" in listed.stderr
    promoted = CliRunner().invoke(app, ["model", "promote", future, "--no-notify"], env=env)
    assert promoted.exit_code == 1 and f"{future} not promoted" in promoted.output and FUTURE in promoted.output
    assert registry.get("champion")["version"] != future


async def test_a_worker_told_to_swap_to_it_keeps_its_model(registry, tmp_path):
    from model.requirements import UnscorableModel
    from stream.model_holder import ModelHolder
    from stream.runtime import default_scorer_loader

    class Serving:
        version = "serving"

        def score(self, texts):
            return []

    future = future_version(registry, tmp_path)
    load = default_scorer_loader(Settings(state_dir=tmp_path, model_dir=registry.root, worker_scorer="thread"))
    failures: list[BaseException] = []
    holder = ModelHolder(lambda ref: Serving() if ref == "serving" else load(ref),
                         on_load_failure=lambda ref, exc: failures.append(exc))
    starting = ModelHolder(load)
    try:
        await holder.load_initial("serving")
        await holder.request(future)
        assert holder.version == "serving" and [type(exc) for exc in failures] == [UnscorableModel]
        with pytest.raises(UnscorableModel, match=FUTURE):  # and one that starts with it stops, saying why
            await starting.load_initial(future)
    finally:
        holder.close()
        starting.close()
