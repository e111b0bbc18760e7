"""`make test`: run the whole suite; "no tests collected" (pytest's exit 5) is a failure.

The suite runs in two pytest-xdist processes. Most of its time is spent waiting on Kafka, Elasticsearch and the
processes under test (rebalances, sessions, outages), so two processes finish it in about two thirds of the time
on two cores. Every test has its own topics, indices and folders (tests/conftest.py), so they do not meet. The
local servers are started here once, before the processes that share them, and stopped after if this run started
them.
"""

from __future__ import annotations

import os
import sys

import pytest

WORKERS = os.environ.get("FINSENT_TEST_WORKERS", "2")  # "0" runs the suite in this one process


def main(argv: list[str]) -> int:
    from finsent.services.process import ServiceError
    from finsent.settings import load_settings
    from tests import local_servers

    try:
        started = local_servers.start(load_settings())
    except ServiceError as exc:  # a taken port, a missing Java: the integration tests cannot run
        print(f"tests.run: the local Kafka and Elasticsearch did not start: {exc}", file=sys.stderr)
        return 1
    try:
        # --durations: the slowest tests, to keep the suite short
        code = pytest.main(["-ra", "-q", "--durations=15", "-n", WORKERS, "--dist", "worksteal", *argv])
    finally:
        local_servers.stop(started)
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("tests.run: pytest collected no tests; failing on purpose", file=sys.stderr)
        return 1
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
