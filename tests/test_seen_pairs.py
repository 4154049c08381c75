"""Finding duplicate rows in a file of any size: the first row of each key, in memory or spilled to a file."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bulkproc.files import rules, seen
from bulkproc.files.seen import SeenPairs
from tests.support import examples


@settings(max_examples=examples(100, 5_000))
@given(keys=st.lists(st.sampled_from(["a", "b", "c", "ab", "1:ab", "é", "e\u0301", "\udc80", ""]) | st.text(max_size=6),
                     max_size=60),
       spill_after=st.integers(0, 10))
def test_the_first_row_of_each_key_is_the_same_whether_it_spilled_or_not(keys, spill_after):
    pairs, first = SeenPairs(spill_after), {}
    try:
        for row, key in enumerate(keys, start=1):
            assert pairs.first_row(key, row) == first.setdefault(key, row)
    finally:
        pairs.close()


def test_past_the_spill_the_keys_are_no_longer_held_in_memory():
    pairs = SeenPairs(spill_after=3)
    try:
        for row in range(1, 6):
            pairs.first_row(f"key {row}", row)
        assert pairs._first == {} and pairs._file is not None
        assert pairs.first_row("key 2", 9) == 2  # kept in the file
    finally:
        pairs.close()


@pytest.mark.parametrize("spill_after", [seen.SPILL_AFTER, 5])
def test_a_large_file_names_each_duplicate_and_its_first_row(monkeypatch, spill_after):
    monkeypatch.setattr(seen, "SPILL_AFTER", spill_after)
    lines = ["name,address"] + [f"Hospital {n},{n} Main St" for n in range(1, 41)]
    lines += ["hospital  3,3 MAIN ST", "Hospital 40,40 Main St"]  # rows 41 and 42
    with pytest.raises(rules.CsvRejected) as caught:
        rules.accept("\n".join(lines).encode(), max_rows=100)
    assert [(p.row, p.message) for p in caught.value.problems] == [
        (41, "This row has the same name and address as row 3; remove one of them."),
        (42, "This row has the same name and address as row 40; remove one of them.")]
