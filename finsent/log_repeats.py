"""Client libraries' repeated log lines, let through once a minute.

While Kafka or Elasticsearch is away, kafka-python and elastic_transport log every retry: a
`finsent` command that waits 30 s for a broker printed twenty ERROR lines before its own one-line
error, and a long-running process writes thousands an hour. The first line of each kind still
tells what happened; the repeats say nothing new.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

CLIENT_LOGGERS = ("kafka", "aiokafka", "elastic_transport", "urllib3", "httpx")


class RepeatFilter(logging.Filter):
    """Drop a client library's record whose message template was let through less than ``every`` s ago."""

    def __init__(self, every: float = 60.0, prefixes: tuple[str, ...] = CLIENT_LOGGERS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.every, self.prefixes, self.clock = every, prefixes, clock
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
            return True
        key, now = (record.name, str(record.msg)), self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.every:
            return False
        self._last[key] = now
        return True
