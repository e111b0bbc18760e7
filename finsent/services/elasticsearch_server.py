"""A real single-node Elasticsearch from Elastic's integration-test distribution.

Elasticsearch refuses to run as root, so when we are root it runs as an unprivileged
system user that this module creates; its config, data and logs live in the state folder
and belong to that user.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import subprocess
from pathlib import Path

import psutil

from finsent.services import artifacts, local_credentials
from finsent.services.java import find_java_home
from finsent.services.process import (
    PidFile, ServiceError, port_in_use, start_background, stop_process, wait_until)
from finsent.settings import Settings

_CONFIG = """\
cluster.name: finsent-local
node.name: finsent-local-1
path.data: {data}
path.logs: {logs}
network.host: 127.0.0.1
http.port: {port}
transport.port: {transport_port}
discovery.type: single-node
# Security on, without TLS on loopback: a page that rebinds its name to 127.0.0.1 gets a 401 (local_credentials).
xpack.security.enabled: true
xpack.security.http.ssl.enabled: false
xpack.security.transport.ssl.enabled: false
xpack.ml.enabled: false
action.destructive_requires_name: false
cluster.routing.allocation.disk.threshold_enabled: false
"""


def _first_closed_parent(path: Path) -> Path | None:
    """The outermost existing parent folder that other users cannot enter (no o+x), if any."""
    for parent in reversed(path.parents):
        if parent.exists() and not parent.stat().st_mode & 0o001:
            return parent
    return None


def _service_root(preferred: Path) -> Path:
    """Where Elasticsearch's config, data and logs live: the state folder, unless we are root
    and the unprivileged service user cannot reach it (a clone under /root, say); then a folder
    of its own under /var/lib/finsent, one per state folder."""
    if os.geteuid() != 0 or _first_closed_parent(preferred) is None:
        return preferred
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:12]
    return Path("/var/lib/finsent") / f"elasticsearch-{digest}"


class ElasticsearchServer:
    name = "elasticsearch"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = _service_root(settings.services_path / "elasticsearch")
        self.config = self.root / "config"
        self.data = self.root / "data"
        self.logs = self.root / "logs"
        self.log_path = self.logs / "console.log"
        self.pid_file = PidFile(self.root / "elasticsearch.pid")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.elasticsearch_port}"

    def fetched(self) -> bool:
        """Whether the cache holds this version already, so that starting it downloads nothing."""
        folder = artifacts.elasticsearch_folder(self.settings.cache_dir, self.settings.elasticsearch_version)
        return artifacts.fetched(folder)

    def process(self) -> psutil.Process | None:
        return self.pid_file.process()

    def _service_user(self) -> str | None:
        """The user to run as: None when we are not root, else the (created) service user."""
        if os.geteuid() != 0:
            return None
        user = self.settings.service_user
        try:
            pwd.getpwnam(user)
        except KeyError:
            useradd = shutil.which("useradd")
            if useradd is None:
                raise ServiceError(f"Elasticsearch will not run as root and `useradd` is missing to create {user!r}") from None
            result = subprocess.run(  # noqa: S603
                [useradd, "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", user],
                capture_output=True, text=True,
            )
            if result.returncode not in (0, 9):  # 9: created meanwhile by another process
                raise ServiceError(f"could not create the service user {user!r}: {result.stderr.strip()}")
        return user

    def _prepare(self, home: Path, user: str | None) -> None:
        for folder in (self.config, self.data, self.logs):
            folder.mkdir(parents=True, exist_ok=True)
        for item in (home / "config").iterdir():
            target = self.config / item.name
            if item.is_file() and item.name != "elasticsearch.yml" and not target.exists():
                shutil.copy2(item, target)
        (self.config / "elasticsearch.yml").write_text(
            _CONFIG.format(
                data=self.data,
                logs=self.logs,
                port=self.settings.elasticsearch_port,
                transport_port=self.settings.elasticsearch_transport_port,
            )
        )
        # Written at every start from the port's kept password, so the node answers the password clients read.
        password = local_credentials.ensure_password(self.settings.cache_dir, self.settings.elasticsearch_port)
        for name, text in local_credentials.realm_files(password).items():
            (self.config / name).write_text(text)
            (self.config / name).chmod(0o600)  # the node's user alone (chowned below when we are root)
        if user is not None:
            entry = pwd.getpwnam(user)
            for path in [self.root, *self.root.rglob("*")]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
            self._check_reachable(user, home)

    def _check_reachable(self, user: str, home: Path) -> None:
        """The service user must traverse every parent folder of its folders and the distribution."""
        for target in (self.root, home):
            closed = _first_closed_parent(target)
            if closed is not None:
                raise ServiceError(
                    f"Elasticsearch runs as {user!r}, which cannot enter {closed} "
                    f"(mode {oct(closed.stat().st_mode & 0o777)}). "
                    f"Set FINSENT_STATE_DIR / FINSENT_CACHE_DIR to folders outside it, or chmod o+x {closed}."
                )

    def start(self) -> psutil.Process:
        java_home = find_java_home(
            21, self.settings.elasticsearch_java_home, f"Elasticsearch {self.settings.elasticsearch_version}",
            "FINSENT_ELASTICSEARCH_JAVA_HOME",
        )
        home = artifacts.elasticsearch_home(self.settings.cache_dir, self.settings.elasticsearch_version)
        user = self._service_user()
        self._prepare(home, user)
        heap = self.settings.elasticsearch_heap
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "HOME": str(self.root),
            "ES_JAVA_HOME": str(java_home),
            "ES_PATH_CONF": str(self.config),
            "ES_JAVA_OPTS": f"-Xms{heap} -Xmx{heap}",
        }
        argv = [str(home / "bin" / "elasticsearch")]
        return start_background(argv, pid_file=self.pid_file, log_path=self.log_path, env=env, cwd=self.root, user=user)

    def wait_healthy(self, proc: psutil.Process, timeout: float) -> None:
        wait_until(self.health, timeout=timeout, proc=proc, log_path=self.log_path, name="Elasticsearch")

    def health(self) -> str | None:
        """Cluster health status when the official client accepts the server (it checks the
        ``X-Elastic-Product`` header and raises otherwise); None when not green or yellow."""
        from elasticsearch import Elasticsearch

        # Not before the port is open, and once per probe: while the node starts, the client would
        # log a warning and a traceback for each of its retries.
        if not port_in_use(self.settings.elasticsearch_port):
            return None
        password = local_credentials.read_password(self.settings.cache_dir, self.settings.elasticsearch_port)
        with Elasticsearch(self.url, basic_auth=(local_credentials.USER, password or ""), request_timeout=5,
                           max_retries=0) as es:
            status = es.cluster.health(wait_for_status="yellow", timeout="5s")["status"]
        return status if status in ("green", "yellow") else None

    def stop(self) -> bool:
        proc = self.process()
        if proc is None:
            return False
        stop_process(proc, timeout=90)
        self.pid_file.remove()
        return True
