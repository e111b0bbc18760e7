"""Mounts the labels API of retrain/ (``GET /review``, ``POST /labels``) under ``/review-api/``
so the dashboard's review page can label documents with one click.

The API keeps its own bearer-token check: the review page asks the analyst for a token once (the
shared ``FINSENT_LABEL_TOKEN`` or their own from ``FINSENT_LABEL_TOKENS_FILE``) and keeps it in the
browser tab's session storage. Without a token configured, or with a tokens file the API cannot
use, the API is not mounted and the page says why labelling is off.
"""

from __future__ import annotations

import logging

from aiohttp import web
from prometheus_client import CollectorRegistry

from finsent.settings import Settings

log = logging.getLogger(__name__)
PREFIX = "/review-api/"


def mount_review(app: web.Application, settings: Settings, registry: CollectorRegistry | None = None) -> str:
    """Mount the API on ``app``; returns "on", or "off: <why>" for the page to show."""
    try:
        from retrain.label_tokens import LabelTokensError
        from retrain.labels_http import create_app
    except ImportError as exc:
        log.warning("review page without labelling: %s", exc)
        return f"off: the labels API is not part of this build ({exc.name})"
    if settings.label_token is None and settings.label_tokens_file is None:
        return "off: set FINSENT_LABEL_TOKEN or FINSENT_LABEL_TOKENS_FILE to label documents from the dashboard"
    try:
        api = create_app(settings, registry=registry)
    except LabelTokensError as exc:  # the dashboard still shows the rest; the page says where to look
        log.error("review page without labelling: %s", exc)
        return "off: FINSENT_LABEL_TOKENS_FILE cannot be used, the dashboard's log says why"
    app.add_subapp(PREFIX, api)
    return "on"
