"""The HTTP push endpoint: anyone with a feed POSTs documents to us.

``POST /documents`` with ``Authorization: Bearer <token>`` (``FINSENT_PUSH_TOKEN``, or a sender's own from
``FINSENT_PUSH_TOKENS_FILE``: ingest.push_tokens) and a JSON body: one document, a list of documents, or
``{"documents": [...]}`` (the shape of :class:`ingest.inbound.InboundDocument`). Answers

- 202 ``{"accepted", "duplicates", "rejected": [...], "rejected_count"}`` once Kafka acknowledged the
  good documents (bad ones of a batch are listed, the first ``MAX_SHOWN`` of them, and counted; the
  others still go through);
- 400 with the field errors when no document of the body is usable (or the body is not JSON);
- 401 without a valid token (compared in constant time); 403, nothing sent, when a document's ``source`` is not
  one the token may write (its id would be another source's, or, for the shared token, it has a character a
  look-alike of another's name needs, or it reads as another's name with other separators: ingest.push_tokens);
  413 above ``push_max_bytes`` or ``push_max_documents`` documents; 408 (and the connection closed) when the body
  is not all there ``http_body_timeout`` seconds after it was first read (it holds one of the ``max_waiting`` slots
  meanwhile);
- 429 with Retry-After above ``push_rate_limit`` requests per second per client (finsent.rate_limit);
- 503 with Retry-After when Kafka did not acknowledge (nothing was remembered, send again), or
  when ``max_waiting`` batches already wait for Kafka: during an outage each waits up to the
  producer's flush timeout, one after another, and an unbounded queue would only grow;
- 500 with a JSON error if processing failed unexpectedly (a bug; the traceback is in the log).

``GET /healthz`` (also ``/``) and ``GET /metrics`` (Prometheus) need no token; they answer only this machine's
names in the Host header (finsent.allowed_hosts; 421 to others). Without ``FINSENT_PUSH_TOKEN`` or
``FINSENT_PUSH_TOKENS_FILE`` the CLI generates a token once (see :func:`ensure_token`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr

from finsent import allowed_hosts, http_guard, rate_limit
from finsent.http_requests import BodyTooSlow, read_limited
from finsent.rate_limit import TokenBucketLimiter
from finsent.settings import Settings
from ingest.inbound import to_item
from ingest.items import FetchResult, Rejected
from ingest.pipeline import Pipeline
from ingest.push_tokens import DEFAULT_SOURCE, PushAuth, Sender

log = logging.getLogger(__name__)

LABEL = DEFAULT_SOURCE  # the metrics' source label, and the source of a document that names none
MAX_WAITING = 8  # batches of this endpoint waiting for the pipeline at once
OPEN_PAGES = frozenset({"/", "/healthz", "/metrics"})  # need no token
MAX_SHOWN = 20  # rejections an answer lists; it counts them all (a list of thousands helps no sender)


class Backlog:
    """How many push batches wait for the pipeline, and how many may."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.waiting = 0


_PIPELINE = web.AppKey("pipeline", Pipeline)
BACKLOG = web.AppKey("backlog", Backlog)


def _json(status: int, body: dict, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def _rejection(bad: Rejected) -> dict:
    entry = {"where": bad.where, "reason": bad.code, "detail": bad.detail}
    if bad.errors:
        entry["errors"] = bad.errors
    return entry


def _rejections(rejected: list[Rejected]) -> dict:
    return {"rejected": [_rejection(bad) for bad in rejected[:MAX_SHOWN]], "rejected_count": len(rejected)}


class Refused(Exception):
    """A body refused whole: ``status`` and ``error`` are the answer, ``reason`` the metric label (or None)."""

    def __init__(self, status: int, error: str, reason: str | None) -> None:
        super().__init__(error)
        self.status, self.error, self.reason = status, error, reason


def read_documents(body: bytes, max_documents: int) -> FetchResult:
    """The body's documents, validated (bad ones in ``rejected``); raises :class:`Refused`. CPU-bound on a
    full body, so the endpoint runs it in a thread: the event loop keeps answering meanwhile."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Refused(400, f"body is not valid UTF-8 JSON: {exc}", "invalid_json") from None
    if isinstance(payload, dict) and isinstance(payload.get("documents"), list):
        documents, prefix = payload["documents"], "documents"
    elif isinstance(payload, list):
        documents, prefix = payload, "documents"
    else:
        documents, prefix = [payload], "document"
    if not documents:
        raise Refused(400, "no documents in the body", None)
    if len(documents) > max_documents:  # counted before any is validated: the cost is in the validation
        raise Refused(413, f"{len(documents)} documents in one request, over the limit of {max_documents} "
                           "(FINSENT_PUSH_MAX_DOCUMENTS): send them in several requests", "too_many_documents")
    batch = FetchResult()
    for index, raw in enumerate(documents):
        where = f"{prefix}[{index}]" if prefix == "documents" else "document"
        try:
            batch.items.append(to_item(raw, default_source=LABEL, where=where))
        except Rejected as bad:
            batch.rejected.append(bad)
    return batch


def ensure_token(settings: Settings) -> Settings:
    """Settings with a push token: FINSENT_PUSH_TOKEN, else one generated once and kept in
    ``<state_dir>/ingest/push-token`` (mode 600), so a local ``make up`` works and is still
    never open to anyone without the token. With FINSENT_PUSH_TOKENS_FILE alone there is no shared token:
    whoever gave each sender its own did not ask for one more."""
    if settings.push_token is not None and settings.push_token.get_secret_value():
        return settings
    if settings.push_tokens_file is not None:
        return settings
    path = settings.state_dir / "ingest" / "push-token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    token = path.read_text("utf-8").strip()
    log.warning("FINSENT_PUSH_TOKEN is not set: the push endpoint uses the token in %s", path.resolve())
    return settings.model_copy(update={"push_token": SecretStr(token)})


def make_app(pipeline: Pipeline, settings: Settings, *, max_waiting: int = MAX_WAITING,
             auth: PushAuth | None = None, bind_host: str = "127.0.0.1") -> web.Application:
    """The endpoint; ``auth`` defaults to the settings' tokens (ValueError when there are none, or the file is bad).
    ``bind_host``, the address it will be served on, is one of the names that its pages without a token answer in the
    Host header (finsent.allowed_hosts)."""
    auth = auth or PushAuth.from_settings(settings)
    max_bytes, max_documents = settings.push_max_bytes, settings.push_max_documents
    metrics = pipeline.metrics
    backlog = Backlog(max_waiting)

    async def post_documents(request: web.Request) -> web.Response:
        sender = auth.sender(request)
        if sender is None:
            metrics.errors.labels(LABEL, "auth", "unauthorized").inc()
            return _json(401, {"error": "missing or invalid bearer token"}, {"WWW-Authenticate": 'Bearer realm="finsent"'})
        if backlog.waiting >= backlog.limit:  # checked before the body is read: a full queue holds no more bodies
            metrics.errors.labels(LABEL, "delivery", "busy").inc()
            return _json(503, {"error": f"{backlog.waiting} batches are already waiting for Kafka; send again later"},
                         {"Retry-After": "5"})
        backlog.waiting += 1
        try:
            return await handle_documents(request, sender)
        finally:
            backlog.waiting -= 1

    async def handle_documents(request: web.Request, sender: Sender) -> web.Response:
        try:
            body = await read_limited(request, max_bytes, settings.http_body_timeout)
        except BodyTooSlow as exc:
            metrics.errors.labels(LABEL, "invalid", "too_slow").inc()
            return exc.answer()
        if body is None:
            metrics.errors.labels(LABEL, "invalid", "too_large").inc()
            return _json(413, {"error": f"body is over the limit of {max_bytes} bytes"})
        try:
            batch = await asyncio.get_running_loop().run_in_executor(None, read_documents, body, max_documents)
        except Refused as refused:
            if refused.reason:
                metrics.errors.labels(LABEL, "invalid", refused.reason).inc()
            return _json(refused.status, {"error": refused.error})
        if forbidden := auth.refusal(sender, batch.items):  # whole: a sender that errs in one name errs in more
            log.warning("push refused (%s): %s", "shared token" if sender.name is None else f"sender {sender.name!r}",
                        forbidden)
            metrics.errors.labels(LABEL, "auth", "forbidden_source").inc()
            return _json(403, {"error": forbidden})
        try:
            report = await request.app[_PIPELINE].submit(LABEL, batch, summarise=True, scope=sender.scope)
        except Exception:  # a bug, not the sender's fault: a JSON answer, and the traceback in the log
            log.exception("push batch of %d document(s) failed", len(batch.items))
            metrics.errors.labels(LABEL, "delivery", "unexpected").inc()
            return _json(500, {"error": "internal error while processing the documents; see the server log"})
        rejected = _rejections(report.rejected)
        if report.failed:
            return _json(503, {"error": f"{len(report.failed)} document(s) not acknowledged by Kafka; send again",
                               "accepted": report.produced, "duplicates": report.duplicates, **rejected},
                         {"Retry-After": "5"})
        if report.produced == 0 and report.duplicates == 0:
            return _json(400, {"error": "no valid document", **rejected})
        return _json(202, {"accepted": report.produced, "duplicates": report.duplicates, **rejected,
                           "ids": [doc.id for doc in report.documents]})

    async def healthz(_: web.Request) -> web.Response:
        return _json(200, {"status": "ok"})

    async def metrics_page(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    limiter = TokenBucketLimiter(settings.push_rate_limit, settings.push_rate_burst)
    limited = rate_limit.middleware(limiter, exempt=OPEN_PAGES,
                                    on_limited=lambda _: metrics.errors.labels(LABEL, "auth", "rate_limited").inc())
    # The pages without a token answer only this machine's names (DNS rebinding); a sender has its token.
    host_checked = allowed_hosts.middleware(allowed_hosts.AllowedHosts.of(settings, bind_host), paths=OPEN_PAGES)
    # client_max_size above our own limit: read_body() enforces it and answers a clean 413.
    app = web.Application(client_max_size=max_bytes + 1024, middlewares=[host_checked, limited])
    app[_PIPELINE] = pipeline
    app[BACKLOG] = backlog
    app.router.add_post("/documents", post_documents)
    app.router.add_get("/", healthz)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    return app


async def serve(app: web.Application, host: str, port: int, settings: Settings, stop: asyncio.Event) -> None:
    """Serve the endpoint until ``stop`` is set, with the header deadline and per-client cap of finsent.http_guard."""
    await http_guard.serve(app, host, port, settings, stop, access_log=None,
                           metrics=http_guard.GuardMetrics(app[_PIPELINE].metrics.registry, "push"),
                           started=lambda _: log.info("push endpoint on http://%s:%d/documents", host, port))
