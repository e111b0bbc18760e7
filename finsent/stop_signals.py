"""SIGINT and SIGTERM for a command whose work runs in other threads (a receiver, a scheduler).

``threading.Event().wait()`` in the main thread with a handler that sets the event can miss a signal:
one that lands after the interpreter's last check and before the thread blocks wakes nothing, and
``finsent down`` then waits its 30 s and kills the process (`finsent alerts receive` did, when stopped
right after it started). The handler here only records the signal, and the wait polls, so a signal is
acted on within ``poll_seconds`` whichever thread the kernel delivered it to.
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
