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
import threading
import time

STOP = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Records SIGINT and SIGTERM from the moment it is made; :meth:`wait` returns once one came.

    The first signal puts the previous handlers back, so a second one stops the process at once (a Ctrl-C
    pressed again while a shutdown waits on a running job). ``then`` is set too, for a loop that polls an
    event; the handler never runs twice, so it cannot block on that event's lock while the main thread holds it.
    """

    def __init__(self, then: threading.Event | None = None) -> None:
        self.received: list[int] = []
        self._then = then
        self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP}

    def _handle(self, signum: int, _frame) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self.received.append(signum)
        if self._then is not None:
            self._then.set()

    def wait(self, poll_seconds: float = 0.25) -> int:
        while not self.received:
            time.sleep(poll_seconds)
        return self.received[0]
