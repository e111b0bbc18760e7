"""Canonical URLs: one spelling per article, so the same story from two feeds is one id.

Lower-cases scheme and host, drops default ports and tracking parameters (``utm_*``, ``fbclid``,
``gclid``, ``ref``…), and sorts what is left of the query. The fragment stays: a live blog's entries
share a page and differ by it (``…/live#post-1``, ``#post-2``); one made only of tracking parameters goes.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

# Conservative on purpose: dropping a parameter that selects content would merge two articles.
_TRACKING = frozenset({
    "fbclid", "gclid", "dclid", "msclkid", "yclid", "mc_cid", "mc_eid", "igshid", "ref", "ref_src",
    "ref_url", "cmpid", "ncid", "smid", "guccounter", "guce_referrer", "guce_referrer_sig", "_ga",
    "xtor",  # feeds' own tag, often in the fragment: "…/article#xtor=RSS-3"
})
_TRACKING_PREFIXES = ("utm_", "mkt_", "pk_", "hsa_", "oly_")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def is_tracking(name: str) -> bool:
    lowered = name.lower()
    return lowered in _TRACKING or lowered.startswith(_TRACKING_PREFIXES)


def canonical_url(url: str | None) -> str | None:
    """The canonical form of an http(s) URL; None for anything that is not one."""
    if not url:
        return None
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname.lower().rstrip(".")
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port in (None, _DEFAULT_PORTS[scheme]) else f"{host}:{port}"
    query = sorted((k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if not is_tracking(k))
    path = parts.path or "/"
    return urlunsplit((scheme, netloc, path, urlencode(query), _fragment(parts.fragment)))


def _fragment(fragment: str) -> str:
    """The fragment, or "" when it is only tracking parameters (``#utm_source=rss``)."""
    pairs = parse_qsl(fragment, keep_blank_values=True)
    return "" if pairs and all(is_tracking(name) for name, _ in pairs) else fragment
