"""SIGINT and SIGTERM for a command whose work runs in other threads (a receiver, a scheduler).

Python runs a signal handler in the main thread, and only when that thread executes bytecode. A main
thread blocked in ``threading.Event().wait()`` is not woken by a signal the kernel handed to one of the
other threads, so a handler that sets the event never runs: `finsent alerts receive`, stopped just after
it started, hung until ``finsent down`` killed it 30 s later (tests/unit/test_stop_signals.py). Here the
handler only records the signal and the main thread sleeps in short steps, so a signal is acted on
within ``poll_seconds`` whichever thread received it.

A stop can also come while a command is still starting: a Kafka client's first connection blocks until a broker
answers or its bootstrap times out (30 s), and a command stopped then acted on the stop only after that, with the
start-up's error and traceback (`finsent labels serve` and `dashboards serve` ~24 s after a SIGTERM, `alerts run` and
`retrain scheduler` the same). :func:`start_unless_stopped` and :func:`in_daemon_thread` run such a start in a daemon
thread that the stop leaves behind: the process exits at once (:class:`StoppedWhileStarting`), with nothing of its
work begun.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

STOP = (signal.SIGINT, signal.SIGTERM)
T = TypeVar("T")


class StoppedWhileStarting(Exception):
    """A stop signal came before the command's start-up (its connection to Kafka, say) was done."""


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
        self.restore()
        self.received.append(signum)
        if self._then is not None:
            self._then.set()

    def restore(self) -> None:
        """Put the previous handlers back: at the first signal, and when a command run in the process (a test's)
        ends without one (``ctx.call_on_close``), which would otherwise leave its handler to swallow the next."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def wait(self, poll_seconds: float = 0.25) -> int:
        while not self.received:
            time.sleep(poll_seconds)
        return self.received[0]


def start_unless_stopped(start: Callable[[], T], signals: StopSignals, poll_seconds: float = 0.25) -> T:
    """``start()``'s result (or its exception), or :class:`StoppedWhileStarting` as soon as ``signals`` received a
    stop while it still runs; it runs in a daemon thread, which the caller's exit then leaves behind."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = start()
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name="starting", daemon=True)
    thread.start()
    while thread.is_alive():
        if signals.received:
            raise StoppedWhileStarting(f"stopped by {signal.Signals(signals.received[0]).name} while starting")
        thread.join(poll_seconds)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


async def in_daemon_thread(call: Callable[[], T]) -> T:
    """``await`` of ``call()`` run in a daemon thread: unlike ``run_in_executor``, whose default executor
    ``asyncio.run`` waits for at exit, a stop that cancels the await does not wait for ``call`` to return."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(value: Any, error: BaseException | None) -> None:
        if not future.done():  # cancelled by a stop
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)

    def target() -> None:
        value, error = None, None
        try:
            value = call()
        except BaseException as exc:  # noqa: BLE001 - raised again in the awaiting task
            error = exc
        try:
            loop.call_soon_threadsafe(settle, value, error)
        except RuntimeError:  # the loop closed meanwhile: nobody awaits it any more
            pass

    threading.Thread(target=target, name="starting", daemon=True).start()
    return await future


def install_stop_handlers(stop: asyncio.Event, recorded: StopSignals | None = None, *,
                          second_ends: bool = False) -> None:
    """SIGINT and SIGTERM set ``stop`` from now on; so does one that ``recorded`` (the command's handler until the
    event loop ran) received already. A signal the loop handles is added to ``recorded.received`` too, so a
    one-shot command can say which one stopped it and exit with its number (:func:`stopped_status`). With
    ``second_ends`` (one-shot commands, as :class:`StopSignals` does), the first signal gives the signals back to
    their default action, so a second one ends the process at once: a poll stuck on a slow feed or a Kafka gone
    would otherwise hold it until SIGKILL."""
    loop = asyncio.get_running_loop()

    def stop_by(signum: int) -> None:
        if recorded is not None:
            recorded.received.append(signum)
        if second_ends:
            for sig in STOP:
                loop.remove_signal_handler(sig)
        stop.set()

    for sig in STOP:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop_by, sig)
    if recorded is not None and recorded.received:
        stop.set()


def stopped_status(signals: StopSignals) -> int:
    """The exit status of a one-shot command (a replay, ``--once``) that a signal stopped before its end: 128 + the
    signal's number (130 for Ctrl-C, 143 for SIGTERM), the status a shell reports for a process the signal killed, so
    a script still sees that the work is not all done; long-running commands exit 0 on a stop, their normal end."""
    return 128 + int(signals.received[0])


def signal_name(signals: StopSignals) -> str:
    return signal.Signals(signals.received[0]).name
