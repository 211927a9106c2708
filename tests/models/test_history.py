from __future__ import annotations

import numpy as np

from recarena.models._history import History

SEQUENCES = [np.array([5, 6, 7, 8]), np.array([], dtype=np.int64), np.array([3])]


def test_keeps_the_last_items_of_each_user():
    history = History.from_sequences(SEQUENCES, 2)
    np.testing.assert_array_equal(history.row(0), [7, 8])
    np.testing.assert_array_equal(history.row(1), [])
    np.testing.assert_array_equal(history.row(2), [3])
    np.testing.assert_array_equal(history.lengths, [2, 0, 1])


def test_none_keeps_everything_and_zero_keeps_nothing():
    np.testing.assert_array_equal(History.from_sequences(SEQUENCES, None).row(0), [5, 6, 7, 8])
    assert History.from_sequences(SEQUENCES, 0).lengths.tolist() == [0, 0, 0]


def test_left_padded_right_aligns_rows_with_the_pad_value():
    history = History.from_sequences(SEQUENCES, 3)
    padded = history.left_padded(np.array([2, 0, 1]), pad=-1)
    np.testing.assert_array_equal(padded, [[-1, -1, 3], [6, 7, 8], [-1, -1, -1]])
    assert padded.dtype == np.int64


def test_shift_makes_room_for_a_zero_padding_id():
    history = History.from_sequences(SEQUENCES, 3, shift=1, dtype=np.int32)
    assert history.items.dtype == np.int32
    np.testing.assert_array_equal(
        history.left_padded(np.array([0, 2]), pad=0), [[7, 8, 9], [0, 0, 4]]
    )


def test_no_items_at_all():
    history = History.from_sequences([np.array([], dtype=np.int64)] * 2, 5)
    np.testing.assert_array_equal(history.left_padded(np.array([0, 1]), pad=0), [[0], [0]])
    empty = History.from_sequences([], 5)
    assert empty.left_padded(np.array([], dtype=np.int64), pad=0).shape == (0, 1)
