"""Fetch Kafka and Elasticsearch from Maven Central with ``mvn``, once, into the cache folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import zipfile
from pathlib import Path

from finsent.services.process import ServiceError

SLF4J_BINDING = ("org.slf4j", "slf4j-reload4j", "1.7.36")
_COMPLETE = ".complete"  # in a server's folder once its fetch has finished

_KAFKA_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>finsent.local</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{kafka}</version></dependency>
    <dependency><groupId>{sg}</groupId><artifactId>{sa}</artifactId><version>{sv}</version></dependency>
  </dependencies>
</project>
"""


def _mvn(args: list[str], *, cache: Path, cwd: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ServiceError("Maven (mvn) is not on PATH: install it (Debian: apt-get install maven) and retry")
    cmd = [mvn, "-B", "-q", f"-Dmaven.repo.local={cache / 'm2'}", *args]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=1800)  # noqa: S603
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-25:]
        raise ServiceError(
            "download from Maven Central failed (is the network or a Maven mirror reachable?):\n  "
            + " ".join(cmd) + "\n" + "\n".join(output)
        )


def kafka_folder(cache: Path, version: str) -> Path:
    return cache / f"kafka-{version}"


def elasticsearch_folder(cache: Path, version: str) -> Path:
    return cache / f"elasticsearch-{version}"


def fetched(folder: Path) -> bool:
    """Whether a server's folder is complete: the marker is written last, so a fetch that stopped
    half-way is done again."""
    return (folder / _COMPLETE).exists()


def kafka_libs(cache: Path, version: str) -> Path:
    """A folder with the Kafka broker jars and a logging binding; fetched on first use."""
    target = kafka_folder(cache, version)
    libs = target / "libs"
    if fetched(target):
        return libs
    target.mkdir(parents=True, exist_ok=True)
    sg, sa, sv = SLF4J_BINDING
    (target / "pom.xml").write_text(_KAFKA_POM.format(kafka=version, sg=sg, sa=sa, sv=sv))
    shutil.rmtree(libs, ignore_errors=True)
    _mvn(
        ["dependency:copy-dependencies", f"-DoutputDirectory={libs}", "-DincludeScope=runtime"],
        cache=cache,
        cwd=target,
    )
    if not any(libs.glob(f"kafka_2.13-{version}.jar")):
        raise ServiceError(f"Maven finished but {libs} has no kafka_2.13-{version}.jar")
    (target / _COMPLETE).touch()
    return libs


def elasticsearch_home(cache: Path, version: str) -> Path:
    """The unpacked Elasticsearch integration-test distribution; fetched on first use."""
    home = elasticsearch_folder(cache, version)
    if fetched(home):
        return home
    downloads = cache / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    artifact = f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{version}:zip"
    archive = downloads / f"elasticsearch-{version}.zip"
    # Unpacking deletes the archive, so one still here is what an interrupted run left, perhaps half
    # written; Maven's copy would keep it (it does not overwrite a newer file).
    archive.unlink(missing_ok=True)
    _mvn(["dependency:copy", f"-Dartifact={artifact}", f"-DoutputDirectory={downloads}"], cache=cache, cwd=downloads)
    if not archive.exists():
        raise ServiceError(f"Maven finished but {archive} is missing")
    shutil.rmtree(home, ignore_errors=True)
    staging = cache / f".unpack-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                path = Path(zf.extract(info, staging))
                mode = (info.external_attr >> 16) & 0o777
                if mode:
                    os.chmod(path, mode | 0o444 | (0o111 if path.is_dir() else 0))
    except zipfile.BadZipFile as exc:
        archive.unlink(missing_ok=True)
        raise ServiceError(f"{archive} is not a whole zip ({exc}); it is deleted: run again to fetch it anew") from None
    (staging / f"elasticsearch-{version}").rename(home)
    shutil.rmtree(staging, ignore_errors=True)
    # Readable by the unprivileged service user; nothing in here is ever written at run time.
    for path in [home, *home.rglob("*")]:
        os.chmod(path, path.stat().st_mode | 0o444 | (0o111 if path.is_dir() else 0))
    archive.unlink()
    (home / _COMPLETE).touch()
    return home
