"""The decision that keeps a partition's records contiguous on their way to the agents."""

from __future__ import annotations

from stream.contiguity import Contiguity, Verdict

D, DROP, REWIND, SKIP = Verdict.DELIVER, Verdict.DROP, Verdict.REWIND, Verdict.SKIP_MISSING


def feed(guard: Contiguity, tp: str, offsets: list[int]) -> list[Verdict]:
    guard.new_batch()
    return [guard.admit(tp, o) for o in offsets]


def test_contiguous_records_pass_and_the_next_offset_is_tracked():
    guard = Contiguity()
    guard.all_sought({"raw-0": 16})
    assert feed(guard, "raw-0", [16, 17, 18]) == [D, D, D]
    assert guard.expected("raw-0") == 19


def test_a_hole_is_refused_with_the_rest_of_its_batch_and_rewound_to_its_start():
    guard = Contiguity()
    guard.all_sought({"raw-0": 16, "raw-1": 3})
    assert feed(guard, "raw-0", [16, 17]) == [D, D]
    guard.new_batch()
    assert [guard.admit("raw-0", 40), guard.admit("raw-1", 3), guard.admit("raw-0", 41)] == [REWIND, D, DROP]
    assert guard.expected("raw-0") == 18  # unchanged: the rewind fetches 18 next
    assert feed(guard, "raw-0", [18, 19]) == [D, D]  # the records were there: delivered in order


def test_the_first_record_after_a_seek_must_be_the_one_sought():
    # Faust's own gap check misses this one: after a seek its read offset is the next offset.
    guard = Contiguity()
    guard.all_sought({"raw-0": 16})
    assert feed(guard, "raw-0", [17]) == [REWIND]


def test_the_same_hole_after_the_rewind_means_the_records_are_not_in_the_log():
    guard = Contiguity()
    guard.sought("raw-0", 5)
    assert feed(guard, "raw-0", [12, 13]) == [REWIND, DROP]
    assert feed(guard, "raw-0", [12, 13]) == [SKIP, D]  # retention or transaction markers: go on
    assert guard.expected("raw-0") == 14
    assert feed(guard, "raw-0", [20]) == [REWIND]  # a later hole is judged afresh


def test_no_committed_offset_accepts_whatever_the_log_starts_with():
    guard = Contiguity()
    guard.all_sought({"raw-0": None, "raw-1": 0})
    assert feed(guard, "raw-0", [7, 8]) == [D, D]
    assert feed(guard, "raw-1", [3]) == [D]
    assert guard.expected("raw-0") == 9


def test_records_behind_the_position_pass_through_and_do_not_move_it():
    guard = Contiguity()
    guard.sought("raw-0", 10)
    assert feed(guard, "raw-0", [10, 11]) == [D, D]
    assert feed(guard, "raw-0", [4, 12]) == [D, D]  # Faust discards 4 as already read
    assert guard.expected("raw-0") == 13


def test_a_rebalance_forgets_revoked_partitions_and_a_seek_clears_a_refusal():
    guard = Contiguity()
    guard.all_sought({"raw-0": 16, "raw-1": 5})
    assert feed(guard, "raw-1", [9]) == [REWIND]
    guard.all_sought({"raw-0": 20})
    assert guard.expected("raw-1") is None
    assert feed(guard, "raw-1", [9]) == [D]  # assigned again later without a committed offset
    guard.new_batch()
    assert guard.admit("raw-0", 25) == REWIND
    guard.sought("raw-0", 25)  # someone moved the partition on purpose
    assert guard.admit("raw-0", 25) == D


def test_fetched_records_not_all_handed_over_are_stranded_even_at_the_end_of_the_log():
    guard = Contiguity()
    guard.all_sought({"raw-0": 16, "raw-1": 3, "raw-2": None, "raw-3": 7})
    guard.new_batch()
    assert [guard.admit("raw-0", o) for o in (16, 17)] == [D, D]  # 18..30 fetched, never handed over
    assert [guard.admit("raw-1", o) for o in (3, 4, 5)] == [D, D, D]  # all handed over
    assert guard.admit("raw-3", 9) == REWIND  # rewound already
    fetched = {"raw-0": (16, 30), "raw-1": (3, 5), "raw-2": (0, 4), "raw-3": (9, 12)}
    assert guard.stranded(fetched) == {"raw-0": 18, "raw-2": 0}
