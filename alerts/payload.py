"""What an alert looks like on the wire: its idempotency key, dashboard link and webhook bodies.

The outbox stores the alert as it was raised, and each delivery attempt builds its body from that
alert the same way, so every attempt sends exactly the same bytes (only the signature's timestamp
changes), across an upgrade too: a field added since is left out of the bodies of the alerts stored
without it.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from datetime import datetime
from typing import Literal
from urllib.parse import quote

import orjson

from finsent.schemas import Alert

Format = Literal["json", "slack"]


def idempotency_key(rule: str, ticker: str | None, window: str | None, window_start: datetime | None) -> str:
    """Stable across processes and restarts: one key per (rule, ticker, window, window_start)."""
    start = window_start.isoformat() if window_start is not None else ""
    raw = "\x1f".join((rule, ticker or "", window or "", start))
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:40]


def ticker_query(ticker: str | None) -> str:
    """A URL-encoded KQL clause for the alert's ticker, which documents carry in ``tickers`` and
    aggregates and alerts in ``ticker`` (either field alone blanks some panels); empty without a
    ticker, where ``tickers:`` alone would be a KQL syntax error."""
    return quote(f"tickers:{ticker} or ticker:{ticker}", safe=":") if ticker else ""


def dashboard_url(template: str | None, *, rule: str, ticker: str | None, window: str | None,
                  start: datetime | None, end: datetime | None) -> str | None:
    """Fill ``{ticker} {query} {window} {rule} {from} {to}`` in the template (``{query}``: see
    :func:`ticker_query`); unknown names become empty."""
    if not template:
        return None
    values = defaultdict(str, rule=rule, ticker=ticker or "", query=ticker_query(ticker), window=window or "",
                         **{"from": start.isoformat() if start else "", "to": end.isoformat() if end else ""})
    try:
        return template.format_map(values)
    except (ValueError, IndexError):
        return template  # a template with stray braces is still a useful link


def json_body(alert: Alert) -> bytes:
    """The generic body: the alert itself, without the delivery bookkeeping (status, attempts). An alert stored
    before ``z`` existed has no ``z`` set (not even None): its retries keep the bytes of its earlier attempts."""
    unset = {"z"} - alert.model_fields_set
    return orjson.dumps(alert.model_dump(mode="json", exclude={"status", "attempts", *unset}))


def slack_body(alert: Alert) -> bytes:
    """Slack incoming-webhook shape: ``text`` (notifications, fallbacks) plus Block Kit ``blocks``."""
    title = f"[finsent] {alert.rule}" + (f" · {alert.ticker}" if alert.ticker else "")
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_escape(alert.message)[:2900]}},
    ]
    facts = [f"*{name}:* {value}" for name, value in (
        ("kind", alert.kind), ("window", alert.window), ("value", _num(alert.value)),
        ("baseline", _num(alert.baseline)), ("z", _num(alert.z)), ("threshold", _num(alert.threshold)),
    ) if value is not None]
    if facts:
        blocks.append({"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in facts[:10]]})
    if alert.documents:
        lines = []
        for doc in alert.documents[:10]:
            label = _slack_escape(doc.title or doc.id)[:200]
            link = f"<{_slack_url(doc.url)}|{label}>" if doc.url else label
            lines.append(f"• {link} ({doc.score:+.2f})")
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:2900]}})
    if alert.dashboard_url:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open dashboard"}, "url": alert.dashboard_url},
        ]})
    blocks.append({"type": "context", "elements": [
        {"type": "mrkdwn", "text": f"key `{alert.idempotency_key}` · {alert.created_at.isoformat()}"},
    ]})
    return orjson.dumps({"text": _slack_escape(f"{title}: {alert.message}")[:3000], "blocks": blocks})


def body_for(alert: Alert, fmt: Format) -> bytes:
    return slack_body(alert) if fmt == "slack" else json_body(alert)


def _num(value: float | None) -> str | None:
    return None if value is None else f"{value:.4g}"


def _slack_escape(text: str) -> str:
    """Slack reads ``<…>`` as a link or a mention (``<!channel>``): text from a document must not."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "/")


def _slack_url(url: str) -> str:
    """A document's link inside ``<url|label>``: any character that could close it, or start a mention after
    it, is percent-encoded (a feed controls its links)."""
    return quote(url, safe=":/?#[]@!$&'()*+,;=%~")
