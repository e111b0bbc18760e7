"""A client library's retry is one log line naming its error, not fifty lines of its stack."""

import logging

from finsent.client_tracebacks import ClientTracebackFilter


def _record(name: str, exc: BaseException | None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord(name, logging.WARNING, __file__, 1, "Retrying request (attempt %d of %d)", (0, 3),
                             exc_info)


def _failure() -> OSError:
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except OSError as exc:
        return exc


def test_a_client_traceback_becomes_the_end_of_its_line():
    record = _record("elastic_transport.transport", _failure())
    assert ClientTracebackFilter().filter(record)
    line = logging.Formatter("%(levelname)s %(name)s: %(message)s").format(record)
    assert line == ("WARNING elastic_transport.transport: Retrying request (attempt 0 of 3): "
                    "ConnectionRefusedError: [Errno 111] Connection refused")


def test_our_own_tracebacks_and_plain_client_lines_are_left_alone():
    ours = _record("stream.pipeline", _failure())
    plain = _record("kafka.net.manager", None)
    assert ClientTracebackFilter().filter(ours) and ClientTracebackFilter().filter(plain)
    assert ours.exc_info is not None and "Traceback" in logging.Formatter().format(ours)
    assert plain.getMessage() == "Retrying request (attempt 0 of 3)"


def test_a_client_error_is_named_once() -> None:
    from kafka.errors import KafkaTimeoutError

    from finsent.clients import error_text

    assert error_text(KafkaTimeoutError("no metadata")) == "KafkaTimeoutError: no metadata"  # its str has the name
    assert error_text(ConnectionRefusedError("refused")) == "ConnectionRefusedError: refused"
