"""The worker's stall decision, per partition: records waiting, the committed offset not
moving, no excuse, for long enough."""

from stream.stall import StallDetector


def test_a_partition_with_records_waiting_and_no_commit_is_stalled_after_the_limit():
    d = StallDetector(after_s=60)
    assert d.observe(0, {"p0": (10, 5)}, excused=False) == set()
    assert d.observe(59, {"p0": (10, 5)}, excused=False) == set()
    assert not d.stalled
    assert d.observe(60, {"p0": (10, 5)}, excused=False) == {"p0"}
    assert d.stalled == {"p0"}


def test_a_busy_partition_does_not_hide_a_stuck_one():
    d = StallDetector(after_s=60)
    d.observe(0, {"raw": (10, 5), "windows": (3, 7)}, False)
    assert d.observe(30, {"raw": (12, 5), "windows": (3, 7)}, False) == set()
    assert d.observe(61, {"raw": (14, 5), "windows": (3, 7)}, False) == {"windows"}
    assert d.stalled == {"windows"}


def test_while_stalled_it_acts_again_every_period_and_stays_reported():
    d = StallDetector(after_s=60)
    d.observe(0, {"p0": (10, 5)}, False)
    assert d.observe(60, {"p0": (10, 5)}, False) == {"p0"}  # report and rewind
    assert d.observe(65, {"p0": (10, 5)}, False) == set() and d.stalled  # the rewind gets its time
    assert d.observe(120, {"p0": (10, 5)}, False) == {"p0"}  # still stuck: rewind again


def test_a_commit_clears_the_stall_and_restarts_the_clock():
    d = StallDetector(after_s=60)
    d.observe(0, {"p0": (10, 5)}, False)
    assert d.observe(100, {"p0": (10, 5)}, False) == {"p0"}
    assert d.observe(101, {"p0": (11, 4)}, False) == set() and not d.stalled
    assert d.observe(160, {"p0": (11, 4)}, False) == set()
    assert d.observe(161, {"p0": (11, 4)}, False) == {"p0"}


def test_nothing_waiting_is_never_a_stall():
    d = StallDetector(after_s=60)
    for t in range(0, 1000, 50):
        assert d.observe(t, {"p0": (10, 0), "p1": (None, 0)}, False) == set()
    assert not d.stalled


def test_an_excuse_restarts_every_clock():
    d = StallDetector(after_s=60)
    d.observe(0, {"p0": (10, 5)}, False)
    assert d.observe(50, {"p0": (10, 5)}, True) == set()  # rebalancing, Elasticsearch away, batch retried
    assert d.observe(100, {"p0": (10, 5)}, False) == set()
    assert d.observe(110, {"p0": (10, 5)}, False) == {"p0"}


def test_revoked_partitions_are_forgotten():
    d = StallDetector(after_s=60)
    d.observe(0, {"p0": (10, 5)}, False)
    d.observe(30, {}, False)
    assert d.observe(70, {"p0": (10, 5)}, False) == set()  # assigned again: a new clock
