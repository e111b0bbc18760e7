"""Webhook signatures: how finsent signs a body and how a receiver checks it.

Standard library only, so a receiver can copy this file as it is (ports to other languages
are in ``alerts/WEBHOOKS.md``). The scheme::

    X-Finsent-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>
    X-Finsent-Idempotency-Key: <the same key on every attempt of the same alert>

A receiver recomputes the HMAC over the raw body bytes exactly as received (before any JSON
parsing), compares in constant time, rejects timestamps older than a tolerance (replays),
and drops an idempotency key it has already processed (retries after a lost response). The
header is not signed: take the key from the verified body (``idempotency_key`` of the JSON
format), as ``alerts.receiver`` does, or a replay with the header changed passes as new.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Finsent-Signature"
IDEMPOTENCY_HEADER = "X-Finsent-Idempotency-Key"
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    """The signature header is missing, malformed, stale or does not match the body."""


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


def compute(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``b"<timestamp>." + body``."""
    message = str(int(timestamp)).encode("ascii") + b"." + body
    return hmac.new(_as_bytes(secret), message, hashlib.sha256).hexdigest()


def sign(secret: str | bytes, body: bytes, timestamp: int | None = None) -> str:
    """The value of the ``X-Finsent-Signature`` header for ``body``."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={t},v1={compute(secret, t, body)}"


def verify(secret: str | bytes, body: bytes, header: str | None, *,
           tolerance: float = DEFAULT_TOLERANCE_SECONDS, now: float | None = None) -> int:
    """Check ``header`` against ``body``; return its timestamp or raise :class:`SignatureError`.

    Several ``v1=`` entries are accepted (any match passes), though finsent sends one. While the
    secret is being rotated, call this with the new and then the old secret (WEBHOOKS.md).
    """
    if not header:
        raise SignatureError(f"missing {SIGNATURE_HEADER} header")
    timestamp = None
    candidates = []
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if name == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError(f"timestamp {value!r} is not an integer") from None
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError(f"malformed {SIGNATURE_HEADER} header: expected t=<unix>,v1=<hex>")
    current = time.time() if now is None else now
    if tolerance is not None and abs(current - timestamp) > tolerance:
        raise SignatureError(f"timestamp {timestamp} is outside the tolerance of {tolerance:g}s")
    expected = bytes.fromhex(compute(secret, timestamp, body))
    if not any(hmac.compare_digest(expected, _digest(candidate)) for candidate in candidates):
        raise SignatureError("signature does not match the body")
    return timestamp


def _digest(candidate: str) -> bytes:
    """A ``v1=`` value as the bytes it stands for; anything but hex matches nothing. Compared as text,
    ``hmac.compare_digest`` raises TypeError for a non-ASCII value, a 500 instead of a refusal."""
    try:
        return bytes.fromhex(candidate)
    except ValueError:
        return b""
