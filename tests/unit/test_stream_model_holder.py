"""Hot swap: background load, swap between batches, a failed load keeps the old model."""

from __future__ import annotations

import asyncio

from finsent.schemas import Sentiment


class FakeScorer:  # a stand-in for the model: the holder's logic is what is under test
    def __init__(self, version: str) -> None:
        self.version = version

    def score(self, texts):
        return [Sentiment(label="neutral", score=0.0, probabilities={"negative": 0.2, "neutral": 0.6,
                                                                     "positive": 0.2}, confidence=0.6)
                for _ in texts]


def loader(ref: str) -> FakeScorer:
    if ref == "broken":
        raise FileNotFoundError("no such model")
    return FakeScorer(ref)


async def test_swap_between_batches_and_keep_old_on_failure():
    from stream.model_holder import ModelHolder

    swaps, failures = [], []
    holder = ModelHolder(loader, on_swap=lambda s: swaps.append(s.version),
                         on_load_failure=lambda ref, exc: failures.append(ref))
    try:
        await holder.load_initial("v1")
        batch_model = holder.current()
        await holder.request("v2")
        assert batch_model.version == "v1"  # the batch that started keeps its model
        assert holder.current().version == "v2" and holder.version == "v2"
        await holder.request("broken")
        assert holder.current().version == "v2" and failures == ["broken"]
        assert swaps == ["v1", "v2"]
        result = await holder.score(holder.current(), ["a", "b"])
        assert [r.label for r in result] == ["neutral", "neutral"]
    finally:
        holder.close()


async def test_control_messages_select_model_requests():
    from finsent.schemas import ControlMessage, utc_now
    from stream.control import model_request

    def msg(action, path=None):
        return ControlMessage(action=action, model_version="v9", model_path=path, issued_at=utc_now())

    assert model_request(msg("promote")) == "v9"
    assert model_request(msg("drift")) is None
    await asyncio.sleep(0)


def test_a_control_message_loads_the_senders_folder_when_this_host_has_it(tmp_path):
    from finsent.schemas import ControlMessage, utc_now
    from stream.control import model_request

    folder = tmp_path / "outside-the-registry"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    message = ControlMessage(action="rollback", model_version="v20250101-000000-abcd", model_path=str(folder),
                             issued_at=utc_now())
    assert model_request(message) == str(folder)


def test_a_control_message_whose_folder_is_elsewhere_loads_the_version(tmp_path, caplog):
    # The sender's registry is mounted at another path (another host, or `finsent model promote` elsewhere).
    from finsent.schemas import ControlMessage, utc_now
    from stream.control import model_request

    missing = tmp_path / "sender" / "versions" / "v20250101-000000-abcd"
    message = ControlMessage(action="promote", model_version="v20250101-000000-abcd", model_path=str(missing),
                             issued_at=utc_now())
    with caplog.at_level("INFO", logger="stream.control"):
        assert model_request(message) == "v20250101-000000-abcd"
    assert f"no model folder at {missing}" in caplog.text
    missing.mkdir(parents=True)  # a folder without a saved model is no model either
    assert model_request(message) == "v20250101-000000-abcd"


class ClosableScorer(FakeScorer):  # a scorer that holds a resource, as a scorer process does
    def __init__(self, version: str, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(version)
        self.closed = asyncio.Event()
        self.loop = loop

    def close(self) -> None:  # called from the holder's loader thread
        self.loop.call_soon_threadsafe(self.closed.set)


async def test_a_swapped_out_model_is_closed_only_once_no_batch_holds_it():
    from stream.model_holder import ModelHolder

    loop = asyncio.get_running_loop()
    holder = ModelHolder(lambda ref: ClosableScorer(ref, loop))  # loads run in the holder's thread
    try:
        v1 = await holder.load_initial("v1")
        with holder.lease() as batch_model:
            await holder.request("v2")
            await holder.score(batch_model, ["still scoring with v1"])
            await asyncio.sleep(0.05)
            assert batch_model is v1 and not v1.closed.is_set()
        await asyncio.wait_for(v1.closed.wait(), 5)  # the batch is done: v1 goes
        v2 = holder.current()
        await holder.request("v3")  # no batch holds v2: it goes at once
        await asyncio.wait_for(v2.closed.wait(), 5)
        v3 = holder.current()
        with holder.lease(), holder.lease():
            pass
        assert not v3.closed.is_set()  # the current model stays open after its batches
    finally:
        holder.close()
    await asyncio.wait_for(v3.closed.wait(), 5)  # closing the holder closes the current model


async def test_of_two_requests_in_a_row_the_newer_model_wins_and_the_older_is_closed():
    from stream.model_holder import ModelHolder

    loop = asyncio.get_running_loop()
    loaded: dict[str, ClosableScorer] = {}

    def load(ref: str) -> ClosableScorer:
        loaded[ref] = ClosableScorer(ref, loop)
        return loaded[ref]

    swaps = []
    holder = ModelHolder(load, on_swap=lambda scorer: swaps.append(scorer.version))
    try:
        await holder.load_initial("v1")
        await asyncio.gather(holder.request("v2"), holder.request("v3"))
        assert holder.current().version == "v3" and swaps == ["v1", "v3"]  # v2 never scores
        await asyncio.wait_for(asyncio.gather(loaded["v1"].closed.wait(), loaded["v2"].closed.wait()), 5)
        assert not loaded["v3"].closed.is_set()
    finally:
        holder.close()


async def test_models_in_use_or_loading_when_the_holder_closes_are_closed_too():
    import threading

    from stream.model_holder import ModelHolder

    loop = asyncio.get_running_loop()
    started, release = threading.Event(), threading.Event()
    loaded: dict[str, ClosableScorer] = {}

    def load(ref: str) -> ClosableScorer:
        if ref == "slow":
            started.set()
            release.wait(5)
        loaded[ref] = ClosableScorer(ref, loop)
        return loaded[ref]

    holder = ModelHolder(load)
    v1 = await holder.load_initial("v1")
    with holder.lease():  # a batch still scores with v1 when v2 arrives and the worker stops
        await holder.request("v2")
        v2 = holder.current()
        holder.close()
    await asyncio.wait_for(asyncio.gather(v1.closed.wait(), v2.closed.wait()), 5)

    late = ModelHolder(load)
    await late.load_initial("v1")
    loading = late.request("slow")  # still loading when the worker stops
    assert await loop.run_in_executor(None, started.wait, 5)
    late.close()
    release.set()
    await loading
    assert late.current().version == "v1"  # not installed after close
    await asyncio.wait_for(loaded["slow"].closed.wait(), 5)
