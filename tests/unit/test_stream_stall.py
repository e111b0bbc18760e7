"""The worker's stall decision: records waiting, no progress, no excuse, for long enough."""

from stream.stall import StallDetector


def test_no_progress_with_records_waiting_is_a_stall_after_the_limit():
    d = StallDetector(after_s=60)
    assert d.observe(0, progress=10, waiting=5, excused=False) is False
    assert d.observe(59, progress=10, waiting=5, excused=False) is False
    assert d.stalled is False
    assert d.observe(60, progress=10, waiting=5, excused=False) is True
    assert d.stalled is True


def test_while_stalled_it_acts_again_every_period_and_stays_reported():
    d = StallDetector(after_s=60)
    d.observe(0, 10, 5, False)
    assert d.observe(60, 10, 5, False) is True  # report and rewind
    assert d.observe(65, 10, 5, False) is False and d.stalled  # the rewind gets its time
    assert d.observe(119, 10, 5, False) is False and d.stalled
    assert d.observe(120, 10, 5, False) is True  # still stuck: rewind again


def test_progress_clears_a_stall_and_restarts_the_clock():
    d = StallDetector(after_s=60)
    d.observe(0, 10, 5, False)
    assert d.observe(100, 10, 5, False) is True
    assert d.observe(101, 11, 5, False) is False and not d.stalled
    assert d.observe(160, 11, 5, False) is False
    assert d.observe(161, 11, 5, False) is True


def test_nothing_waiting_is_never_a_stall():
    d = StallDetector(after_s=60)
    for t in range(0, 1000, 50):
        assert d.observe(t, 10, 0, False) is False
    assert d.stalled is False


def test_an_excuse_restarts_the_clock():
    d = StallDetector(after_s=60)
    d.observe(0, 10, 5, False)
    assert d.observe(50, 10, 5, True) is False  # rebalancing, Elasticsearch away, batch retried
    assert d.observe(100, 10, 5, False) is False
    assert d.observe(110, 10, 5, False) is True
