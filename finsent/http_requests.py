"""What the token-protected HTTP endpoints (ingest push, labels API) read from a request the same way:
the bearer token and a body with a size limit."""

from __future__ import annotations

import hmac

from aiohttp import web


def bearer_matches(request: web.Request, token: bytes) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>``, compared in constant time.

    aiohttp hands header bytes that are not UTF-8 over as surrogate escapes; encoding them back the
    same way makes such a header a wrong token (401), not an encoding error (500)."""
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return False
    return hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token)


async def read_limited(request: web.Request, max_bytes: int) -> bytes | None:
    """The whole body, or None when it is over ``max_bytes`` (checked while reading too: a chunked
    body states no length). One ``read(n)`` returns what has arrived so far, not n bytes, hence the loop."""
    if request.content_length is not None and request.content_length > max_bytes:
        return None
    chunks, size = [], 0
    while chunk := await request.content.read(65536):
        size += len(chunk)
        if size > max_bytes:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
