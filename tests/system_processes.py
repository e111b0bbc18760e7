"""Stand-ins for `finsent up`'s processes: a small Python program started under a process's name, pid file and
log, with settings whose services are not the embedded ones (so `down` stops only the processes)."""

from __future__ import annotations

import sys

from finsent import system
from finsent.services.process import start_background
from finsent.settings import Settings


def settings_for(tmp_path, **values) -> Settings:
    return Settings(state_dir=tmp_path / "state", kafka_bootstrap="kafka.invalid:9092",
                    elasticsearch_url="http://es.invalid:9200", **values)


def start_as(settings: Settings, name: str, *python_args: str):
    """``python *python_args`` as the process ``name``: its spec and the started process."""
    spec = next(s for s in system.process_specs(settings) if s.name == name)
    proc = start_background([sys.executable, *python_args], pid_file=system._pid_file(settings, name),
                            log_path=system._log_path(settings, name), env={}, cwd=settings.state_dir.parent)
    return spec, proc
