"""Find a JDK of at least a given major version."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from finsent.services.process import ServiceError

_SEARCH_ROOTS = (Path("/usr/lib/jvm"), Path("/opt/java"), Path("/usr/local/lib/jvm"))


def java_major(java_home: Path) -> int | None:
    """Major version of the JDK at ``java_home`` (from its ``release`` file or ``java -version``)."""
    release = java_home / "release"
    if release.exists():
        match = re.search(r'^JAVA_VERSION="(\d+)', release.read_text(errors="replace"), re.M)
        if match:
            return int(match.group(1))
    java = java_home / "bin" / "java"
    if not java.exists():
        return None
    out = subprocess.run([str(java), "-version"], capture_output=True, text=True, timeout=30).stderr  # noqa: S603
    match = re.search(r'version "(\d+)', out)
    return int(match.group(1)) if match else None


def _candidates() -> list[Path]:
    found = []
    if os.environ.get("JAVA_HOME"):
        found.append(Path(os.environ["JAVA_HOME"]))
    java = shutil.which("java")
    if java:
        found.append(Path(java).resolve().parent.parent)
    for root in _SEARCH_ROOTS:
        if root.is_dir():
            found.extend(sorted(p for p in root.iterdir() if (p / "bin" / "java").exists()))
    return found


def find_java_home(min_major: int, configured: Path | None, purpose: str, variable: str) -> Path:
    """``configured`` if given (and new enough), else the first JDK found with ``min_major``+."""
    if configured is not None:
        major = java_major(configured)
        if major is None:
            raise ServiceError(f"{variable}={configured} is not a JDK (no bin/java)")
        if major < min_major:
            raise ServiceError(f"{variable}={configured} is Java {major}; {purpose} needs Java {min_major}+")
        return configured
    seen = []
    for home in _candidates():
        major = java_major(home)
        seen.append(f"{home} (Java {major})")
        if major is not None and major >= min_major:
            return home
    raise ServiceError(
        f"{purpose} needs Java {min_major}+ and none was found"
        + (f" (found: {', '.join(seen)})" if seen else " (no java on PATH or under /usr/lib/jvm)")
        + f". Install a JDK {min_major}+ and set {variable} to its folder."
    )
