from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recarena.data.dataset import Dataset
from recarena.data.preprocess import deduplicate, k_core, rating_threshold
from recarena.errors import DataError


def _dataset(rows, *, with_ratings=True):
    columns = (
        ["user", "item", "timestamp", "rating"] if with_ratings else ["user", "item", "timestamp"]
    )
    return Dataset.from_raw("t", pd.DataFrame(rows, columns=columns))


def _raw_pairs(ds):
    return sorted(
        zip(ds.user_ids[ds.interactions["user"]], ds.item_ids[ds.interactions["item"]], strict=True)
    )


def test_rating_threshold_keeps_ratings_at_or_above():
    ds = _dataset([("a", 1, 1, 5.0), ("a", 2, 2, 3.5), ("b", 1, 3, 4.0), ("c", 3, 4, 1.0)])
    out = rating_threshold(ds, 4.0)
    assert _raw_pairs(out) == [("a", 1), ("b", 1)]
    assert list(out.user_ids) == ["a", "b"] and list(out.item_ids) == [1]  # re-densified
    step = out.info["preprocessing"][-1]
    assert step["step"] == "rating_threshold" and step["min_rating"] == 4.0
    assert (step["interactions_before"], step["interactions_after"]) == (4, 2)
    assert (step["users_before"], step["users_after"]) == (3, 2)


def test_rating_threshold_without_ratings():
    ds = _dataset([("a", 1, 1)], with_ratings=False)
    with pytest.raises(DataError, match="has no ratings"):
        rating_threshold(ds, 4)


def test_threshold_that_removes_everything_is_an_error():
    ds = _dataset([("a", 1, 1, 2.0)])
    with pytest.raises(DataError, match="no interactions left in 't' after rating_threshold"):
        rating_threshold(ds, 5)


def test_deduplicate_keeps_the_latest_in_time_not_in_file_order():
    # the later interaction comes first in the file
    ds = _dataset([("a", 1, 50, 2.0), ("a", 1, 10, 5.0), ("a", 2, 20, 3.0)])
    latest = deduplicate(ds, "latest")
    assert latest.n_interactions == 2
    rows = latest.interactions.set_index(latest.item_ids[latest.interactions["item"]])
    assert rows.loc[1, "rating"] == 2.0 and rows.loc[1, "timestamp"] == 50
    first = deduplicate(ds, "first")
    rows = first.interactions.set_index(first.item_ids[first.interactions["item"]])
    assert rows.loc[1, "rating"] == 5.0 and rows.loc[1, "timestamp"] == 10
    assert latest.info["preprocessing"][-1]["keep"] == "latest"


def test_deduplicate_equal_times_keeps_the_last_in_file_order():
    ds = _dataset([("a", 1, 10, 2.0), ("a", 1, 10, 4.0)])
    assert deduplicate(ds).interactions["rating"].tolist() == [4.0]


def _is_k_core(ds, user_k, item_k):
    per_user = np.bincount(ds.interactions["user"], minlength=ds.n_users)
    per_item = np.bincount(ds.interactions["item"], minlength=ds.n_items)
    return per_user.min() >= user_k and per_item.min() >= item_k


def _reference_k_core(pairs, user_k, item_k):
    kept = set(pairs)
    while True:
        users = pd.Series([u for u, _ in kept]).value_counts()
        items = pd.Series([i for _, i in kept]).value_counts()
        drop = {(u, i) for u, i in kept if users[u] < user_k or items[i] < item_k}
        if not drop:
            return kept
        kept -= drop


def test_k_core_needs_several_rounds_and_reaches_a_fixed_point():
    # a chain: dropping user d (1 rating) leaves item 4 with 1 rating, which drops user c's
    # rating of it, leaving c with 1 rating, ... one pass is not enough
    rows = [
        ("a", 1, 1), ("a", 2, 2), ("b", 1, 3), ("b", 2, 4),
        ("c", 2, 5), ("c", 3, 6), ("e", 3, 7), ("e", 4, 8), ("d", 4, 9),
    ]  # fmt: skip
    ds = _dataset(rows, with_ratings=False)
    out = k_core(ds, user_k=2, item_k=2)
    assert _raw_pairs(out) == [("a", 1), ("a", 2), ("b", 1), ("b", 2)]
    assert _is_k_core(out, 2, 2)
    step = out.info["preprocessing"][-1]
    assert step["step"] == "k_core" and (step["user_k"], step["item_k"]) == (2, 2)


@pytest.mark.parametrize("seed", range(5))
def test_k_core_matches_a_reference_on_random_data(seed):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 60, 400)
    items = np.minimum(rng.zipf(1.6, 400), 80)
    frame = pd.DataFrame({"user": users, "item": items, "timestamp": np.arange(400)})
    ds = deduplicate(Dataset.from_raw("r", frame))
    out = k_core(ds, user_k=3, item_k=4)
    assert _is_k_core(out, 3, 4)
    expected = _reference_k_core(_raw_pairs(ds), 3, 4)
    assert set(_raw_pairs(out)) == expected
    # a fixed point: applying it again changes nothing
    assert k_core(out, user_k=3, item_k=4).n_interactions == out.n_interactions


def test_k_core_that_removes_everything_is_an_error():
    ds = _dataset([("a", 1, 1), ("b", 2, 2)], with_ratings=False)
    with pytest.raises(DataError, match="after k_core"):
        k_core(ds, user_k=2)


def test_steps_accumulate_in_info():
    ds = _dataset([("a", 1, 1, 5.0), ("a", 1, 2, 5.0), ("a", 2, 3, 4.0), ("b", 2, 4, 4.0)])
    out = k_core(deduplicate(rating_threshold(ds, 4)), 1, 2)
    assert [s["step"] for s in out.info["preprocessing"]] == [
        "rating_threshold",
        "deduplicate",
        "k_core",
    ]
