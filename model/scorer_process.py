"""A :class:`model.scorer.Scorer` served by a child process of its own.

Why: in the worker, the scoring thread shares the interpreter lock with the event loop (Faust,
aiokafka, the window aggregation), and each of the forward pass's many small torch calls waits
for it. In a child process the model has an interpreter to itself; the worker sends texts and
gets probabilities back over a pipe (a few kB per batch). See BENCHMARKS.md.

The child loads the model folder the way the settings say and answers one request at a time.
It exits when the pipe closes: on :meth:`ScorerProcess.close`, and when the worker dies without
closing it (kill -9), since the child then reads end-of-file. A child that dies (killed for
memory, say) is started again from the same folder. A batch of several texts it died on is not
sent again: :class:`model.scorer.ScorerCrashed` tells the worker to halve it, which costs no more
than a resend and finds a text that crashes the model with one death per halving, not two. A
single text is sent once more, so only a text that kills two children is blamed.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

from finsent.schemas import Sentiment
from model.scorer import ScorerCrashed, ScorerUnavailable, to_sentiment

log = logging.getLogger(__name__)

# The child is never forked: a fork of a process running threads (Faust, aiokafka, torch's
# pools) can inherit a lock some thread held.
_CONTEXT = multiprocessing.get_context("spawn")


class ScorerProcessError(RuntimeError):
    """The child could not load the model, or could not score a batch of texts."""


class ScorerProcess:
    """``version`` and ``score(texts)`` like a Scorer; the model lives in a child process."""

    def __init__(self, settings: Any, ref: str | Path, *, start_timeout: float = 600.0,
                 on_restart: Callable[[], None] | None = None,
                 serve: Callable[[Any, Any, str], None] | None = None) -> None:
        """``serve`` is the child's main function (:func:`_serve`; tests give it a fake model)."""
        from model.registry import Registry

        self._settings = settings
        # The folder, not the reference: a restart after a promotion loads the same model.
        self.path = Registry(settings.models_path).path(ref)
        self._start_timeout = start_timeout
        self._on_restart = on_restart or (lambda: None)
        self._serve = serve or _serve
        self._lock = threading.Lock()  # one request on the pipe at a time
        self._closed = False
        self._start()

    def _start(self) -> None:
        conn, child_end = _CONTEXT.Pipe()
        process = _CONTEXT.Process(target=self._serve, args=(child_end, self._settings, str(self.path)), daemon=True,
                                   name="finsent-scorer")
        process.start()
        child_end.close()  # the child holds the only other end: its exit closes the pipe
        self._conn, self._process = conn, process
        try:
            status, payload = conn.recv() if conn.poll(self._start_timeout) else ("timeout", None)
        except (EOFError, OSError):
            status, payload = "exited", None
        if status != "ready":
            self._stop()  # joins it, so an exit code is known
            why = {"timeout": f"did not load {self.path} in {self._start_timeout:.0f} s",
                   "exited": f"exited while loading {self.path} (exit code {process.exitcode})"
                   }.get(status, f"could not load {self.path}: {payload}")
            raise ScorerProcessError(f"the scorer process {why}")
        self.version: str = payload["version"]
        self.precision: str = payload["precision"]
        self.pid = process.pid

    def score(self, texts: Sequence[str]) -> list[Sentiment]:
        return [to_sentiment(p) for p in self.predict_proba(texts)]

    def predict_proba(self, texts: Sequence[str]) -> list[list[float]]:
        """Probabilities in LABELS order. A child found dead is started again. Raises
        :class:`ScorerCrashed` when the child dies on a batch of several texts, or twice on a single
        text (sent to a new child once more); :class:`ScorerUnavailable` when none can start; and
        :class:`ScorerProcessError` when the model raised an error on these texts."""
        if not texts:
            return []
        tries = 2 if len(texts) == 1 else 1
        with self._lock:
            if self._closed:
                raise ScorerUnavailable(f"the scorer process of model {self.version} is closed")
            for attempt in range(1, tries + 1):
                if not self._alive():
                    self._restart()
                try:
                    self._conn.send(list(texts))
                    status, payload = self._conn.recv()
                    break
                except (EOFError, OSError) as exc:
                    self._stop()  # so the next request starts a new child, and the exit code is known
                    log.error("the scorer process of model %s exited while scoring (exit code %s)",
                              self.version, self._process.exitcode)
                    if attempt == tries:
                        times = "twice on the same text" if tries == 2 else f"on a batch of {len(texts)} texts"
                        raise ScorerCrashed(f"the scorer process of model {self.version} died {times} "
                                            f"(exit code {self._process.exitcode})") from exc
        if status != "ok":
            raise ScorerProcessError(payload)
        return payload

    def _alive(self) -> bool:
        """Killed between batches, a child is a zombie while its threads (torch's pools) exit, and
        ``is_alive`` says yes until they have: a batch sent then would be blamed for that death."""
        if not self._process.is_alive():
            return False
        try:
            return psutil.Process(self._process.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def _restart(self) -> None:
        self._stop()
        log.warning("starting the scorer process of model %s again (the last one's exit code: %s)", self.version,
                    self._process.exitcode)
        self._on_restart()
        try:
            self._start()
        except ScorerProcessError as exc:
            raise ScorerUnavailable(str(exc)) from exc

    def close(self) -> None:
        """End the child; it exits once the batch it may be scoring is done."""
        with self._lock:
            self._closed = True
            self._stop()

    def _stop(self, timeout: float = 10.0) -> None:
        self._conn.close()
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout)


def _serve(conn: Any, settings: Any, path: str) -> None:
    """The child: load, say so, then answer each list of texts with their probabilities."""
    # Ctrl-C in a terminal, and a service manager's SIGTERM, reach the whole process group: the
    # worker decides when scoring ends (its batch in flight is scored), and closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s finsent-scorer %(name)s: %(message)s")
    from model.scorer import Scorer

    try:
        scorer = Scorer.from_settings(settings, path)
    except Exception as exc:  # noqa: BLE001 - reported to the worker, which keeps its old model
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", {"version": scorer.version, "precision": scorer.precision}))
    while True:
        try:
            texts = conn.recv()
        except (EOFError, OSError):
            return  # the worker closed the pipe, or died
        try:
            reply: tuple[str, Any] = ("ok", scorer.predict_proba(texts))
        except Exception as exc:  # noqa: BLE001 - the worker finds the text that broke the model
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except OSError:
            return
