"""SIGINT and SIGTERM for a command whose work runs in other threads (a receiver, a scheduler).

Python runs a signal handler in the main thread, and only when that thread executes bytecode. A main
thread blocked in ``threading.Event().wait()`` is not woken by a signal the kernel handed to one of the
other threads, so a handler that sets the event never runs: `finsent alerts receive`, stopped just after
it started, hung until ``finsent down`` killed it 30 s later (tests/unit/test_stop_signals.py). Here the
handler only records the signal and the main thread sleeps in short steps, so a signal is acted on
within ``poll_seconds`` whichever thread received it.
"""

from __future__ import annotations

import signal
import time


class StopSignals:
    """Records SIGINT and SIGTERM from the moment it is made; :meth:`wait` returns once one came."""

    def __init__(self) -> None:
        self.received: list[int] = []
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda signum, _frame: self.received.append(signum))

    def wait(self, poll_seconds: float = 0.25) -> int:
        while not self.received:
            time.sleep(poll_seconds)
        return self.received[0]
