"""The stream worker's web server (``/metrics``, ``/health``): Faust's aiohttp driver with the connection limits of
finsent's other aiohttp servers (:mod:`finsent.http_guard`: the header and answer deadlines, the per-client cap, the
short stop, the counters).

Faust's driver serves its aiohttp Application through a bare ``AppRunner``, which waits for a request's headers as
long as aiohttp's keep-alive timer allows (3,630 s there): 300 connections that each sent half a request line held
a worker limited to 256 open files, and its scrapes timed out (RELIABILITY.md). The driver builds that runner in its
``__init__`` and has no setting for the runner's class or options, so :class:`GuardedWeb` replaces it with
:class:`~finsent.http_guard.GuardedRunner` before anything starts it. Faust chooses the driver class from its ``web``
setting, a URL whose scheme names a driver registered under the ``faust.web.drivers`` entry points (a reinstall of
the package); the worker's app makes it in ``_new_web`` instead (stream.app), as it makes its consumer.
"""

from __future__ import annotations

from typing import Any

from faust.web.drivers import aiohttp as faust_aiohttp

from finsent.http_guard import GuardedRunner, GuardMetrics
from finsent.settings import Settings


class GuardedWeb(faust_aiohttp.Web):
    """Faust's aiohttp web driver whose connections have the deadlines and per-client cap of ``settings``,
    counted in ``metrics``."""

    def __init__(self, app: Any, settings: Settings, *, metrics: GuardMetrics, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._runner = GuardedRunner(self.web_app, settings, metrics=metrics, access_log=None)  # Faust's: no log
