"""Segments on a hand-made example."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from recarena.metrics import item_segments, restrict_truth, segment_ranking_metrics, user_segments
from recarena.models.base import RankedLists


def test_user_segments():
    # distinct training items: user 0 -> 6, user 1 -> 2 (item 9 three times), user 2 -> none,
    # user 3 -> 5, user 4 -> 7
    rows = (
        [(0, i) for i in range(6)]
        + [(1, 9), (1, 9), (1, 9), (1, 8)]
        + [(3, i) for i in range(5)]
        + [(4, i) for i in range(7)]
    )
    fit = pd.DataFrame(rows, columns=["user", "item"])
    eval_users = np.array([4, 2, 0, 3, 1])
    seg = user_segments(eval_users, fit, n_users=5, cold_user_max=5)
    np.testing.assert_array_equal(seg["cold_users"], [False, True, False, True, True])
    np.testing.assert_array_equal(seg["warm_users"], [True, False, True, False, False])
    seg0 = user_segments(eval_users, fit, n_users=5, cold_user_max=0)
    np.testing.assert_array_equal(seg0["cold_users"], [False, True, False, False, False])


def test_item_segments_with_ties_at_the_head_boundary():
    pop = np.array([10, 8, 8, 5, 3, 1, 0, 2, 0, 8])
    seg = item_segments(pop, head_share=0.2, cold_items=np.array([7]))
    # cold: never seen (6, 8) plus the listed new item 7
    np.testing.assert_array_equal(np.flatnonzero(seg["cold_items"]), [6, 7, 8])
    # 7 known items, ceil(0.2 * 7) = 2 places; the 2nd most popular has 8 users, and every
    # item with 8 users joins the head: {0, 1, 2, 9}
    np.testing.assert_array_equal(np.flatnonzero(seg["head_items"]), [0, 1, 2, 9])
    np.testing.assert_array_equal(np.flatnonzero(seg["tail_items"]), [3, 4, 5])
    total = seg["head_items"].astype(int) + seg["tail_items"] + seg["cold_items"]
    assert (total == 1).all()
    small = item_segments(pop, head_share=0.1)  # ceil(0.1 * 8) = 1 place: item 0 alone
    np.testing.assert_array_equal(np.flatnonzero(small["head_items"]), [0])
    with pytest.raises(ValueError):
        item_segments(pop, head_share=1.5)


def test_restrict_truth_and_segment_metrics():
    # items 0-2 head, 3-5 tail
    head = np.array([True, True, True, False, False, False])
    truth = sp.csr_matrix(
        np.array(
            [
                [1, 0, 0, 0, 0, 1],  # user 0: relevant {0 (head), 5 (tail)}
                [0, 1, 0, 0, 0, 0],  # user 1: relevant {1 (head)} only
                [0, 0, 0, 1, 0, 0],  # user 2: relevant {3 (tail)} only
            ]
        )
    )
    tail_truth = restrict_truth(truth, ~head)
    np.testing.assert_array_equal(np.diff(tail_truth.indptr), [1, 0, 1])
    lists = RankedLists(
        np.array([0, 1, 2]),
        np.array([[0, 3, 5], [1, 2, 4], [4, 3, 0]]),
        np.zeros((3, 3), np.float32),
    )
    out = segment_ranking_metrics(
        lists,
        truth,
        [1, 3],
        ["hr", "ndcg"],
        user_masks={"cold_users": np.array([True, False, True])},
        item_masks={"head_items": head, "tail_items": ~head},
    )
    # tail: user 1 has no tail item and is excluded (2 users in the segment)
    tail = out["tail_items"]
    assert list(tail.index) == [0, 2]
    # user 0 on tail items: relevant {5}, at rank 3 -> hr@1 0, ndcg@3 = 1/log2(4) = 0.5
    assert tail.loc[0, "hr@1"] == 0 and tail.loc[0, "ndcg@3"] == pytest.approx(0.5)
    # user 2: relevant {3} at rank 2 -> ndcg@3 = 1/log2(3)
    assert tail.loc[2, "ndcg@3"] == pytest.approx(1 / np.log2(3))
    head_frame = out["head_items"]
    assert list(head_frame.index) == [0, 1]
    # user 0 on head items: relevant {0} at rank 1
    assert head_frame.loc[0, "hr@1"] == 1 and head_frame.loc[0, "ndcg@3"] == 1
    assert list(out["cold_users"].index) == [0, 2]
