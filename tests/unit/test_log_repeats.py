"""Client libraries' retries are logged once a minute, their first line and our own lines always."""

import logging

from finsent.log_repeats import RepeatFilter


def _record(name: str, msg: str, *args) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_a_client_template_passes_once_a_minute_whatever_its_arguments():
    now = [0.0]
    repeats = RepeatFilter(every=60, clock=lambda: now[0])
    failed = "Bootstrap connection to %s failed: %s (backoff %.2f secs)"

    assert repeats.filter(_record("kafka.net.manager", failed, "b-0", "refused", 0.1))
    now[0] = 30
    assert not repeats.filter(_record("kafka.net.manager", failed, "b-0", "refused", 5.8))  # the same, new numbers
    assert repeats.filter(_record("kafka.net.manager", "Connection failed: %s", "refused"))  # another kind
    assert repeats.filter(_record("kafka.net.connection", failed, "b-0", "refused", 5.8))  # another logger
    now[0] = 61
    assert repeats.filter(_record("kafka.net.manager", failed, "b-0", "refused", 26.8))  # a minute on


def test_finsent_records_always_pass():
    repeats = RepeatFilter(every=60, clock=lambda: 0.0)
    assert all(repeats.filter(_record("stream.pipeline", "dead letter %s", i)) for i in range(3))
