"""A fetched body's ``Content-Encoding`` undone within a size limit.

httpx inflates each network chunk whole (zlib without ``max_length``) and chains one decoder per listed
encoding, so a feed could answer 1,827 bytes as ``Content-Encoding: gzip, gzip`` and a fetch limited to 5 MB
held 2 GB before its size check saw the first decoded chunk. Here every step is asked for no more than the
limit still allows: a fetch holds at most about ``max_bytes`` per encoding layer, however the body was packed.
"""

from __future__ import annotations

import zlib

# What the fetcher asks for, and so what a server may use. httpx would also ask for br and zstd once their
# packages happen to be installed; those would then arrive undecoded here.
ACCEPT_ENCODING = "gzip, deflate"
_GZIP = {"gzip", "x-gzip"}


class TooLarge(Exception):
    """The decoded body is over the limit."""


class Undecodable(Exception):
    """An encoding finsent does not decode, or data that is not what its encoding says."""


class _Inflater:
    """One gzip or deflate layer. ``deflate`` should be zlib-wrapped, but some servers send it raw (as httpx,
    the raw form is tried when the first bytes are not zlib's)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._zlib = zlib.decompressobj(zlib.MAX_WBITS | 16 if name in _GZIP else zlib.MAX_WBITS)
        self._started = False

    def decode(self, data: bytes, room: int) -> bytes:
        """What ``data`` inflates to; TooLarge as soon as that is more than ``room`` bytes."""
        try:
            out = self._inflate(data, room)
        except zlib.error as exc:
            if self.name != "deflate" or self._started:
                raise Undecodable(f"the body is not valid {self.name} data ({exc})") from None
            self._zlib = zlib.decompressobj(-zlib.MAX_WBITS)
            try:
                out = self._inflate(data, room)
            except zlib.error as again:
                raise Undecodable(f"the body is not valid deflate data ({again})") from None
        self._started = self._started or bool(data)
        return out

    def _inflate(self, data: bytes, room: int) -> bytes:
        out = bytearray()
        while True:
            ask = room - len(out) + 1  # one byte more than allowed tells "over"; never 0, which means no limit
            piece = self._zlib.decompress(data, ask)
            out += piece
            if len(out) > room:
                raise TooLarge
            data = self._zlib.unconsumed_tail
            if not data and len(piece) < ask:  # input used up and nothing held back by the output limit
                return bytes(out)

    def flush(self, room: int) -> bytes:
        out = self._zlib.flush()  # little: decode() drained the input
        if len(out) > room:
            raise TooLarge
        return out


class BoundedDecoder:
    """Undoes ``content_encoding`` (the header's value, ``None`` for none) chunk by chunk; no layer may grow past
    ``max_bytes``. Raises Undecodable for an encoding other than gzip, deflate or identity."""

    def __init__(self, content_encoding: str | None, max_bytes: int) -> None:
        names = [name.strip().lower() for name in (content_encoding or "").split(",") if name.strip()]
        for name in names:
            if name not in _GZIP | {"deflate", "identity"}:
                raise Undecodable(f"Content-Encoding {name[:40]!r} is not one finsent decodes ({ACCEPT_ENCODING})")
        self.max_bytes = max_bytes
        self._layers = [_Inflater(name) for name in reversed(names) if name != "identity"]  # the last applied first
        self._sizes = [0] * len(self._layers)

    def decode(self, data: bytes) -> bytes:
        for index, layer in enumerate(self._layers):
            data = layer.decode(data, self.max_bytes - self._sizes[index])
            self._sizes[index] += len(data)
        return data

    def flush(self) -> bytes:
        """The rest, once the body has all arrived."""
        data = b""
        for index, layer in enumerate(self._layers):
            room = self.max_bytes - self._sizes[index]
            data = layer.decode(data, room) if data else b""
            data += layer.flush(room - len(data))
            self._sizes[index] += len(data)
        return data
