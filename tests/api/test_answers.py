"""The lists in memory (api/answers.py) against a plain dict built from the same rows."""

import numpy as np
import pytest

from clickstream_dagster.api.answers import Lists


def test_lists_answer_what_a_dict_of_the_rows_answers() -> None:
    rng = np.random.default_rng(7)
    keys = np.sort(rng.choice(10**12, size=500, replace=False)).astype(np.int64)
    lengths = rng.integers(1, 25, size=len(keys))
    row_keys = np.repeat(keys, lengths)
    items = rng.integers(0, 2**62, size=len(row_keys)).astype(np.int64)
    scores = rng.random(len(row_keys)).astype(np.float32)
    lists = Lists.from_rows(row_keys, items, scores)
    want: dict[int, list[tuple[int, float]]] = {}
    for key, item, score in zip(row_keys.tolist(), items.tolist(), scores.tolist(), strict=True):
        want.setdefault(key, []).append((item, score))
    assert len(lists) == len(want) and lists.rows == len(row_keys) and lists.depth == lengths.max()
    for key, rows in want.items():
        assert lists.get(key) == rows
        assert lists.get(key, 3) == rows[:3]
    for absent in (0, int(keys[0]) - 1, int(keys[-1]) + 1, int(keys[10]) + 1):
        assert absent in want or lists.get(absent) == []
    assert lists.items is items and lists.scores is scores  # held as given, not copied
    assert lists.nbytes == 12 * len(row_keys) + 16 * len(keys) + 8


def test_lists_of_no_rows_and_unsorted_rows() -> None:
    empty = Lists.from_rows(np.array([], np.int64), np.array([], np.int64), np.array([], np.float32))
    assert len(empty) == 0 and empty.rows == 0 and empty.depth == 0 and empty.get(1) == []
    one = Lists.from_rows(np.array([5, 5], np.int64), np.array([1, 2], np.int64), np.ones(2, np.float32))
    assert one.get(5) == [(1, 1.0), (2, 1.0)] and one.get(4) == [] and one.get(6) == []
    with pytest.raises(ValueError, match="sorted"):
        Lists.from_rows(np.array([2, 1], np.int64), np.array([1, 2], np.int64), np.ones(2, np.float32))
