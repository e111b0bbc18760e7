"""What the token-protected HTTP endpoints (ingest push, labels API) read from a request the same way:
the bearer token and a body with a size limit and a deadline."""

from __future__ import annotations

import asyncio
import hmac

import orjson
from aiohttp import web


def bearer_matches(request: web.Request, token: bytes) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>``, compared in constant time.

    aiohttp hands header bytes that are not UTF-8 over as surrogate escapes; encoding them back the
    same way makes such a header a wrong token (401), not an encoding error (500)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token)


class BodyTooSlow(Exception):
    """The body did not arrive within its deadline (FINSENT_HTTP_BODY_TIMEOUT)."""

    def __init__(self, deadline: float) -> None:
        super().__init__(f"the body did not arrive within {deadline:g} s (FINSENT_HTTP_BODY_TIMEOUT)")

    def answer(self) -> web.Response:
        """408 with the reason, and the connection closed: the rest of the body may still be on its way."""
        response = web.Response(status=408, body=orjson.dumps({"error": str(self)}), content_type="application/json")
        response.force_close()
        return response


async def read_limited(request: web.Request, max_bytes: int, deadline: float | None = None) -> bytes | None:
    """The whole body, or None when it is over ``max_bytes`` (checked while reading too: a chunked
    body states no length). One ``read(n)`` returns what has arrived so far, not n bytes, hence the loop.
    Raises :class:`BodyTooSlow` when the body is not all there ``deadline`` seconds after the call: a
    sender that trickles its body would hold the endpoint's batch slot, and a connection, for as long as it likes."""
    if request.content_length is not None and request.content_length > max_bytes:
        return None
    chunks, size = [], 0
    try:
        async with asyncio.timeout(deadline):
            while chunk := await request.content.read(65536):
                size += len(chunk)
                if size > max_bytes:
                    return None
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTooSlow(deadline) from None
    return b"".join(chunks)

