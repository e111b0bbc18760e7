"""Peak resident memory of named processes, sampled with psutil in a background thread.

The memory benchmark promotes a second model halfway through its load, so the worker's peak
includes a hot swap, as it would in a deployment whose models are retrained.

A process's figure includes its children (``finsent`` may fork helpers), summed per sample:
the peak of the sum, not the sum of peaks. A process that has exited keeps the peak it
reached. ``PeakTracker`` is the pure part (what a sample does to the peaks).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import psutil


class PeakTracker:
    def __init__(self) -> None:
        self.peaks: dict[str, int] = {}
        self.samples: dict[str, int] = {}

    def add(self, sample: Mapping[str, int]) -> None:
        for name, rss in sample.items():
            self.peaks[name] = max(self.peaks.get(name, 0), rss)
            self.samples[name] = self.samples.get(name, 0) + 1


def tree_rss(process: psutil.Process) -> int | None:
    """RSS of a process and its descendants in bytes; None once the process is gone."""
    try:
        members = [process, *process.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    total = 0
    for member in members:
        try:
            total += member.memory_info().rss
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue  # a child that ended between the listing and the reading
    return total


class RssSampler:
    """Samples every ``interval`` seconds from :meth:`start` until :meth:`stop`."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval = interval
        self.tracker = PeakTracker()
        self._processes: dict[str, psutil.Process] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def watch(self, name: str, pid: int) -> None:
        with self._lock:
            self._processes[name] = psutil.Process(pid)

    def sample(self) -> None:
        with self._lock:
            watched = dict(self._processes)
        readings = {}
        for name, process in watched.items():
            rss = tree_rss(process)
            if rss is not None:
                readings[name] = rss
        with self._lock:
            self.tracker.add(readings)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, name="finsent-rss", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, int]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample()
        return self.peaks()

    def peaks(self) -> dict[str, int]:
        with self._lock:
            return dict(self.tracker.peaks)


# --- the memory benchmark: every finsent process under a paced load ----------------------

def run(settings: Any, *, seconds: float = 30.0, per_second: float = 20.0, model: str | None = None,
        train_steps: int = 20, keep: bool = False, threads: int | None = None,
        echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Start the worker, the alerts engine, the retrain scheduler and the dashboard on an
    isolated prefix, replay ``per_second × seconds`` documents through ``finsent ingest file``,
    promote a copy of the model halfway, and report every process's peak RSS."""
    import tempfile
    import time

    from bench import load
    from bench.model_choice import choose_model
    from bench.pipeline_bench import wait_indexed
    from bench.processes import PROJECT_ROOT, BenchWorld, free_port

    count = max(1, round(seconds * per_second))
    sampler = RssSampler()
    states: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="finsent-bench-model-") as scratch, \
            BenchWorld(settings, keep=keep, echo=echo) as world:
        choice = choose_model(settings, model, train_steps, Path(scratch), echo)
        echo(f"model: {choice.origin}")
        env = world.env(choice.model_dir)
        if settings.alerts_webhook_secret is None:  # the engine signs every webhook and refuses to start without
            import secrets

            env["FINSENT_ALERTS_WEBHOOK_SECRET"] = secrets.token_hex(32)
        threads_env = {"OMP_NUM_THREADS": str(threads)} if threads else {}
        worker = world.start_worker(choice.model_dir, choice.ref, settings.worker_batch_size,
                                    settings.worker_batch_within, **threads_env)
        dash_port = free_port()
        others = [
            world.start("alerts", ["alerts", "run", "--rules", str(PROJECT_ROOT / "alerts" / "rules.example.yml")], env),
            world.start("scheduler", ["retrain", "scheduler"], env),
            world.start("dashboard", ["dashboards", "serve", "--port", str(dash_port)], env, port=dash_port,
                        health_path="/"),
        ]
        for process in (worker, *others):
            sampler.watch(process.name, process.pid)
        sampler.start()
        try:
            worker.wait_healthy(timeout=300)
            feed = world.root / "memory-load.jsonl"
            feed.write_bytes(load.jsonl_lines(load.synthetic_docs(count, "bench-memory")))
            echo(f"ingest: {count} docs at {per_second:g} docs/s through `finsent ingest file`")
            ingest = world.start("ingest", ["ingest", "file", str(feed), "--rate", str(per_second), "--no-dedup"], env)
            sampler.watch("ingest", ingest.pid)
            time.sleep(seconds / 2)
            swap = promote_copy(world.settings, choice.model_dir, choice.ref, Path(scratch), worker, echo)
            code = ingest.wait(timeout=seconds * 3 + 120)
            states["ingest"] = "finished" if code == 0 else f"exit code {code}"
            if code != 0:
                raise RuntimeError(f"`finsent ingest file` ended with {code}; log:\n{ingest.tail()}")
            wait_indexed(world.settings, "bench-memory", count, worker, stall_timeout=300)
            for process in (worker, *others):
                states[process.name] = "ran" if process.running() else f"exited early ({process.proc.returncode})"
        finally:
            peaks = sampler.stop()
        logs = {p.name: p.tail(8) for p in world.processes if states.get(p.name, "").startswith("exited")}
    processes = {name: {"peak_rss_bytes": peak, "samples": sampler.tracker.samples.get(name, 0),
                        "state": states.get(name, "?")} | ({"log_tail": logs[name]} if name in logs else {})
                 for name, peak in peaks.items()}
    return {"model": choice.origin, "load": {"docs": count, "docs_per_s": per_second, "seconds": seconds},
            "swap": swap, "processes": processes}


def promote_copy(settings: Any, model_dir: Path, ref: str, scratch: Path, worker: Any,
                 echo: Callable[[str], None], timeout: float = 120.0) -> dict[str, Any]:
    """Promote a copy of the model under another version on the control topic, as a retrain
    does, and wait until ``worker``'s /health (a :class:`bench.processes.FinsentProcess`) names it."""
    import json
    import shutil
    import time

    from finsent.schemas import ControlMessage, utc_now
    from model.registry import Registry
    from stream.control import publish

    source = Registry(model_dir).path(ref)
    copy = scratch / "promoted"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("onnx"))
    metadata_path = copy / "metadata.json"
    metadata = json.loads(metadata_path.read_text(encoding="utf-8")) if metadata_path.exists() else {}
    version = f"{metadata.get('version', source.name)}-promoted"
    metadata_path.write_text(json.dumps(metadata | {"version": version}), encoding="utf-8")
    # No sequence: the copy is no registry's champion (nothing moved), so the worker applies it as it comes.
    message = ControlMessage(action="promote", model_version=version, model_path=str(copy),
                             reason="bench memory: the peak includes a hot swap", issued_at=utc_now())
    publish(settings, message)
    echo(f"promoted {version}; waiting for the worker to swap")
    started = time.monotonic()
    worker.wait_healthy(timeout, until=lambda health: health.get("model_version") == version,
                        what=f"scoring with {version}", every=0.2)
    seconds = time.monotonic() - started
    echo(f"the worker scores with {version} after {seconds:.1f} s")
    return {"version": version, "seconds": round(seconds, 2)}
