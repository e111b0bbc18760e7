"""Import saved objects through Kibana's saved-objects API (idempotent: ``overwrite=true``).

``POST /api/saved_objects/_import?overwrite=true`` (``/s/<space>/api/...`` for a space) with
the NDJSON as the multipart ``file`` field and the ``kbn-xsrf`` header Kibana demands of
every write. Kibana answers 200 even when objects fail; those per-object errors are turned
into one clear message. While Kibana starts (connection refused, 503) the import retries.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from finsent.settings import without_credentials


class KibanaError(RuntimeError):
    """The import failed; the message says why (and which objects, when Kibana said so)."""


@dataclass(frozen=True)
class KibanaTarget:
    url: str
    username: str | None = None
    password: str | None = None
    api_key: str | None = None
    space: str | None = None
    verify: bool = True

    def shown(self, url: str | None = None) -> str:
        """``url`` (default: Kibana's) as messages quote it: a password in a ``--kibana`` URL is masked."""
        return without_credentials(self.url if url is None else url)

    def import_url(self) -> str:
        base = self.url.rstrip("/")
        if self.space and self.space != "default":
            base += f"/s/{self.space}"
        return f"{base}/api/saved_objects/_import"

    def headers(self) -> dict[str, str]:
        headers = {"kbn-xsrf": "finsent"}
        if self.api_key:
            headers["Authorization"] = f"ApiKey {self.api_key}"
        return headers

    def auth(self) -> tuple[str, str] | None:
        if self.username and not self.api_key:
            return (self.username, self.password or "")
        return None


@dataclass
class ImportResult:
    success_count: int
    warnings: list[str] = field(default_factory=list)


def describe_errors(errors: list[dict[str, Any]]) -> str:
    lines = []
    for err in errors:
        what = f"{err.get('type', '?')} {err.get('id', '?')!r}"
        if err.get("title") or err.get("meta", {}).get("title"):
            what += f" ({err.get('title') or err['meta']['title']})"
        detail = err.get("error", {})
        reason = detail.get("type", "error")
        if detail.get("references"):
            missing = ", ".join(f"{r.get('type')} {r.get('id')!r}" for r in detail["references"])
            reason += f": {missing}"
        elif detail.get("message"):
            reason += f": {detail['message']}"
        lines.append(f"{what}: {reason}")
    return "; ".join(lines)


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:300] or response.reason_phrase
    if isinstance(body, dict):
        return str(body.get("message") or body.get("error") or body)[:300]
    return str(body)[:300]


def import_ndjson(ndjson: str, target: KibanaTarget, *, wait: float = 0.0, timeout: float = 30.0,
                  sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                  transport: httpx.BaseTransport | None = None) -> ImportResult:
    """Send the objects; retry connection failures and 5xx answers for up to ``wait`` seconds."""
    deadline = clock() + wait
    delay = 1.0
    with httpx.Client(verify=target.verify, timeout=timeout, transport=transport) as client:
        while True:
            try:
                response = client.post(
                    target.import_url(), params={"overwrite": "true"}, headers=target.headers(),
                    auth=target.auth(), files={"file": ("finsent.ndjson", ndjson.encode("utf-8"),
                                                        "application/ndjson")})
            except httpx.TransportError as exc:
                problem = f"cannot reach Kibana at {target.shown()}: {exc or type(exc).__name__}"
            else:
                if response.status_code < 500:
                    return _result(response, target)
                problem = f"Kibana answered HTTP {response.status_code}: {_message(response)}"
            if clock() + delay > deadline:
                raise KibanaError(problem)
            sleep(delay)
            delay = min(delay * 2, 10.0)


def _result(response: httpx.Response, target: KibanaTarget) -> ImportResult:
    status = response.status_code
    if status in (401, 403):
        raise KibanaError(f"Kibana refused the credentials (HTTP {status}): {_message(response)}")
    if status == 404:
        raise KibanaError(f"{target.shown(target.import_url())} not found (HTTP 404): is {target.shown()} a Kibana, "
                          f"and does the space exist? {_message(response)}")
    if status != 200:
        raise KibanaError(f"Kibana rejected the import (HTTP {status}): {_message(response)}")
    try:
        body = response.json()
    except ValueError:
        raise KibanaError(f"Kibana's answer is not JSON: {response.text[:200]!r}") from None
    if not isinstance(body, dict) or "success" not in body:
        raise KibanaError(f"unexpected answer from Kibana: {str(body)[:300]}")
    if not body["success"] or body.get("errors"):
        raise KibanaError(f"{len(body.get('errors', []))} object(s) failed to import "
                          f"({body.get('successCount', 0)} imported): {describe_errors(body.get('errors', []))}")
    warnings = [w.get("message", str(w)) if isinstance(w, dict) else str(w) for w in body.get("warnings", [])]
    return ImportResult(int(body.get("successCount", 0)), warnings)
