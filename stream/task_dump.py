"""Where every asyncio task and async generator of the process is waiting.

``Task.print_stack`` shows one frame of a suspended task; a stall report needs the whole
await chain, down into Faust's stream iterators and their buffers. Found the cause of the
kill -9 stall (RELIABILITY.md): queues empty, buffers empty, the fetcher idle.
"""

from __future__ import annotations

import asyncio
import gc
import types
from typing import Any

# Locals of Faust's ``Stream.noack_take`` worth showing (sizes for the lists).
_BUFFER_LOCALS = ("buffer", "events", "buffer_consuming", "buffer_full", "buffer_consumed")


def _await_chain(step: Any) -> str:
    chain = []
    while step is not None:
        frame = getattr(step, "cr_frame", None) or getattr(step, "ag_frame", None) or getattr(step, "gi_frame", None)
        if frame is None:
            chain.append(f"waits on {type(step).__name__}")
            break
        chain.append(f"{frame.f_code.co_name} ({frame.f_code.co_filename.rsplit('/', 2)[-1]}:{frame.f_lineno})")
        step = getattr(step, "cr_await", None) or getattr(step, "ag_await", None) or getattr(step, "gi_yieldfrom", None)
    return " → ".join(chain)


def _generator_state(gen: types.AsyncGeneratorType) -> dict[str, Any]:
    local = gen.ag_frame.f_locals
    state = {k: (len(v) if isinstance(v, list) else v) for k, v in local.items() if k in _BUFFER_LOCALS}
    channel = getattr(local.get("self"), "channel", None)
    if channel is not None and getattr(channel, "queue", None) is not None:
        state["channel_queue"] = channel.queue.qsize()
    return state


def task_dump() -> str:
    """One line per task and per suspended async generator, sorted."""
    lines = [f"  task {task.get_name()}: {_await_chain(task.get_coro())}" for task in asyncio.all_tasks()]
    for gen in gc.get_objects():
        # type(), not isinstance(): isinstance reads __class__, and some lazy module proxies (torch.distributed's
        # reduce_op) warn when it is read. Async generators cannot be subclassed, so the test is exact.
        if type(gen) is types.AsyncGeneratorType and gen.ag_frame is not None:
            state = _generator_state(gen)
            lines.append(f"  asyncgen: {_await_chain(gen)}" + (f" {state}" if state else ""))
    return "\n".join(sorted(lines))
