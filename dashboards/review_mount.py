"""Mounts the labels API of retrain/ (``GET /review``, ``POST /labels``) under ``/review-api/``
so the dashboard's review page can label documents with one click.

The API keeps its own bearer-token check (``FINSENT_LABEL_TOKEN``): the review page asks the
analyst for the token once and keeps it in the browser tab's session storage. Without a
token configured the API refuses to run, and the page says labelling is off.
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
        from retrain.labels_http import create_app
    except ImportError as exc:
        log.warning("review page without labelling: %s", exc)
        return f"off: the labels API is not part of this build ({exc.name})"
    if settings.label_token is None:
        return "off: set FINSENT_LABEL_TOKEN to label documents from the dashboard"
    app.add_subapp(PREFIX, create_app(settings, registry=registry))
    return "on"
