"""Known vulnerabilities in the pinned dependencies: ``python -m finsent.dependency_audit constraints.txt``.

Reads PyPI's JSON API, whose ``vulnerabilities`` field carries the advisories (PYSEC, GHSA, CVE)
that affect a release. pip-audit asks for ``/pypi/NAME/VERSION/json``; the registry this project
is built against serves only ``/pypi/NAME/json`` (the latest release), and osv.dev is out of reach,
so pip-audit cannot run here. This audit asks for the release first and falls back to the project
record, which answers only when the pin *is* the latest release. A pin neither can answer is
listed as not audited: a warning, or a failure with ``--strict``. Any advisory fails the audit.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import typer
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

DEFAULT_INDEX = "https://pypi.org/pypi"


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    line: int


@dataclass
class Finding:
    name: str
    version: str
    status: str  # "clean", "vulnerable" or "unaudited"
    source: str = ""  # which record answered: "release" or "project (latest release)"
    advisories: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""


def parse_pins(text: str, where: str = "constraints") -> list[Pin]:
    """``name==version`` lines (comments, blanks and markers allowed); anything else is an error naming the line."""
    pins = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            req = Requirement(line)
        except InvalidRequirement as exc:
            raise ValueError(f"{where}:{number}: not a requirement ({exc})") from None
        exact = [s.version for s in req.specifier if s.operator == "=="]
        if len(exact) != 1:
            raise ValueError(f"{where}:{number}: {line!r} is not pinned with ==")
        pins.append(Pin(canonicalize_name(req.name), exact[0], number))
    return pins


def active_advisories(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The record's advisories that were not withdrawn, reduced to what a reader acts on."""
    return [{"id": v.get("id"), "aliases": v.get("aliases") or [], "fixed_in": v.get("fixed_in") or [],
             "summary": (v.get("summary") or v.get("details") or "")[:200], "link": v.get("link")}
            for v in record.get("vulnerabilities") or [] if not v.get("withdrawn")]


def judge(pin: Pin, release: dict[str, Any] | None, project: dict[str, Any] | None) -> Finding:
    """The finding for one pin, from its release record or (failing that) its project record."""
    if release is not None:
        record, source = release, "release"
    elif project is not None and _same_version(project.get("info", {}).get("version"), pin.version):
        record, source = project, "project (latest release)"
    else:
        latest = (project or {}).get("info", {}).get("version")
        reason = ("the index has no record of this project" if project is None else
                  f"the index serves no per-release record and the latest release is {latest}")
        return Finding(pin.name, pin.version, "unaudited", reason=reason)
    advisories = active_advisories(record)
    return Finding(pin.name, pin.version, "vulnerable" if advisories else "clean", source, advisories)


def _same_version(a: str | None, b: str) -> bool:
    try:
        return a is not None and Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code == 429 or exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError)


@retry(retry=retry_if_exception(_transient), stop=stop_after_attempt(4),
       wait=wait_exponential(multiplier=0.5, max=8), reraise=True)
def _get_json(client: httpx.Client, url: str) -> dict[str, Any] | None:
    """The JSON at ``url``; None on 404. Transient failures are retried, others raised."""
    response = client.get(url)
    if response.status_code == 404:
        return None
    response.raise_for_status()
    return response.json()


def audit(pins: list[Pin], *, index: str = DEFAULT_INDEX, timeout: float = 30.0) -> list[Finding]:
    findings = []
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        for pin in pins:
            release = _get_json(client, f"{index}/{pin.name}/{pin.version}/json")
            project = None if release is not None else _get_json(client, f"{index}/{pin.name}/json")
            findings.append(judge(pin, release, project))
    return findings


def main(constraints: Path = typer.Argument(Path("constraints.txt"), help="File of name==version pins"),
         index: str = typer.Option(DEFAULT_INDEX, help="PyPI JSON API base URL"),
         strict: bool = typer.Option(False, help="Fail when a pin could not be audited"),
         as_json: bool = typer.Option(False, "--json", help="Print the findings as JSON")) -> None:
    """Fail (exit 1) when a pinned dependency has a known vulnerability."""
    try:
        pins = parse_pins(constraints.read_text(encoding="utf-8"), str(constraints))
    except (OSError, ValueError) as exc:
        typer.echo(f"audit: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        findings = audit(pins, index=index.rstrip("/"))
    except httpx.HTTPError as exc:
        typer.echo(f"audit: cannot read the index at {index}: {exc}", err=True)
        raise typer.Exit(2) from None
    vulnerable = [f for f in findings if f.status == "vulnerable"]
    unaudited = [f for f in findings if f.status == "unaudited"]
    if as_json:
        typer.echo(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        for f in vulnerable:
            for adv in f.advisories:
                fixed = ", ".join(adv["fixed_in"]) or "no fixed release"
                typer.echo(f"VULNERABLE {f.name}=={f.version}: {adv['id']} ({fixed}) {adv['summary']}")
        for f in unaudited:
            typer.echo(f"not audited {f.name}=={f.version}: {f.reason}", err=True)
        typer.echo(f"audit: {len(pins)} pins, {len(findings) - len(unaudited)} audited, "
                   f"{len(vulnerable)} vulnerable, {len(unaudited)} not audited")
    if vulnerable or (strict and unaudited):
        raise typer.Exit(1)


if __name__ == "__main__":
    typer.run(main)
