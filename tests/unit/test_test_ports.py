"""The test suite's own port picker (tests/ports.py)."""

import random

from tests.ports import free_port


def test_a_seeded_random_module_does_not_repeat_the_ports_drawn():
    # Training seeds `random` (transformers' set_seed): two pytest-xdist processes that had each trained the tiny
    # model drew the same ports, and one test's worker answered the other's health checks.
    drawn = []
    for _ in range(3):
        random.seed(13)
        drawn.append(free_port())
    assert len(set(drawn)) > 1, drawn
