"""HTTP GET for polling sources: size-limited, timeouts, errors mapped to :class:`FetchError`."""

from __future__ import annotations

from dataclasses import dataclass, field

import httpx

from ingest.backoff import parse_retry_after


class FetchError(Exception):
    """A poll that failed as a whole; ``reason`` is a short metric label."""

    def __init__(self, reason: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after


@dataclass(slots=True)
class HttpResponse:
    status: int
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class HttpFetcher:
    """One shared ``httpx.AsyncClient``; bodies over ``max_bytes`` are refused while streaming."""

    def __init__(self, *, timeout: float = 20.0, max_bytes: int = 5_000_000, user_agent: str = "finsent") -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.user_agent = user_agent
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                timeout=self.timeout, follow_redirects=True, headers={"User-Agent": self.user_agent})

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def get(self, url: str, *, headers: dict[str, str] | None = None,
                  params: dict[str, str] | None = None) -> HttpResponse:
        """The response (200-299 or 304); any other outcome raises FetchError."""
        if self._client is None:
            await self.start()
        try:
            async with self._client.stream("GET", url, headers=headers, params=params) as response:
                declared = response.headers.get("content-length")
                if declared and declared.isdigit() and int(declared) > self.max_bytes:
                    raise FetchError("too_large", f"{url}: body of {declared} bytes is over {self.max_bytes}")
                if response.status_code == 304:
                    return HttpResponse(304, str(response.url), dict(response.headers))
                if response.status_code == 429 or response.status_code >= 400:
                    retry_after = parse_retry_after(response.headers.get("retry-after"))
                    reason = "rate_limited" if response.status_code == 429 else f"http_{response.status_code}"
                    raise FetchError(reason, f"{url}: HTTP {response.status_code}", retry_after)
                chunks, size = [], 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise FetchError("too_large", f"{url}: body is over {self.max_bytes} bytes")
                    chunks.append(chunk)
                return HttpResponse(response.status_code, str(response.url), dict(response.headers), b"".join(chunks))
        except httpx.TimeoutException:
            raise FetchError("timeout", f"{url}: timed out after {self.timeout}s") from None
        except httpx.HTTPError as exc:
            raise FetchError("network", f"{url}: {type(exc).__name__}: {exc}") from None
