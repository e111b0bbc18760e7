"""Models served by a child process of their own: :class:`ScorerProcess` is the child, and each
:class:`HostedModel` loaded into it scores like a :class:`model.scorer.Scorer`.

Why a child: in the worker, the scoring thread shares the interpreter lock with the event loop
(Faust, aiokafka, the window aggregation), and each of the forward pass's many small torch calls
waits for it. In a child process the model has an interpreter to itself; the worker sends texts
and gets probabilities back over a pipe (a few kB per batch). See BENCHMARKS.md.

Why one child for every model: a hot swap loads the new model beside the old one in the same
child. A second child would hold a second copy of torch (about 800 MB) for the length of the swap;
a second model in the same child costs its weights (about 60 MB), and it loads in a fraction of
a second, since the child has torch imported already. Requests go one at a time, so scoring
waits while a model loads. The ONNX export a new model needs first (``onnx-int8``, seconds) is
built by the retrain or the ``finsent model promote`` that promotes it; for one still missing (a
model promoted on another machine, say), a one-off process builds it before the load. If that process fails, the load
fails and the worker keeps its model: exported in this child instead, it held up every batch for as long again.

The child answers one request at a time, and exits when the pipe closes: when its last model
is closed, when the worker exits without closing it (the pipe is closed at interpreter exit), and
when the worker dies (kill -9), since the child then reads end-of-file. A child that dies (killed
for memory, say) is started again and loads the same folders. A batch of several texts it died on
is not sent again: :class:`model.scorer.ScorerCrashed` tells the worker to halve it, which costs
no more than a resend and finds a text that crashes the model with one death per halving, not
two. A single text is sent once more, so only a text that kills two children is blamed.

A child that goes silent on a batch (a GPU kernel that never returns, say) is taken for dead the
same way: killed, started again, and the batch reported as hung (the worker then scores its texts
one by one, since each halving would wait out the silence again). Without that limit a hung child
would hold the worker, and its shutdown, for good. The child reports each forward pass it
finishes (a heartbeat), so the limit bounds one pass, not the batch: :func:`longest_silence`, the
setting ``worker_score_timeout`` plus an allowance for each token one pass may hold. A batch of 64
long documents (2,048 windows) is then found hung in the time of a headline batch, not in ten
minutes.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import multiprocessing.util
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

from finsent.schemas import Sentiment
from model.scorer import MAX_CHUNKS, ScorerCrashed, ScorerUnavailable, to_sentiment

log = logging.getLogger(__name__)

# Seconds a forward pass may take, on top of worker_score_timeout, per token of the windows it may hold.
# The worker's largest batch, 64 texts of 32 windows of 128 tokens, took 54 s on two threads of the
# AVX2-only EPYC (0.2 ms a token, MiniLM in fp32): ten times that leaves room for one thread and a
# slower CPU. A base-size model costs several times MiniLM's; there, raise worker_score_timeout.
SECONDS_PER_TOKEN = 0.002

# The child's word that it finished a forward pass of a batch; the answer comes after the last.
PROGRESS = "progress"


def longest_silence(texts: Sequence[str], floor: float, window: int, batch_size: int) -> float:
    """Seconds the child may go without a word while it scores ``texts``: ``floor`` (which also
    covers tokenising the batch and a GPU's first-call set-up), plus :data:`SECONDS_PER_TOKEN` for each
    token of the largest forward pass, ``batch_size`` windows of ``window`` tokens or the windows the
    texts may need, if fewer. The count assumes a token per byte of UTF-8, which no tokenizer in use
    exceeds (MiniLM's word pieces split a Hangul syllable, three bytes, into at most three; byte-level
    BPE takes at least a byte a token), two special tokens a window, and no more than
    :data:`model.scorer.MAX_CHUNKS` windows a text, as the scorer reads."""
    room = max(1, window - 2)
    windows = sum(min(MAX_CHUNKS, max(1, -(-len(text.encode("utf-8", "replace")) // room))) for text in texts)
    return floor + SECONDS_PER_TOKEN * window * min(windows, batch_size)


# The child is never forked: a fork of a process running threads (Faust, aiokafka, torch's
# pools) can inherit a lock some thread held.
_CONTEXT = multiprocessing.get_context("spawn")


class ScorerProcessError(RuntimeError):
    """The child could not load the model, or could not score a batch of texts."""


class _ChildDied(Exception):
    """The child exited while it had a request."""


class ScorerProcess:
    """The child process, started on the first :meth:`load` and ended when its last model is closed."""

    def __init__(self, settings: Any, *, start_timeout: float = 600.0, on_restart: Callable[[], None] | None = None,
                 serve: Callable[[Any, Any], None] | None = None) -> None:
        """``serve`` is the child's main function (:func:`_serve`; tests give it a fake model)."""
        self._settings = settings
        self._start_timeout = start_timeout
        self._on_restart = on_restart or (lambda: None)
        self._serve = serve or _serve
        self._lock = threading.Lock()  # one request on the pipe at a time
        self._ids = itertools.count(1)
        self._models: dict[int, HostedModel] = {}  # the models loaded, by id: a new child loads them again
        self._process: Any = None
        self._conn: Any = None
        self._closer: Any = None  # closes self._conn, at the latest when the interpreter exits

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def folders(self) -> list[Path]:
        """The models loaded, oldest first: what a new child loads again."""
        with self._lock:
            return [model.path for model in self._models.values()]

    def load(self, ref: str | Path) -> HostedModel:
        """Load a model (``champion``, a version or a folder) into the child, starting it if need be.
        Raises :class:`ScorerProcessError` when the model cannot load; the models already loaded
        stay."""
        from model.onnx_runtime import export_missing
        from model.registry import Registry, VersionGone, VersionHold
        from model.requirements import check_folder

        # The folder, not the reference: a restart after a promotion loads the same model.
        path = Registry(self._settings.models_path).path(ref)
        check_folder(path)  # refused here, before an ONNX export of it or a word to the child
        try:
            hold = VersionHold(path)  # a prune leaves it while this process may load it again
        except VersionGone as exc:  # a prune or discard deleted it meanwhile
            raise ScorerProcessError(str(exc)) from None
        except FileNotFoundError:
            raise ScorerProcessError(f"{path} is not a model folder (no config.json)") from None
        try:
            if self._models and export_missing(self._settings.model_quantize, path):
                # Seconds of work that would stall scoring in the child. A hot swap's: the models it would join are
                # all closed only when the worker stops, which then kills the export and ends the load (its export
                # child ignores Ctrl-C and SIGTERM, and a scorer process started now would serve nothing). An export
                # that fails fails the load: the worker keeps its model.
                _export_apart(path, self._start_timeout, should_stop=lambda: not self._models)
                if not self._models:
                    raise ScorerProcessError(f"{path} not loaded: this process's models were closed while it was "
                                             "exported (the worker stops)")
            with self._lock:
                model_id = next(self._ids)
                info = self._load_started(model_id, path)
                model = self._models[model_id] = HostedModel(self, model_id, path, info["version"],
                                                             info["precision"], info["max_length"], hold)
            return model
        except BaseException:
            hold.release()
            raise

    def _load_started(self, model_id: int, path: Path) -> dict[str, str]:
        """Load into the child, starting it (again) if need be."""
        try:
            if not self._alive():
                if self._models:
                    self._restart()  # it died between batches
                else:
                    self._start()
            return self._load_into_child(model_id, path)
        except (ScorerProcessError, ScorerUnavailable):
            if not self._models:
                self._stop()  # no model left to serve: no idle child left behind
            raise

    def score(self, model: HostedModel, texts: Sequence[str]) -> list[list[float]]:
        tries = 2 if len(texts) == 1 else 1
        with self._lock:
            if model.model_id not in self._models:
                raise ScorerUnavailable(f"model {model.version} is closed")
            limit = longest_silence(texts, self._settings.worker_score_timeout, model.max_length,
                                    self._settings.model_batch_size)  # the windows of a pass (Scorer.from_settings)
            for attempt in range(1, tries + 1):
                if not self._alive():
                    self._restart()
                try:
                    status, payload = self._request(("score", model.model_id, list(texts)), limit)
                    break
                except TimeoutError:
                    self._stop(grace=0)  # it may never read the closed pipe
                    log.error("the scorer process of model %s went %g s without progress: killed", model.version,
                              limit)
                    failure, hung = f"went {limit:g} s without progress", True
                except _ChildDied:
                    log.error("the scorer process of model %s exited while scoring (exit code %s)", model.version,
                              self._process.exitcode)
                    failure, hung = f"died (exit code {self._process.exitcode})", False
                if attempt == tries:
                    times = "twice on the same text" if tries == 2 else f"on a batch of {len(texts)} texts"
                    raise ScorerCrashed(f"the scorer process of model {model.version} {failure} {times}", hung=hung)
        if status != "ok":
            raise ScorerProcessError(payload)
        return payload

    def renew(self) -> None:
        """End the child and start a new one with the same models. For a child that answers but
        fails on a known-good text too: an error can leave a process unable to score (a CUDA error
        poisons its GPU context), and only a new process is rid of it. Raises
        :class:`ScorerUnavailable` when the new one cannot start."""
        with self._lock:
            if self._models:
                self._restart()

    def drop(self, model: HostedModel) -> None:
        """Unload a model; the child ends with its last one."""
        with self._lock:
            if self._models.pop(model.model_id, None) is None:
                return
            model.hold.release()
            if not self._models:
                self._stop()
            elif self._alive():
                try:
                    self._request(("drop", model.model_id))
                except _ChildDied:
                    pass  # the next request starts a new child, without this model

    def _start(self) -> None:
        """A new child, with every model this process holds loaded again."""
        conn, child_end = _CONTEXT.Pipe()
        process = _CONTEXT.Process(target=self._serve, args=(child_end, self._settings), daemon=True,
                                   name="finsent-scorer")
        process.start()
        child_end.close()  # the child holds the only other end: its exit closes the pipe
        # A worker that exits with a model still loaded (no close) must not wait for the child
        # forever: at exit multiprocessing SIGTERMs its daemonic children, which the child ignores,
        # and joins them with no timeout. Finalizers of priority >= 0 run before that; closing the
        # pipe there lets the child read end-of-file, finish, and exit.
        self._closer = multiprocessing.util.Finalize(None, conn.close, exitpriority=0)
        self._conn, self._process = conn, process
        try:
            for model_id, model in self._models.items():
                self._load_into_child(model_id, model.path)
        except ScorerProcessError:
            self._stop()  # a child without all its models would fail their batches: the next request tries again
            raise

    def _load_into_child(self, model_id: int, path: Path) -> dict[str, str]:
        try:
            status, payload = self._request(("load", model_id, str(path)), timeout=self._start_timeout)
        except TimeoutError:
            self._stop(grace=0)  # it may never read the closed pipe
            raise ScorerProcessError(f"the scorer process did not load {path} in {self._start_timeout:g} s")
        except _ChildDied:
            raise ScorerProcessError(f"the scorer process exited while loading {path} "
                                     f"(exit code {self._process.exitcode})") from None
        if status != "ok":
            raise ScorerProcessError(f"the scorer process could not load {path}: {payload}")
        return payload

    def _request(self, message: tuple, timeout: float | None = None) -> tuple[str, Any]:
        """Send one request and wait for its reply, at most ``timeout`` seconds after the child's last
        word (its reply, or a :data:`PROGRESS` heartbeat; then TimeoutError). A child that dies on it
        is stopped (joined, so its exit code is known), and the next request starts a new one."""
        try:
            self._conn.send(message)
            while timeout is None or self._conn.poll(timeout):
                reply = self._conn.recv()
                if reply[0] != PROGRESS:
                    return reply
        except (EOFError, OSError) as exc:
            self._stop()
            raise _ChildDied from exc
        raise TimeoutError  # outside the try: TimeoutError is an OSError, not a death

    def _alive(self) -> bool:
        """Killed between batches, a child is a zombie while its threads (torch's pools) exit, and
        ``is_alive`` says yes until they have: a batch sent then would be blamed for that death."""
        if self._process is None or not self._process.is_alive():
            return False
        try:
            return psutil.Process(self._process.pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    def _restart(self) -> None:
        self._stop()  # joins it, so its exit code is known
        log.warning("starting the scorer process of model %s again (the last one's exit code: %s)",
                    ", ".join(model.version for model in self._models.values()), self._process.exitcode)
        self._on_restart()
        try:
            self._start()
        except ScorerProcessError as exc:
            raise ScorerUnavailable(str(exc)) from exc

    def close(self) -> None:
        """End the child, whatever it holds; it exits once the batch it may be scoring is done."""
        with self._lock:
            for model in self._models.values():
                model.hold.release()
            self._models.clear()
            self._stop()

    def _stop(self, grace: float = 10.0) -> None:
        """Close the pipe, give the child ``grace`` seconds to exit, then kill it."""
        if self._process is None:
            return
        self._closer()  # closes the pipe, once
        self._process.join(grace)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(10.0)


class HostedModel:
    """A model in a :class:`ScorerProcess`: ``version`` and ``score(texts)`` like a Scorer."""

    def __init__(self, process: ScorerProcess, model_id: int, path: Path, version: str, precision: str,
                 max_length: int, hold: Any) -> None:
        self.process = process
        self.model_id = model_id
        self.path = path
        self.version = version
        self.precision = precision
        self.max_length = max_length  # tokens per window
        self.hold = hold  # model.registry.VersionHold, released when the model is closed

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def score(self, texts: Sequence[str]) -> list[Sentiment]:
        return [to_sentiment(p) for p in self.predict_proba(texts)]

    def predict_proba(self, texts: Sequence[str]) -> list[list[float]]:
        """Probabilities in LABELS order. A child found dead is started again. Raises
        :class:`ScorerCrashed` when the child dies on a batch of several texts, or twice on a single
        text (sent to a new child once more); :class:`ScorerUnavailable` when none can start, or this
        model is closed; and :class:`ScorerProcessError` when the model raised an error on these texts."""
        if not texts:
            return []
        return self.process.score(self, texts)

    def renew(self) -> None:
        """Score from a new child from now on (:meth:`ScorerProcess.renew`)."""
        self.process.renew()

    def close(self) -> None:
        self.process.drop(self)


def _export_apart(path: Path, timeout: float, should_stop: Callable[[], bool] | None = None) -> None:
    """Build a model folder's ONNX cache (:mod:`model.onnx_runtime`) in a one-off process, so the
    scorer process, which answers one request at a time, loads it at once. One that fails or takes
    over ``timeout`` seconds fails the load (:class:`ScorerProcessError`): exported again in the scorer process, it
    held the lock that every batch and the worker's stop wait for, as long again (up to the same limit), and an
    export that raised failed the same way there. One is killed as soon as ``should_stop()`` says so."""
    from model.onnx_runtime import ExportFailed, ExportStopped, ExportTimedOut, export_apart

    log.info("exporting %s to ONNX before loading it", path)
    try:
        export_apart(path, timeout=timeout, should_stop=should_stop)
    except (ExportTimedOut, ExportFailed) as exc:
        raise ScorerProcessError(
            f"{path} not loaded: {exc}; not exported in the scorer process, where scoring would wait for it "
            "(`finsent model promote VERSION` builds the export and tells the workers again; a worker that starts "
            "exports its model before it scores)") from None
    except ExportStopped as exc:  # the worker stops: the load ends without it (ScorerProcess.load)
        log.info("%s", exc)


def _serve(conn: Any, settings: Any) -> None:
    """The child: answer each request (load a folder, score texts with a model, drop a model)."""
    # Ctrl-C in a terminal, and a service manager's SIGTERM, reach the whole process group: the
    # worker decides when scoring ends (its batch in flight is scored), and closes the pipe.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s finsent-scorer %(name)s: %(message)s")
    from model.scorer import Scorer

    models: dict[int, Scorer] = {}
    while True:
        try:
            action, model_id, *args = conn.recv()
        except (EOFError, OSError):
            return  # the worker closed the pipe, or died
        try:
            if action == "load":
                scorer = models[model_id] = Scorer.from_settings(settings, args[0])
                reply: tuple[str, Any] = ("ok", {"version": scorer.version, "precision": scorer.precision,
                                                 "max_length": scorer.max_length})
            elif action == "score":
                reply = ("ok", models[model_id].predict_proba(args[0], on_batch=lambda: conn.send((PROGRESS, None))))
            elif action == "drop":
                models.pop(model_id, None)
                reply = ("ok", None)
            else:
                reply = ("error", f"unknown request {action!r}")
        except Exception as exc:  # noqa: BLE001 - a load error keeps the other models; a scoring error
            # lets the worker find the text that broke the model
            reply = ("error", f"{type(exc).__name__}: {exc}")
        try:
            conn.send(reply)
        except OSError:
            return
