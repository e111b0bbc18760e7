"""The stall report's dump shows whole await chains, into async generators and their buffers."""

import asyncio

from stream.task_dump import task_dump


async def _innermost(gate: asyncio.Event) -> None:
    await gate.wait()


async def _middle(gate: asyncio.Event) -> None:
    await _innermost(gate)


async def noack_take(gate: asyncio.Event):  # named like Faust's, to show its buffer locals
    buffer = [1, 2, 3]
    events: list = []
    await gate.wait()
    yield buffer, events


def test_chains_of_tasks_and_generators():
    async def scenario() -> str:
        gate = asyncio.Event()
        task = asyncio.create_task(_middle(gate), name="stuck-agent")
        gen = noack_take(gate)
        pending = asyncio.create_task(gen.__anext__(), name="stuck-take")
        await asyncio.sleep(0.01)
        dump = task_dump()
        gate.set()
        await asyncio.gather(task, pending)
        await gen.aclose()
        return dump

    dump = asyncio.run(scenario())
    assert "task stuck-agent: _middle (" in dump
    assert "→ _innermost (" in dump and "→ wait (locks.py:" in dump
    assert "asyncgen: noack_take (" in dump
    assert "'buffer': 3" in dump and "'events': 0" in dump


def test_the_dump_reads_no_attribute_of_other_objects():
    # The worker has torch loaded; torch.distributed keeps a deprecated alias whose __class__ warns when read.
    import importlib
    import warnings

    importlib.import_module("torch.distributed")

    async def dump() -> str:
        return task_dump()

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "task " in asyncio.run(dump())
