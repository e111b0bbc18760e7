"""Webhook delivery: signed POSTs from the outbox, retried with exponential backoff and jitter.

Every attempt of one alert carries the same ``X-Finsent-Idempotency-Key`` and the same body
bytes (rebuilt deterministically from the stored alert); only the signature's timestamp is
fresh, so receivers can both reject replays and drop duplicates.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from alerts import signing
from alerts.attempt_deadline import AttemptDeadline
from alerts.metrics import AlertMetrics
from alerts.outbox import DueDelivery, Outbox
from alerts.payload import body_for
from alerts.rules import Webhook
from finsent.schemas import Alert

log = logging.getLogger(__name__)

USER_AGENT = "finsent-alerts/0.1"
# A receiver that says "gone" will not come back; everything else (5xx, 429, timeouts, refused
# connections, even 4xx from a half-deployed receiver) is worth another try.
_PERMANENT_STATUS = {410}
# Refused for what it is (a body the receiver cannot take): the same bytes get the same answer. At the head of its
# webhook's queue it would hold back every newer alert until give_up_after, so after a few tries it goes to the
# dead letters (`finsent alerts retry` sends it again once the receiver is fixed).
_REFUSED_CONTENT = {400, 413, 415, 422}
REFUSED_CONTENT_TRIES = 3
# Of a receiver's answer only the status and 200 characters of the body are used: the rest is never read,
# however much the receiver sends.
MAX_ANSWER_BYTES = 4096


def backoff_delay(hook: Webhook, attempt: int, rng: random.Random) -> float:
    """Seconds before attempt ``attempt + 1``: the webhook's step (exponential, capped) with "equal
    jitter", so that retries of many alerts spread out but never come back sooner than half the step."""
    step = hook.backoff_step(attempt)
    return step / 2 + rng.uniform(0, step / 2)


@dataclass(frozen=True, slots=True)
class Answer:
    """A receiver's answer: its status and headers, and the start of its body."""

    status_code: int
    headers: httpx.Headers
    text: str


def retry_after_seconds(response: Answer, now: float) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - now)
    except (TypeError, ValueError):
        return None


class AttemptTimedOut(Exception):
    """The receiver's answer was not complete within the webhook's ``timeout``."""


def post(client: httpx.Client, hook: Webhook, alert: Alert, secret: str, *, attempt: int, now: float) -> Answer:
    """One signed POST of ``alert`` to ``hook``, cut off after ``hook.timeout`` seconds in all (a
    client that keeps connections alive is cut off only on new ones: :mod:`alerts.attempt_deadline`);
    raises httpx errors (and others) for transport failures, AttemptTimedOut when the time ran out.
    ``secret`` signs it unless the webhook has its own."""
    body = body_for(alert, hook.format)
    headers = {
        **hook.headers,
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Accept-Encoding": "identity",  # the answer's head is read raw: no compressed body to inflate
        signing.SIGNATURE_HEADER: signing.sign(hook.signing_secret(secret), body, int(now)),
        signing.IDEMPOTENCY_HEADER: alert.idempotency_key,
        "X-Finsent-Attempt": str(attempt),
    }
    # An answer whose status line arrived counts, even when the deadline cut its body short.
    with AttemptDeadline(hook.timeout) as deadline:
        try:
            with client.stream("POST", hook.url, content=body, headers=headers, timeout=hook.timeout,
                               extensions={"trace": deadline.trace}) as response:
                return Answer(response.status_code, response.headers, _head(response))
        except Exception as exc:
            # httpx's own timeout is the same number of seconds for one connect or read, so it too means the
            # attempt's time is up: on a loaded machine it can fire before the deadline's thread gets to run.
            if deadline.expired or isinstance(exc, httpx.TimeoutException):
                raise AttemptTimedOut(f"no complete answer within {hook.timeout:g} s") from exc
            raise


def _head(response: httpx.Response) -> str:
    """The first MAX_ANSWER_BYTES of the body, decoded; what arrived when the body was cut short."""
    head = bytearray()
    try:
        for chunk in response.iter_raw(MAX_ANSWER_BYTES):
            head += chunk
            if len(head) >= MAX_ANSWER_BYTES:
                break
    except httpx.HTTPError:
        pass
    try:
        return bytes(head[:MAX_ANSWER_BYTES]).decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return bytes(head[:MAX_ANSWER_BYTES]).decode("utf-8", errors="replace")


def webhook_client() -> httpx.Client:
    """The client :func:`post` sends with. No keep-alive: a new connection per attempt is what lets
    post() cut off a trickling receiver. No redirects: a webhook's URL is where the alert goes."""
    return httpx.Client(follow_redirects=False, limits=httpx.Limits(max_keepalive_connections=0))


class Dispatcher:
    """Drains due deliveries from the outbox. ``on_dead(alert, webhook, error)`` is told about each
    delivery it gave up (the service turns it into a dead letter).

    Each webhook's deliveries go one at a time, in its queue's order (:mod:`alerts.outbox`), on a
    worker thread of their own; a pass starts work for the webhooks that are not busy and waits at
    most ``pass_wait`` seconds for it, so a slow receiver holds up neither the other webhooks nor
    the next pass. One caller at a time (the service's dispatch loop).
    """

    def __init__(self, outbox: Outbox, webhooks: dict[str, Webhook], secret: str, metrics: AlertMetrics, *,
                 clock: Callable[[], float] = time.time, rng: random.Random | None = None,
                 on_dead: Callable[[Alert, str, str], None] | None = None,
                 on_change: Callable[[], None] | None = None, pass_wait: float = 1.0) -> None:
        self.outbox = outbox
        self.webhooks = webhooks
        self._secret = secret
        self.metrics = metrics
        self.clock = clock
        self.rng = rng or random.Random()
        self.on_dead = on_dead
        self.on_change = on_change
        self.pass_wait = pass_wait
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._busy: dict[str, Future] = {}  # webhook -> the work it is doing
        self._made = 0  # attempts recorded since the last pass returned
        self._made_lock = threading.Lock()
        self._closing = threading.Event()
        self._should_stop: Callable[[], bool] = lambda: False  # the latest pass's, which every worker heeds

    def start(self) -> Dispatcher:
        self._client = webhook_client()
        # A worker per webhook (and one for deliveries to webhooks no longer configured), up to 32.
        self._pool = ThreadPoolExecutor(max_workers=min(32, len(self.webhooks) + 1), thread_name_prefix="alerts-hook")
        return self

    def close(self) -> None:
        """Start no further attempt; those in flight are recorded before the client goes."""
        self._closing.set()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None

    def deliver_due(self, limit: int = 100, should_stop: Callable[[], bool] | None = None) -> int:
        """Start the due deliveries of each webhook not busy with earlier ones (at most ``limit`` each), and
        wait for the webhooks' work up to ``pass_wait`` seconds; returns the attempts recorded meanwhile.

        Once a webhook's delivery fails, the rest of its queue waits for that one's retry, without spending
        an attempt. Once ``should_stop()`` says so (the engine is stopping), no further attempt starts, the
        pass waits for those in flight, and the rest stay due in the outbox.
        """
        should_stop = self._should_stop = should_stop or (lambda: False)
        self._reap()
        if not should_stop():
            self._start_idle(limit)
        self._await(should_stop)
        self._reap()
        with self._made_lock:
            made, self._made = self._made, 0
        if made and self.on_change is not None:
            self.on_change()
        return made

    def _start_idle(self, limit: int) -> None:
        by_hook: dict[str, list[DueDelivery]] = {}
        for item in self.outbox.due(self.clock(), limit, skip=list(self._busy)):
            by_hook.setdefault(item.webhook, []).append(item)
        for webhook, group in by_hook.items():
            self._busy[webhook] = self._pool.submit(self._deliver_to, group)

    def _await(self, should_stop: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.pass_wait
        while running := [work for work in self._busy.values() if not work.done()]:
            if should_stop():
                futures.wait(running)  # each ends after the attempt it is making
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            futures.wait(running, timeout=min(left, 0.1))  # and look at should_stop again

    def _reap(self) -> None:
        """Forget finished work; log what failed outside an attempt (the outbox could not be written, say)."""
        for webhook, work in list(self._busy.items()):
            if work.done():
                del self._busy[webhook]
                if (exc := work.exception()) is not None:
                    log.error("deliveries to %s stopped: %s: %s", webhook, type(exc).__name__, exc, exc_info=exc)
                    self.metrics.engine_errors.labels("dispatch").inc()  # else only a log line says it

    def _deliver_to(self, group: list[DueDelivery]) -> None:
        for item in group:
            if self._should_stop() or self._closing.is_set():
                return
            outcome = self.attempt(item)
            with self._made_lock:
                self._made += 1
            if outcome == "retry":
                return  # the rest of this webhook's queue is due only after this one's retry

    def attempt(self, item: DueDelivery) -> str:
        """Try one delivery and record it; returns "delivered", "retry" or "dead"."""
        hook = self.webhooks.get(item.webhook)
        number = item.attempts + 1
        if hook is None:
            error = f"webhook {item.webhook!r} is not in the rules file any more"
            return self._dead(item, error, outcome="unconfigured")
        started = time.perf_counter()
        now = time.time()  # the signature's timestamp is real time, whatever clock schedules retries
        try:
            response = post(self._client, hook, item.alert, self._secret, attempt=number, now=now)
        except Exception as exc:
            # Not only httpx errors: a host the IDNA codec refuses raises UnicodeError at connect time.
            # Whatever it is, it is this delivery's failed attempt; raising would leave the row due and
            # first in line on every pass, ahead of every other webhook's alerts.
            self.metrics.latency.labels(item.webhook).observe(time.perf_counter() - started)
            return self._retry_or_dead(item, hook, f"{type(exc).__name__}: {exc or 'no detail'}", None)
        self.metrics.latency.labels(item.webhook).observe(time.perf_counter() - started)
        if 200 <= response.status_code < 300:
            delivered = datetime.now(UTC)
            self.outbox.record_attempt(item.key, item.webhook, ok=True, error=None, at=delivered, retry_at=None)
            self.metrics.sent.labels(item.webhook).inc()
            self.metrics.attempts.labels(item.webhook, "delivered").inc()
            self.metrics.end_to_end.labels(item.webhook).observe(
                max(0.0, (delivered - item.alert.created_at).total_seconds()))
            log.info("alert %s delivered to %s (attempt %d)", item.key, item.webhook, number)
            return "delivered"
        error = f"HTTP {response.status_code}: {response.text[:200]}"
        if response.status_code in _PERMANENT_STATUS or (response.status_code in _REFUSED_CONTENT
                                                         and number >= REFUSED_CONTENT_TRIES):
            return self._dead(item, error, outcome="rejected")
        return self._retry_or_dead(item, hook, error, retry_after_seconds(response, now))

    def _retry_or_dead(self, item: DueDelivery, hook: Webhook, error: str, retry_after: float | None) -> str:
        """Retry with backoff until ``give_up_after`` has passed since the delivery was queued (or, when set,
        ``max_attempts`` are spent, whichever comes first); the last retry comes at that time, not past it."""
        number, now = item.attempts + 1, self.clock()
        give_up_at = item.queued_at + hook.give_up_after.total_seconds()
        if now >= give_up_at or (hook.max_attempts is not None and number >= hook.max_attempts):
            return self._dead(item, error, outcome="error")
        delay = backoff_delay(hook, number, self.rng)
        if retry_after is not None:
            delay = max(delay, min(retry_after, hook.backoff_max.total_seconds()))
        retry_at = min(now + delay, give_up_at)
        log.warning("alert %s to %s: attempt %d failed (%s); retrying in %.1fs",
                    item.key, item.webhook, number, error, retry_at - now)
        self.metrics.attempts.labels(item.webhook, "retry").inc()
        self.outbox.record_attempt(item.key, item.webhook, ok=False, error=error, at=datetime.now(UTC),
                                   retry_at=retry_at)
        return "retry"

    def _dead(self, item: DueDelivery, error: str, *, outcome: str) -> str:
        log.error("alert %s to %s: giving up after %d attempts in %.0f s: %s", item.key, item.webhook,
                  item.attempts + 1, max(0.0, self.clock() - item.queued_at), error)
        self.outbox.record_attempt(item.key, item.webhook, ok=False, error=error, at=datetime.now(UTC), retry_at=None)
        self.metrics.failed.labels(item.webhook).inc()
        self.metrics.attempts.labels(item.webhook, outcome).inc()
        if self.on_dead is not None:
            self.on_dead(item.alert, item.webhook, error)
        return "dead"
