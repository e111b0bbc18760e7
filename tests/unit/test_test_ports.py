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


def test_ports_for_one_test_s_servers_are_different_even_when_a_draw_repeats(monkeypatch):
    import tests.ports as ports

    first, second = free_port(), free_port()
    while second == first:
        second = free_port()

    class Repeating:  # the draw as it may come: the same port twice in a row
        def __init__(self, sequence):
            self.sequence = iter(sequence)

        def choice(self, _):
            return next(self.sequence)

    monkeypatch.setattr(ports, "_DRAW", Repeating([first, first, second]))
    assert ports.free_ports(2) == [first, second]


def test_drawn_ports_are_below_the_range_outgoing_connections_take_theirs_from():
    # A port from bind(0) lies in that range: a client's connection could hold it by the time the test's server binds.
    from tests.ports import _below_ephemeral, free_ports

    assert all(port in _below_ephemeral() for port in free_ports(8))
