"""Client libraries' tracebacks folded into the line they log.

elastic_transport logs every retry of a request that failed at WARNING with the exception's whole
chain: `finsent retention` against an Elasticsearch that is away printed three tracebacks (about
fifty lines) before its own one-line error. The exception's last line says what failed; its stack
is the library's. At FINSENT_LOG_LEVEL=DEBUG the tracebacks are left in.
"""

from __future__ import annotations

import logging

from finsent.log_repeats import CLIENT_LOGGERS


class ClientTracebackFilter(logging.Filter):
    """Replace a client library's traceback with ``: ExceptionType: message`` at the end of its line."""

    def __init__(self, prefixes: tuple[str, ...] = CLIENT_LOGGERS) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and record.name.startswith(self.prefixes):
            record.msg, record.args = f"{record.getMessage()}: {type(exc).__name__}: {exc}", None
            record.exc_info = record.exc_text = None
        return True
