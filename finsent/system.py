"""The whole system on one machine: `finsent up|down|status|init` (what `make up` runs).

``up`` brings up the embedded Kafka and Elasticsearch (unless the settings point at other
clusters), creates topics and indices, trains the first model when the registry has no
champion, then starts the finsent processes in the background, each with a pid file and a
log under ``<state_dir>/processes``. ``down`` stops exactly those pids, then the services.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx
import psutil

from finsent.services import manager
from finsent.services.process import (
    PidFile, ServiceError, exit_code, has_exited, last_start_excerpt, last_start_lines, port_in_use, port_taken,
    start_background, stop_process,
)
from finsent.settings import Settings
from finsent.training_data import PROJECT_ROOT, download_dir, find_training_data

Echo = Callable[[str], None]
# The worker loads the model and joins its consumer group before /health answers 200: seconds here, more on a
# loaded machine. Past this `up` stops waiting and says which processes are still starting.
READY_SECONDS = 120.0


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    args: tuple[str, ...]
    page: str | None = None  # the path a person opens on its port ("/metrics", "/"); None: nothing to open
    health_path: str | None = None
    env: tuple[tuple[str, str], ...] = ()  # per-process overrides, e.g. a port two processes would share
    one_shot: bool = False  # ends by itself when its work is done (the sample replay)
    port: int = 0  # the port it binds (0: none), checked before it starts
    port_setting: str = ""  # what moves that port
    host: str = "127.0.0.1"  # where that port is reached

    @property
    def url(self) -> str | None:
        return None if self.page is None else _base_url(self.host, self.port) + self.page


def _reachable(bind_host: str) -> str:
    """Where a server bound to ``bind_host`` answers on this machine: a wildcard bind answers on loopback."""
    return {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(bind_host, bind_host)


def _base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def process_specs(settings: Settings) -> list[ProcessSpec]:
    sample = PROJECT_ROOT / "ingest" / "data" / "sample_news.jsonl"
    rules = PROJECT_ROOT / "alerts" / "rules.local.yml"
    metrics_host, dashboard_host = _reachable(settings.metrics_host), _reachable(settings.dashboard_host)
    return [
        ProcessSpec("worker", ("stream", "worker"), "/metrics", "/health", port=settings.worker_web_port,
                    port_setting="FINSENT_WORKER_WEB_PORT", host=metrics_host),
        ProcessSpec("receiver", ("alerts", "receive", "--port", str(settings.receiver_port)),
                    port=settings.receiver_port, port_setting="FINSENT_RECEIVER_PORT"),
        # rules.local.yml names ${FINSENT_RECEIVER_PORT}: the setting may come from a config file, not the environment
        ProcessSpec("alerts", ("alerts", "run", "--rules", str(rules)),
                    env=(("FINSENT_RECEIVER_PORT", str(settings.receiver_port)),), port=settings.alerts_metrics_port,
                    port_setting="FINSENT_ALERTS_METRICS_PORT", host=metrics_host),
        ProcessSpec("scheduler", ("retrain", "scheduler"), "/metrics", port=settings.retrain_metrics_port,
                    port_setting="FINSENT_RETRAIN_METRICS_PORT", host=metrics_host),
        ProcessSpec("dashboard", ("dashboards", "serve", "--port", str(settings.dashboard_port)), "/", "/health",
                    port=settings.dashboard_port, port_setting="FINSENT_DASHBOARD_PORT", host=dashboard_host),
        ProcessSpec("push", ("ingest", "serve", "--port", str(settings.push_port)), "/", "/healthz",
                    port=settings.push_port, port_setting="FINSENT_PUSH_PORT"),
        ProcessSpec("replay", ("ingest", "file", str(sample), "--rate", "2"),
                    env=(("FINSENT_INGEST_METRICS_PORT", "0"),), one_shot=True),
    ]


def _probe(spec: ProcessSpec) -> tuple[bool, str] | None:
    """Whether a running process answers: its health page, else its port; None when it has neither."""
    if spec.health_path:
        url = _base_url(spec.host, spec.port) + spec.health_path
        try:
            code = httpx.get(url, timeout=3).status_code
        except httpx.HTTPError as exc:
            return False, f"unreachable: {exc.__class__.__name__}"
        return code == 200, f"HTTP {code}"
    if spec.port:
        answering = port_in_use(spec.port, spec.host)
        return answering, f"port {spec.port} " + ("answering" if answering else "not answering")
    return None


def _finsent_executable() -> str:
    beside = Path(sys.executable).parent / "finsent"
    return str(beside) if beside.exists() else (shutil.which("finsent") or "finsent")


def _available_groups() -> set[str]:
    from finsent.cli import app

    return {group.name for group in app.registered_groups}


def _uses_embedded_services(settings: Settings) -> bool:
    return (
        settings.kafka_bootstrap == f"127.0.0.1:{settings.kafka_port}"
        and settings.elasticsearch_url == f"http://127.0.0.1:{settings.elasticsearch_port}"
    )


STATUS_KAFKA_ADMIN = {"request_timeout_ms": 5000, "bootstrap_timeout_ms": 5000}  # status answers within seconds


def _cluster_rows(settings: Settings) -> list[dict]:
    """The user's own Kafka and Elasticsearch, asked directly: finsent started neither, so there is no pid."""
    from finsent import clients

    def row(name: str, address: str, healthy: bool, detail: str) -> dict:
        return {"name": name, "kind": "service", "pid": None, "healthy": healthy, "address": address,
                "detail": detail}

    try:
        admin = clients.kafka_admin(settings, **STATUS_KAFKA_ADMIN)
        try:
            brokers = len(admin.describe_cluster().get("brokers") or [])
        finally:
            admin.close()
        kafka = row("kafka", settings.kafka_bootstrap, brokers > 0, f"{brokers} broker(s)")
    except Exception as exc:  # noqa: BLE001 - status reports, never raises
        kafka = row("kafka", settings.kafka_bootstrap, False, f"unreachable: {clients.error_text(exc)}"[:200])
    try:
        with clients.elasticsearch(settings) as es:
            health = es.options(request_timeout=5, max_retries=0).cluster.health()["status"]
        elastic = row("elasticsearch", settings.elasticsearch_url, health in ("green", "yellow"), f"cluster {health}")
    except Exception as exc:  # noqa: BLE001
        elastic = row("elasticsearch", settings.elasticsearch_url, False,
                      f"unreachable: {clients.error_text(exc)}"[:200])
    return [kafka, elastic]


def _indices_row(settings: Settings) -> dict:
    """finsent's indices: a write block (a full disk, say) halts the pipeline while Elasticsearch looks green."""
    from finsent import clients, index_health

    row = {"name": "indices", "kind": "service", "pid": None, "address": f"{settings.index_prefix}-*"}
    try:
        with clients.elasticsearch(settings) as es:
            health = index_health.read(es.options(request_timeout=5, max_retries=0), settings.index_prefix)
        return row | {"healthy": health.healthy, "detail": health.describe()}
    except Exception as exc:  # noqa: BLE001 - status reports, never raises
        return row | {"healthy": False, "detail": f"unreadable: {type(exc).__name__}: {exc}"[:200]}


def _pid_file(settings: Settings, name: str) -> PidFile:
    return PidFile(settings.state_dir.resolve() / "processes" / f"{name}.pid")


def _log_path(settings: Settings, name: str) -> Path:
    return settings.state_dir.resolve() / "processes" / f"{name}.log"


def _down_marker(settings: Settings) -> Path:
    """Written by ``down`` before it stops anything, so that a ``finsent up`` still watching in
    another terminal ends quietly instead of reporting each stopped process as a crash."""
    return settings.state_dir.resolve() / "processes" / "down-requested"


def local_secrets(settings: Settings, echo: Echo = print) -> dict[str, str]:
    """Secrets the local processes share when the user set none: generated once into
    ``<state_dir>/secrets`` (mode 600) and handed to the processes through their environment."""
    wanted = {"FINSENT_LABEL_TOKEN": settings.label_token,
              "FINSENT_ALERTS_WEBHOOK_SECRET": settings.alerts_webhook_secret}
    folder = settings.state_dir.resolve() / "secrets"
    env = {}
    for variable, configured in wanted.items():
        if configured is not None and configured.get_secret_value():
            continue
        path = folder / variable.lower()
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.touch(mode=0o600)
            path.write_text(secrets.token_urlsafe(32))
            echo(f"{variable}: generated into {path}")
        env[variable] = path.read_text().strip()
    return env


def init(settings: Settings, echo: Echo = print) -> None:
    """Topics, indices and (when the registry has no champion) the first model."""
    manager.init(settings, echo=echo)
    ensure_model(settings, echo)


def ensure_model(settings: Settings, echo: Echo = print) -> str:
    from model.registry import open_registry

    registry = open_registry(settings)
    champion = registry.champion()
    if champion:
        echo(f"model: champion {champion}")
        return champion
    files = find_training_data(settings.train_data_paths, download_dir(settings.state_dir))
    echo(f"model: no champion yet; training the first one on {', '.join(map(str, files))}")
    echo("       (seconds on a GPU, minutes on a CPU; progress and ETA below)")
    from model.evaluation import summary_lines
    from model.training import train

    result = train(files, base_model=settings.base_model, registry=registry, epochs=settings.bootstrap_epochs)
    registry.promote(result.version)
    echo(f"model: {result.version} promoted")
    for line in summary_lines(result.metrics):
        echo(f"       {line}")
    return result.version


def shared_ports(settings: Settings, specs: list[ProcessSpec]) -> list[str]:
    """A line per port that two of the processes (or local servers) ``up`` starts are set to bind:
    the second to start would die on it."""
    owners: dict[int, list[str]] = {}
    for spec in specs:
        if spec.port:
            owners.setdefault(spec.port, []).append(spec.port_setting)
    if _uses_embedded_services(settings):
        for setting, port in settings.local_server_ports.items():
            owners.setdefault(port, []).append(setting)
    return [f"{', '.join(names[:-1])} and {names[-1]} are {'both' if len(names) == 2 else 'all'} {port}: "
            "each needs a port of its own" for port, names in owners.items() if len(names) > 1]


def taken_ports(settings: Settings, specs: list[ProcessSpec]) -> list[str]:
    """A line per port that another process holds, of the processes not running yet."""
    taken = []
    for spec in specs:
        if spec.port and _pid_file(settings, spec.name).process() is None and port_in_use(spec.port, spec.host):
            taken.append(port_taken(spec.port, spec.name, f"stop it or set {spec.port_setting}"))
    return taken


Started = list[tuple[ProcessSpec, psutil.Process]]


def up(settings: Settings, echo: Echo = print) -> tuple[Started, list[str]]:
    """Start what is not running; return the processes, and the names of those still starting after
    :data:`READY_SECONDS`."""
    # Before the servers and the first model take minutes: a process that cannot bind its port would die at once,
    # and `up` would still say that all is up.
    specs = process_specs(settings)
    if clashes := shared_ports(settings, specs):
        raise ServiceError("; ".join(clashes))
    if taken := taken_ports(settings, specs):
        raise ServiceError("; ".join(taken))
    if _uses_embedded_services(settings):
        manager.up(settings, bootstrap=False, echo=echo)
    init(settings, echo)
    _down_marker(settings).unlink(missing_ok=True)
    groups = _available_groups()
    exe = _finsent_executable()
    shared_env = dict(os.environ) | local_secrets(settings, echo)
    started = []
    for spec in process_specs(settings):
        if spec.args[0] not in groups:
            echo(f"{spec.name}: skipped (`finsent {spec.args[0]}` is not part of this build)")
            continue
        pid_file = _pid_file(settings, spec.name)
        proc = pid_file.process()
        if proc is None:
            proc = start_background(
                [exe, *spec.args], pid_file=pid_file, log_path=_log_path(settings, spec.name),
                env=shared_env | dict(spec.env), cwd=Path.cwd(),
            )
            echo(f"{spec.name}: started (pid {proc.pid}, log {_log_path(settings, spec.name)})")
        else:
            echo(f"{spec.name}: already running (pid {proc.pid})")
        started.append((spec, proc))
    return started, wait_ready(settings, started, echo)


def wait_ready(settings: Settings, started: Started, echo: Echo = print, timeout: float = READY_SECONDS,
               poll_seconds: float = 0.5) -> list[str]:
    """Wait until each long-running process answers. One that exits first is an error with what its log says
    (a wrong setting, a missing file); one still starting at the deadline is named and returned."""
    pending = [(spec, proc) for spec, proc in started if not spec.one_shot]
    deadline = time.monotonic() + timeout
    while pending:
        for spec, proc in list(pending):
            if has_exited(proc):
                log, code = _log_path(settings, spec.name), exit_code(proc)
                status = "" if code is None else f" (status {code})"
                raise ServiceError(f"{spec.name} exited{status} while starting; from {log}:\n"
                                   f"{last_start_excerpt(log)}")
            answer = _probe(spec)
            if answer is None or answer[0]:
                pending.remove((spec, proc))
                echo(f"{spec.name}: " + ("ready" if answer else "started (no port to probe)"))
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(poll_seconds)
    for spec, _ in pending:
        echo(f"{spec.name}: not ready after {timeout:g} s; still starting (`finsent status`, "
             f"{_log_path(settings, spec.name)})")
    return [spec.name for spec, _ in pending]


def watch(settings: Settings, started: Started, echo: Echo = print, poll_seconds: float = 2.0) -> None:
    """Block until Ctrl-C or a ``finsent down`` from elsewhere; report a long-running process that
    dies (a one-shot one may finish)."""
    reported = set()
    while True:
        time.sleep(poll_seconds)
        ended = [spec for spec, proc in started if spec.name not in reported and has_exited(proc)]
        # Looked at after the processes: `down` writes it before it stops any of them.
        if _down_marker(settings).exists():
            echo("stopped by `finsent down`")
            return
        for spec in ended:
            reported.add(spec.name)
            if not spec.one_shot:
                log = _log_path(settings, spec.name)
                echo(f"{spec.name} exited; from {log}:\n{last_start_excerpt(log)}")


def down(settings: Settings, echo: Echo = print) -> None:
    marker = _down_marker(settings)
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    for spec in reversed(process_specs(settings)):
        pid_file = _pid_file(settings, spec.name)
        proc = pid_file.process()
        if proc is not None:
            stop_process(proc, timeout=30)
            echo(f"{spec.name}: stopped")
        pid_file.remove()
    if _uses_embedded_services(settings):
        manager.down(settings, echo=echo)


def status(settings: Settings) -> list[dict]:
    rows = []
    if _uses_embedded_services(settings):
        for entry in manager.status(settings):
            rows.append({"name": entry.name, "kind": "service", "pid": entry.pid, "healthy": entry.healthy,
                         "address": entry.address, "detail": entry.detail})
    else:
        rows += _cluster_rows(settings)
    if any(row["name"] == "elasticsearch" and row["healthy"] for row in rows):
        rows.append(_indices_row(settings))
    return rows + process_rows(settings)


def process_rows(settings: Settings) -> list[dict]:
    """A status row per finsent process: its pid, and whether its health page (else its port) answers."""
    rows = []
    for spec in process_specs(settings):
        proc = _pid_file(settings, spec.name).process()
        healthy, detail = proc is not None, "running" if proc else "not running"
        if proc is None and spec.one_shot:  # finished, or never started: its log's last line says which
            last = (last_start_lines(_log_path(settings, spec.name)) or ["(none)"])[-1]
            healthy, detail = None, f"not running (one-shot); last log line: {last[-120:]}"
        if proc is not None and (answer := _probe(spec)):  # a process that stopped answering is not healthy
            healthy, detail = answer
        rows.append({"name": spec.name, "kind": "process", "pid": proc.pid if proc else None, "healthy": healthy,
                     "address": spec.url or "-", "detail": detail})
    return rows
