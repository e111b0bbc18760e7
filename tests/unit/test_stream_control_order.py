"""Control messages in the other order than their moves: a worker applies the newest move of a registry only
(stream.control.MoveOrder), starting from the champion it loaded at start."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry

from finsent.schemas import ControlMessage, utc_now
from finsent.settings import Settings
from model.registry import Registry
from stream.control import ControlListener, MoveOrder
from stream.runtime import WorkerRuntime

REGISTRY = "0123456789abcdef"


def message(version: str, sequence: int | None = None, *, action: str = "promote", registry: str | None = REGISTRY,
            path: str | None = None) -> bytes:
    return ControlMessage(action=action, model_version=version, model_path=path, issued_at=utc_now(),
                          sequence=sequence, registry_id=registry if sequence else None).to_json()


def listener(order: MoveOrder | None = None) -> tuple[ControlListener, list[str]]:
    asked: list[str] = []
    return ControlListener(Settings(), lambda ref, msg: asked.append(ref), order), asked


def test_a_move_written_after_a_later_one_is_ignored(caplog):
    control, asked = listener()
    with caplog.at_level(logging.INFO, logger="stream.control"):
        for offset, value in enumerate([message("v3", 3), message("v2", 2), message("v3", 3)]):
            control.handle(value, offset)
    assert asked == ["v3"]  # the broker's order was 3, 2: the registry names v3
    ignored = [r for r in caplog.records if r.getMessage().startswith("control: ignoring")]
    assert len(ignored) == 2 and ignored[0].levelno == logging.INFO
    assert "promote of v2: move 2 of registry 0123456789abcdef is not newer than move 3" in ignored[0].getMessage()


def test_a_worker_starts_from_the_move_of_the_champion_it_loaded():
    order = MoveOrder()
    order.start_at(REGISTRY, 5)
    control, asked = listener(order)
    for offset, value in enumerate([message("v4", 4, action="rollback"), message("v5", 5), message("v6", 6)]):
        control.handle(value, offset)
    assert asked == ["v6"]


def test_messages_without_a_sequence_and_of_other_registries_are_applied_as_they_come():
    order = MoveOrder()
    order.start_at(REGISTRY, 9)
    control, asked = listener(order)
    values = [message("old-sender"), message("v1", 1, registry="fedcba9876543210"), message("v2", 2),
              message("drifted", 10, action="drift"), message("v10", 10)]
    for offset, value in enumerate(values):
        control.handle(value, offset)
    # an older sender's message, a copy with its own numbers; drift is no request, and moves no number
    assert asked == ["old-sender", "v1", "v10"]
    assert order.newest(REGISTRY) == 10 and order.newest("fedcba9876543210") == 1


def test_a_move_whose_load_failed_may_be_asked_for_again():
    order = MoveOrder()
    order.start_at(REGISTRY, 3)
    control, asked = listener(order)
    control.handle(message("v5", 5), 0)
    order.done(ControlMessage.model_validate_json(message("v5", 5)), loaded=False)
    control.handle(message("v5", 5), 1)  # sent again: `finsent model promote` of the champion
    order.done(ControlMessage.model_validate_json(message("v5", 5)), loaded=True)
    control.handle(message("v4", 4), 2)
    assert asked == ["v5", "v5"] and order.newest(REGISTRY) == 5


def test_a_failed_load_lets_the_move_before_it_through():
    order = MoveOrder()
    order.start_at(REGISTRY, 3)
    control, asked = listener(order)
    control.handle(message("v5", 5), 0)
    order.done(ControlMessage.model_validate_json(message("v5", 5)), loaded=False)
    control.handle(message("v4", 4), 1)  # late, but newer than the model the worker scores with
    control.handle(message("v3", 3), 2)
    assert asked == ["v5", "v4"]


# --- the worker: the registry's moves, the holder's model ------------------------------------------------------


class FakeScorer:
    def __init__(self, version: str) -> None:
        self.version = version

    def score(self, texts):
        raise AssertionError("not scored here")


def _registry(tmp_path: Path, *names: str) -> tuple[Registry, list[str]]:
    registry = Registry(tmp_path / "models")
    versions = []
    for name in names:
        folder = tmp_path / "src" / name
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"name": name}))
        versions.append(registry.register(folder, {"labels": ["negative", "neutral", "positive"]}))
    return registry, versions


def _runtime(tmp_path: Path, registry: Registry) -> WorkerRuntime:
    def load(ref: str) -> FakeScorer:  # a folder (the sender's), a version or champion, as the real loader takes
        return FakeScorer(registry.path(ref).name)

    return WorkerRuntime(Settings(state_dir=tmp_path, model_dir=registry.root, topic_prefix="unitorder"), load,
                         "champion", CollectorRegistry())


def _announce(registry: Registry, moved) -> bytes:
    return ControlMessage(action="promote", model_version=moved.champion, model_path=str(registry.path(moved.champion)),
                          issued_at=utc_now(), **moved.control_fields()).to_json()


async def _settle(runtime: WorkerRuntime) -> None:
    while runtime.holder._loads:
        await asyncio.gather(*runtime.holder._loads)
    await asyncio.sleep(0)  # the done callbacks


async def test_a_worker_ends_on_the_champion_the_registry_names_whatever_the_brokers_order(tmp_path):
    registry, (v1, v2, v3) = _registry(tmp_path, "one", "two", "three")
    registry.promote(v1)
    runtime = _runtime(tmp_path, registry)
    try:
        await runtime.holder.load_initial(runtime._initial_ref())
        assert runtime.holder.version == v1
        by_hand = _announce(registry, registry.promote(v2))  # `finsent model promote` on one host
        by_retrain = _announce(registry, registry.promote(v3))  # a retrain on another, a moment later
        runtime.control.handle(by_retrain, 0)  # ... whose message the broker writes first
        await _settle(runtime)
        runtime.control.handle(by_hand, 1)
        await _settle(runtime)
        assert registry.champion() == v3 and runtime.holder.version == v3
    finally:
        runtime.holder.close()


async def test_a_worker_that_started_after_a_move_ignores_the_late_message_of_an_older_one(tmp_path):
    registry, (v1, v2) = _registry(tmp_path, "one", "two")
    late = _announce(registry, registry.promote(v1))
    registry.promote(v2)
    runtime = _runtime(tmp_path, registry)
    try:
        assert runtime._initial_ref() == v2  # the version, read with the number of its move
        await runtime.holder.load_initial(v2)
        runtime.control.handle(late, 0)
        await _settle(runtime)
        assert runtime.holder.version == v2
    finally:
        runtime.holder.close()


async def test_a_failed_load_of_a_move_can_be_sent_again(tmp_path):
    registry, (v1, v2) = _registry(tmp_path, "one", "two")
    registry.promote(v1)
    runtime = _runtime(tmp_path, registry)
    broken = [True]

    def load(ref: str) -> FakeScorer:
        if broken[0] and registry.path(ref).name == v2:
            raise OSError("the registry's file system hiccupped")
        return FakeScorer(registry.path(ref).name)

    runtime.holder.loader = load
    try:
        await runtime.holder.load_initial(runtime._initial_ref())
        promoted = _announce(registry, registry.promote(v2))
        runtime.control.handle(promoted, 0)
        await _settle(runtime)
        assert runtime.holder.version == v1
        broken[0] = False
        again = _announce(registry, registry.promote(v2))  # the champion again: the same move's number
        assert orjson.loads(again)["sequence"] == orjson.loads(promoted)["sequence"]
        runtime.control.handle(again, 1)
        await _settle(runtime)
        assert runtime.holder.version == v2
    finally:
        runtime.holder.close()


def test_finsent_model_promote_and_rollback_announce_the_number_of_their_move(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import stream.control
    from finsent.cli import app

    registry, (v1, v2) = _registry(tmp_path, "one", "two")
    sent: list[ControlMessage] = []
    monkeypatch.setattr(stream.control, "publish", lambda settings, msg: sent.append(msg))
    monkeypatch.setenv("FINSENT_MODEL_DIR", str(registry.root))
    monkeypatch.setenv("FINSENT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("FINSENT_MODEL_QUANTIZE", "none")
    monkeypatch.setenv("FINSENT_ELASTICSEARCH_URL", "http://127.0.0.1:9")  # no mirror
    for args in (["promote", v1], ["promote", v2], ["rollback"], ["promote", v1]):
        result = CliRunner().invoke(app, ["model", *args])
        assert result.exit_code == 0, result.output
    registry_id = registry.pointer().registry_id
    assert [(m.action, m.model_version, m.sequence) for m in sent] == [
        ("promote", v1, 1), ("promote", v2, 2), ("rollback", v1, 3), ("promote", v1, 3)]  # the last: told again
    assert {m.registry_id for m in sent} == {registry_id} and registry_id is not None


async def test_a_move_whose_load_a_newer_request_superseded_counts_as_not_loaded(tmp_path):
    # A move's load dropped for a newer request (here one without a number: an older sender, a model outside the
    # registry) whose load then failed: the worker scores with the model from before both, and the move, sent again
    # (`finsent model promote` of the champion), is loaded; it once counted as loaded and was ignored.
    registry, (v1, v2) = _registry(tmp_path, "one", "two")
    registry.promote(v1)
    runtime = _runtime(tmp_path, registry)
    try:
        await runtime.holder.load_initial(runtime._initial_ref())
        promoted = _announce(registry, registry.promote(v2))
        runtime.control.handle(promoted, 0)
        runtime.control.handle(message("gone-elsewhere"), 1)  # asked for before v2 has loaded
        await _settle(runtime)
        assert runtime.holder.version == v1 and runtime.metrics.model_load_failures._value.get() == 1
        again = _announce(registry, registry.promote(v2))
        assert orjson.loads(again)["sequence"] == orjson.loads(promoted)["sequence"]
        runtime.control.handle(again, 2)
        await _settle(runtime)
        assert runtime.holder.version == v2
    finally:
        runtime.holder.close()
