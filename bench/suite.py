"""``finsent bench all``: every benchmark in one run, and the targets judged from it.

Order matters on a small machine: the scorer grid and the baseline first (nothing else
running), then the pipeline (its scorer measured just before its worker starts), then the
memory run at half the pipeline's maximum rate.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from finsent.settings import Settings

Echo = Callable[[str], None]


def model_summary(model_report: dict[str, Any]) -> dict[str, Any]:
    """The figures of bench/model_bench.py's report that the targets and the table use."""
    from bench.model_bench import scorer_phases

    realistic = model_report["scorer"]["cells"][0]
    precision = model_report["scorer"].get("precision") or "fp32"
    summary = {
        "baseline docs/s (HF pipeline, one at a time, BERT-base)": model_report["baseline"]["docs_per_s"],
        f"scorer docs/s ({precision}, batch {realistic['batch_size']}, realistic texts)": realistic["docs_per_s"],
        "scorer / baseline": realistic["docs_per_s"] / model_report["baseline"]["docs_per_s"],
    }
    if len(model_report.get("rounds", [])) > 1:  # the figures above are the median round's
        low, high = model_report["speedup_range"]
        summary[f"scorer / baseline, lowest of {len(model_report['rounds'])} rounds"] = low
        summary[f"scorer / baseline, highest of {len(model_report['rounds'])} rounds"] = high
    baseline = model_report["baseline"]["docs_per_s"]
    for key in [k for k in scorer_phases(model_report) if k != "scorer"]:  # the reference variants
        phase = model_report[key]
        name = f"scorer {phase.get('precision') or key.removeprefix('scorer_')}"
        docs_per_s = phase["cells"][0]["docs_per_s"]
        summary[f"{name} docs/s (same texts)"] = docs_per_s
        summary[f"{name} / baseline"] = docs_per_s / baseline
    return summary


def figures(results: dict[str, Any]) -> dict[str, float | None]:
    """The raw figures :func:`bench.targets.judge` needs, from whichever sections ran."""
    out: dict[str, float | None] = {}
    model = results.get("model")
    if model:
        out["scorer_docs_per_s"] = model["scorer"]["cells"][0]["docs_per_s"]
        out["baseline_docs_per_s"] = model["baseline"]["docs_per_s"]
    pipeline = results.get("pipeline")
    if pipeline:
        from bench.pipeline_bench import p99_at

        out["end_to_end_docs_per_s"] = pipeline["max_sustained"]["docs_per_s"]
        out["worker_scorer_docs_per_s"] = pipeline["scorer"]["docs_per_s"]
        out["p99_at_half_max_s"] = p99_at(pipeline, 0.5)
    peaks = [pipeline.get("worker_peak_rss_bytes") if pipeline else None,
             results.get("memory", {}).get("processes", {}).get("worker", {}).get("peak_rss_bytes")]
    peaks = [p for p in peaks if p is not None]
    out["worker_peak_rss_bytes"] = max(peaks) if peaks else None
    return out


def gpu_section(model_report: dict[str, Any]) -> dict[str, Any] | None:
    """The scorer grid again as a GPU section when the model benchmark ran on CUDA."""
    if model_report.get("scorer", {}).get("device") != "cuda":
        return None
    rows = [{"batch_size": c["batch_size"], "max_length": c["max_length"], "docs_per_s": c["docs_per_s"]}
            for c in model_report["scorer"]["cells"]]
    return {"device": model_report["machine"].get("cuda"), "rows": rows}


def run_all(settings: Settings, *, backlog: int, level_seconds: float, memory_seconds: float, baseline_docs: int,
            scorer_docs: int, model: str | None, train_steps: int, skip_model: bool, echo: Echo,
            threads: int | None = None) -> dict[str, Any]:
    import tempfile

    from bench.model_choice import choose_model

    with tempfile.TemporaryDirectory(prefix="finsent-bench-model-") as scratch:
        # One model for every section (a tiny one is trained once, when there is no champion).
        choice = choose_model(settings, model, train_steps, Path(scratch), echo)
        echo(f"model: {choice.origin}")
        results = _run_sections(settings, str(choice.path), backlog=backlog, level_seconds=level_seconds,
                                memory_seconds=memory_seconds, baseline_docs=baseline_docs, scorer_docs=scorer_docs,
                                skip_model=skip_model, echo=echo, threads=threads)
        results["model_origin"] = choice.origin
    return results


def _run_sections(settings: Settings, model: str, *, backlog: int, level_seconds: float, memory_seconds: float,
                  baseline_docs: int, scorer_docs: int, skip_model: bool, echo: Echo,
                  threads: int | None) -> dict[str, Any]:
    from bench import memory, pipeline_bench, report, targets

    train_steps = 1  # never used: the model is chosen already
    results: dict[str, Any] = {"machine": report.machine()}
    if not skip_model:
        from bench import model_bench
        from finsent.training_data import SHARED_DATA
        from model.quantization import resolve_quantize
        from model.registry import Registry, RegistryError

        echo("== scorer and baselines (bench/model_bench.py) ==")
        try:
            folder = Registry(settings.models_path).path(model)
        except RegistryError:
            folder = None
        data = sorted(SHARED_DATA.glob("*/train.csv")) if SHARED_DATA.is_dir() else []
        model_report = model_bench.run(model_folder=folder, data_files=data, baseline_docs=baseline_docs,
                                       scorer_docs=scorer_docs, device=settings.device, threads=threads,
                                       quantize=resolve_quantize(settings.model_quantize), echo=echo)
        model_report["summary"] = model_summary(model_report)
        results["model"] = model_report
        gpu = gpu_section(model_report)
        if gpu:
            results["gpu"] = gpu
    echo("== pipeline ==")
    config = pipeline_bench.PipelineConfig(backlog=backlog, level_seconds=level_seconds, model=model,
                                           train_steps=train_steps, threads=threads)
    results["pipeline"] = pipeline_bench.run(settings, config, echo=echo)
    half = 0.5 * results["pipeline"]["max_sustained"]["docs_per_s"]
    echo(f"== memory (every process, {half:.0f} docs/s through ingest) ==")
    results["memory"] = memory.run(settings, seconds=memory_seconds, per_second=half, model=model,
                                   train_steps=train_steps, threads=threads, echo=echo)
    results["figures"] = figures(results)
    results["targets"] = targets.judge(results["figures"])
    results["passed"] = targets.overall(results["targets"])
    return results


def plot(results: dict[str, Any], path: Path) -> Path:
    """Throughput against batch size (one line per text length) with the baseline, from the scorer grid."""
    from bench.report import plot_throughput

    model = results["model"]
    rows = [{"batch_size": c["batch_size"], "text tokens": c["text_tokens"], "docs_per_s": c["docs_per_s"]}
            for c in model["scorer"]["cells"] if isinstance(c.get("text_tokens"), int)]
    if not rows:
        raise ValueError("no batch-size cells in the scorer grid")
    machine = results.get("machine") or model.get("machine", {})
    where = machine.get("cpu_model") or machine.get("platform", "")
    cpus = machine.get("nproc") or machine.get("cpus")
    title = f"finsent scorer throughput ({model['scorer'].get('device', 'cpu')}, {where}, {cpus} CPUs)"
    baselines = {"HF pipeline, one at a time, BERT-base": model["baseline"]["docs_per_s"]}
    return plot_throughput(rows, path, title=title, group="text tokens", baselines=baselines)
