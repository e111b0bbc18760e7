"""Where the worker's time goes: py-spy samples a real worker while it drains a backlog.

py-spy (not pyinstrument) because scoring runs in a process (or a thread) of its own, and py-spy
samples every thread of the worker and of its child processes from outside. Python frames only
(``--native`` would count the spinning OpenMP and lock-waiting threads as busy): time in torch's or
tokenizers' native code is charged to the Python call that entered it, and idle threads are left out.
The collapsed stacks (``stacks.txt``, loadable in speedscope) are summarised by two pure
functions: ``self_time`` (leaf functions) and ``inclusive`` (share of on-CPU samples whose
stack passes through each pipeline stage).
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import orjson

Echo = Callable[[str], None]
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
# With --subprocesses, py-spy puts each process from the sampled one down first; a command line may hold ";".
_PROCESSES = re.compile(r'^(?:process \d+:"[^"]*";)+')
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# Stage → predicate on one frame's (function, file); py-spy names methods ``Class.method``
# and :func:`parse_collapsed` keeps only ``method``. A sample counts once per stage.
STAGES: dict[str, Callable[[str, str], bool]] = {
    "scoring (Scorer._probabilities, whole)": lambda f, p: f == "_probabilities" and p.endswith("model/scorer.py"),
    "tokenisation": lambda f, p: (f == "plain_ids" and p.endswith("model/token_ids.py"))
    or ("tokenization_utils" in p and f not in ("pad", "_pad")),
    "padding (model.padding)": lambda f, p: f == "pad_batch" and p.endswith("model/padding.py"),
    "model forward (torch)": lambda f, p: f == "forward" and p.startswith("transformers/models/"),
    "pipeline.score and .deliver (event loop side)":
        lambda f, p: f in ("score", "deliver") and p.endswith("stream/pipeline.py"),
    "validation (parse_raw)": lambda f, p: f == "parse_raw" and p.endswith("stream/validation.py"),
    "pydantic models (build, dump)": lambda f, p: p.startswith("pydantic/"),
    "JSON encoding (to_json, orjson)": lambda f, p: f == "to_json" and p.endswith("finsent/schemas.py"),
    "Elasticsearch client (bulk)": lambda f, p: p.startswith(("elasticsearch/", "elastic_transport/")),
    "Kafka client (aiokafka)": lambda f, p: p.startswith("aiokafka/"),
    "asyncio event loop (all)": lambda f, p: f == "_run_once" and p.startswith("asyncio/"),
    "Faust / mode": lambda f, p: p.startswith(("faust/", "mode/")),
    "window events / aggregates": lambda f, p: p.endswith(("stream/aggregator.py", "stream/windows.py")),
}


def parse_collapsed(lines: Iterable[str]) -> list[tuple[list[tuple[str, str]], int]]:
    """py-spy ``--format raw`` lines → [(frames root→leaf as (function, file)), count]."""
    stacks = []
    for line in lines:
        match = _LINE.match(line.strip())
        if not match:
            continue
        stack = match["stack"]
        processes = _PROCESSES.match(stack)
        child = processes is not None and processes[0].count(":\"") > 1  # deeper than the sampled process
        frames = []
        for frame in stack[processes.end() if processes else 0:].split(";"):
            parsed = _FRAME.match(frame)
            frames.append((parsed["func"].rsplit(".", 1)[-1], parsed["file"]) if parsed else (frame, ""))
        if child and frames:
            frames[0] = (f"{frames[0][0]} (child process)", frames[0][1])
        stacks.append((frames, int(match["count"])))
    return stacks


def by_thread(stacks: list[tuple[list[tuple[str, str]], int]]) -> dict[str, float]:
    """Share of samples per thread name (py-spy ``--threads`` puts ``thread (id): name`` first)."""
    total = sum(count for _, count in stacks) or 1
    threads: Counter[str] = Counter()
    for frames, count in stacks:
        first = frames[0][0] if frames else ""
        threads[first.split(": ", 1)[1] if first.startswith("thread (") and ": " in first else "?"] += count
    return {name: count / total for name, count in threads.most_common()}


def self_time(stacks: list[tuple[list[tuple[str, str]], int]], top: int = 15) -> list[tuple[str, float]]:
    """The ``top`` leaf functions with their share of all samples."""
    total = sum(count for _, count in stacks) or 1
    leaves: Counter[str] = Counter()
    for frames, count in stacks:
        func, path = frames[-1]
        leaves[f"{func} ({path})" if path else func] += count
    return [(name, count / total) for name, count in leaves.most_common(top)]


def inclusive(stacks: list[tuple[list[tuple[str, str]], int]],
              stages: dict[str, Callable[[str, str], bool]] = STAGES) -> dict[str, float]:
    """Share of all samples whose stack passes through each stage (a sample counts once per stage)."""
    total = sum(count for _, count in stacks) or 1
    shares = {}
    for name, matches in stages.items():
        hit = sum(count for frames, count in stacks if any(matches(f, p) for f, p in frames))
        shares[name] = hit / total
    return shares


def run(settings: Any, *, seconds: float, backlog: int, model: str | None, train_steps: int, out_dir: Path,
        echo: Echo = print) -> dict[str, Any]:
    from bench import load, stats
    from bench.model_choice import choose_model
    from bench.pipeline_bench import es_times, wait_indexed
    from bench.processes import BenchWorld
    from finsent import clients

    out_dir.mkdir(parents=True, exist_ok=True)
    stacks_file = out_dir / "stacks.txt"
    py_spy = Path(sys.executable).parent / "py-spy"
    with tempfile.TemporaryDirectory(prefix="finsent-bench-model-") as scratch, \
            BenchWorld(settings, echo=echo) as world:
        s = world.settings
        choice = choose_model(settings, model, train_steps, Path(scratch), echo)
        echo(f"model: {choice.origin}")
        worker = world.start_worker(choice.model_dir, choice.ref, settings.worker_batch_size,
                                    settings.worker_batch_within)
        worker.wait_healthy(timeout=300)
        producer = clients.kafka_producer(s)
        try:
            load.produce_backlog(producer, s.topic("raw"), load.synthetic_docs(100, "bench-warmup", seed=1))
            wait_indexed(s, "bench-warmup", 100, worker, 300)
            load.produce_backlog(producer, s.topic("raw"), load.synthetic_docs(backlog, "bench-profile"))
        finally:
            producer.close()
        echo(f"py-spy: sampling worker pid {worker.pid} for {seconds:g}s while it drains {backlog} docs")
        spy = subprocess.run([str(py_spy), "record", "--pid", str(worker.pid), "--duration", str(int(seconds)),
                              "--rate", "100", "--format", "raw", "--threads", "--subprocesses",
                              "--output", str(stacks_file)], capture_output=True, text=True)
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed ({spy.returncode}): {spy.stderr.strip()[-500:]}")
        wait_indexed(s, "bench-profile", backlog, worker, 600)
        drained = stats.drain_rate([indexed for _, indexed in es_times(s, "bench-profile", backlog)])
    stacks = parse_collapsed(stacks_file.read_text().splitlines())
    result = {"model": choice.origin, "seconds": seconds, "samples": sum(c for _, c in stacks),
              "drain_docs_per_s_while_sampled": drained["docs_per_s"], "stages": inclusive(stacks), "threads": by_thread(stacks),
              "self_time": self_time(stacks, 40), "stacks_file": str(stacks_file)}
    (out_dir / "summary.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return result


def print_summary(result: dict[str, Any], top: int = 15) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"{result['samples']} on-CPU samples over {result['seconds']:g}s; worker drained "
                  f"{result['drain_docs_per_s_while_sampled']:.1f} docs/s while sampled (profiler attached)")
    stages = Table("stage", "share of samples", title="Inclusive time by stage")
    for name, share in sorted(result["stages"].items(), key=lambda kv: -kv[1]):
        stages.add_row(name, f"{share:.1%}")
    console.print(stages)
    threads = Table("thread", "share of samples", title="On-CPU samples by thread")
    for name, share in result["threads"].items():
        threads.add_row(name, f"{share:.1%}")
    console.print(threads)
    leaves = Table("function", "self", title=f"Top {top} leaf functions")
    for name, share in result["self_time"][:top]:
        leaves.add_row(name, f"{share:.1%}")
    console.print(leaves)
    console.print(f"collapsed stacks: {result['stacks_file']} (open in https://www.speedscope.app)")
