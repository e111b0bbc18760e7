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
    assert model_request(msg("rollback", "/m/v8")) == "/m/v8"
    assert model_request(msg("drift")) is None
    await asyncio.sleep(0)
