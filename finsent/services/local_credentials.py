"""The password of the local Elasticsearch that `finsent services up` runs.

Elasticsearch does not check the Host header, so without security a web page that rebinds its name to 127.0.0.1
could read or delete the indices from a browser on this machine. The local node therefore runs with security on and
one user, :data:`USER`, whose password is generated at its first start. The password is kept per port in the cache
folder, readable by its owner only: every finsent process of this machine finds the server there, whatever its
state folder, and a client given no credentials of its own uses it for a loopback URL.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import bcrypt

from finsent.services.process import ServiceError

USER = "finsent"
ROLE = "superuser"  # finsent creates and deletes indices and templates, and tests set cluster settings


def password_path(cache_dir: Path, port: int) -> Path:
    return cache_dir / "credentials" / f"elasticsearch-{port}"


def read_password(cache_dir: Path, port: int) -> str | None:
    """The local server's password on ``port``, or None when no server was ever started there (or the file is
    not this user's to read: the client then gets the server's own 401)."""
    try:
        return password_path(cache_dir, port).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


def ensure_password(cache_dir: Path, port: int) -> str:
    """The password for the server on ``port``: the one kept, or a new one written (mode 600) for good."""
    if (kept := read_password(cache_dir, port)) is not None:
        return kept
    path = password_path(cache_dir, port)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    password = secrets.token_urlsafe(24)
    # Written whole under another name, then linked: two starts at once keep one password, the first one linked.
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".new-")  # mode 600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(password + "\n")
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
    finally:
        os.unlink(temporary)
    if (kept := read_password(cache_dir, port)) is None:  # there, but empty or not ours to read
        raise ServiceError(f"{path} holds no password this user can read: the local Elasticsearch would take one no "
                           "client knows. Fix its owner, or remove it (a new password is made at the next start)")
    return kept


def realm_files(password: str) -> dict[str, str]:
    """Elasticsearch's file realm (``config/users`` and ``config/users_roles``) holding :data:`USER` alone."""
    digest = bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(10, prefix=b"2a")).decode("ascii")
    return {"users": f"{USER}:{digest}\n", "users_roles": f"{ROLE}:{USER}\n"}


def is_loopback_http(url: str) -> bool:
    """Whether ``url`` is plain http to this machine: the local server, or a relay to it."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False
