"""How benchmark results leave the process: JSON, rich tables and the batch-size plot.

The results are one JSON-able dict per run (sections ``machine``, ``model``, ``pipeline``,
``memory``, ``gpu``, ``targets``); every section is optional, so one command's output and
``finsent bench all``'s share the same renderers.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson


def machine() -> dict[str, Any]:
    """What the figures were measured on (and how busy it was)."""
    import psutil

    model_name = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model_name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu_model": model_name,
        "nproc": os.cpu_count(),
        "memory_bytes": psutil.virtual_memory().total,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_1m": os.getloadavg()[0],
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def write_json(results: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _mb(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:,.0f} MB"


def _verdict(passed: bool | None) -> str:
    return {True: "[green]PASS[/]", False: "[red]FAIL[/]", None: "[yellow]not measured[/]"}[passed]


def tables(results: Mapping[str, Any]) -> list[Any]:
    """Rich tables for whichever sections the results hold."""
    from rich.table import Table

    out = []
    pipeline = results.get("pipeline")
    if pipeline:
        t = Table("measure", "value", title=f"Pipeline (model: {pipeline['model']['origin']})")
        sc, dr = pipeline["scorer"], pipeline["max_sustained"]
        rounds = sc.get("rounds_docs_per_s", [])
        spread = f" (median of {len(rounds)}: {_num(min(rounds))}–{_num(max(rounds))})" if len(rounds) > 1 else ""
        t.add_row(f"scorer, batches of {sc['batch_size']} ({sc['device']}, {sc['torch_threads']} threads)",
                  f"{_num(sc['docs_per_s'])} docs/s{spread}")
        t.add_row("end to end, max sustained (Kafka → worker → Elasticsearch)", f"{_num(dr['docs_per_s'])} docs/s")
        t.add_row("end to end / scorer", f"{pipeline['end_to_end_vs_scorer']:.2f}x")
        for level in pipeline["latency"]:
            t.add_row(f"latency at {level['fraction']:.0%} ({_num(level['target_docs_per_s'])} docs/s, n={level['n']})",
                      f"p50 {level['p50_s']:.3f}s  p95 {level['p95_s']:.3f}s  p99 {level['p99_s']:.3f}s")
        t.add_row("worker peak RSS", _mb(pipeline.get("worker_peak_rss_bytes")))
        out.append(t)
    memory = results.get("memory")
    if memory:
        swap = memory.get("swap")
        title = "Peak memory of every process"
        if swap:  # bench memory promotes a model halfway (bench/memory.py)
            title = f"Peak memory, a hot swap included ({swap['seconds']:.1f} s)"
        t = Table("process", "peak RSS", "samples", "state", title=title)
        for name, row in memory["processes"].items():
            t.add_row(name, _mb(row.get("peak_rss_bytes")), _num(row.get("samples")), row.get("state", ""))
        out.append(t)
    model = results.get("model")
    if model and model.get("summary"):
        t = Table("measure", "value", title="Scorer vs baselines")
        for key, value in model["summary"].items():
            t.add_row(key, _num(value))
        out.append(t)
    gpu = results.get("gpu")
    if gpu:
        t = Table("batch size", "docs/s", title=f"GPU: {gpu.get('device', '?')}")
        for row in gpu.get("rows", []):
            t.add_row(str(row["batch_size"]), _num(row["docs_per_s"]))
        out.append(t)
    targets = results.get("targets")
    if targets:
        t = Table("target", "value", "limit", "value / limit", "verdict", title="Targets (ratios from this run)")
        for v in targets:
            value = "-" if v["value"] is None else f"{v['value']:.3g} {v['unit']}"
            margin = "-" if v["margin"] is None else f"{v['margin']:.2f}"
            t.add_row(v["description"], value, f"{v['comparison']} {v['limit']:g} {v['unit']}", margin,
                      _verdict(v["passed"]))
        out.append(t)
    return out


def print_tables(results: Mapping[str, Any]) -> None:
    from rich.console import Console

    console = Console()
    for table in tables(results):
        console.print(table)


def series_by(rows: Iterable[Mapping[str, Any]], group: str, x: str, y: str) -> dict[Any, list[tuple[float, float]]]:
    """``{group value: [(x, y), ...] sorted by x}`` from flat result rows."""
    series: dict[Any, list[tuple[float, float]]] = {}
    for row in rows:
        series.setdefault(row[group], []).append((row[x], row[y]))
    return {key: sorted(points) for key, points in series.items()}


def plot_throughput(rows: Sequence[Mapping[str, Any]], path: Path, *, title: str,
                    group: str = "max_length", x: str = "batch_size", y: str = "docs_per_s",
                    baselines: Mapping[str, float] | None = None) -> Path:
    """Throughput against batch size, one line per ``group`` value, baselines as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for key, points in series_by(rows, group, x, y).items():
        xs, ys = zip(*points)
        ax.plot(xs, ys, marker="o", label=f"{group.replace('_', ' ')} {key}")
    for name, value in (baselines or {}).items():
        ax.axhline(value, linestyle="--", linewidth=1, color="grey")
        ax.annotate(f"{name}: {value:,.1f} docs/s", (0.01, value), xycoords=("axes fraction", "data"),
                    textcoords="offset points", xytext=(2, 3), fontsize=8, color="dimgrey")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(x.replace("_", " "))
    ax.set_ylabel("documents / second")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
