import pytest

from bench.pipeline_bench import bracketed


def test_the_reference_is_the_median_of_the_rounds_on_both_sides_of_the_drain():
    before = {"docs_per_s": 200.0, "rounds_docs_per_s": [190.0, 200.0, 210.0], "docs": 1024, "seconds": 5.12,
              "batch_size": 64}
    after = {"docs_per_s": 150.0, "rounds_docs_per_s": [140.0, 150.0, 160.0], "docs": 1024, "seconds": 6.8,
             "batch_size": 64}
    reference = bracketed(before, after)
    assert reference["docs_per_s"] == pytest.approx(175.0)  # median of 140..210: between the two sides
    assert reference["seconds"] == pytest.approx(1024 / 175.0)
    assert reference["rounds_docs_per_s"] == [190.0, 200.0, 210.0, 140.0, 150.0, 160.0]
    assert reference["rounds_before_drain"] == [190.0, 200.0, 210.0]
    assert reference["rounds_after_drain"] == [140.0, 150.0, 160.0]
    assert reference["batch_size"] == 64
