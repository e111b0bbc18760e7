"""`make test`: run the whole suite; "no tests collected" (pytest's exit 5) is a failure."""

from __future__ import annotations

import sys

import pytest


def main(argv: list[str]) -> int:
    code = pytest.main(["-ra", "-q", "--durations=15", *argv])  # the slowest tests, to keep the suite short
    if code == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("tests.run: pytest collected no tests; failing on purpose", file=sys.stderr)
        return 1
    return int(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
