"""Equal timestamps and data too thin to split (issue 11, items 3 and 4).

Ties are ordered by a fixed hash of the raw user and item ids, never by file order: a
shuffled copy of a file, or one with exact duplicates appended, gives the same split; the
split says for how many users a tie decided the held-out item. Data in which no user can
be evaluated is an error that says why, not a run that ranks zero users.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recarena.config import parse_config
from recarena.data.dataset import Dataset
from recarena.data.loaders import load_tabular
from recarena.data.preprocess import deduplicate, rating_threshold
from recarena.errors import DataError, RecArenaError
from recarena.runner import run_experiment
from recarena.splits import leave_one_out_split, random_split, temporal_split

T0 = 978_300_760


def _tied_rows(seed: int = 0, n_users: int = 40) -> pd.DataFrame:
    """Users whose interactions fall on a few distinct times: most last items are ties."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        items = rng.choice(30, size=int(rng.integers(4, 9)), replace=False)
        times = T0 + 60 * rng.integers(0, 3, size=len(items))
        ratings = rng.integers(1, 6, size=len(items))
        rows += [
            (f"u{u}", f"i{i}", int(t), int(r))
            for i, t, r in zip(items, times, ratings, strict=True)
        ]
    return pd.DataFrame(rows, columns=["user", "item", "timestamp", "rating"])


def _load(tmp_path, frame: pd.DataFrame, name: str) -> Dataset:
    path = tmp_path / f"{name}.csv"
    frame.to_csv(path, index=False)
    return load_tabular(path, name="tied")


def _raw(ds: Dataset, frame: pd.DataFrame) -> list[tuple]:
    """Rows with raw ids, in order: splits compared across data sets by what they hold."""
    out = frame.assign(user=ds.user_ids[frame["user"]], item=ds.item_ids[frame["item"]])
    return list(out.itertuples(index=False, name=None))


def _same_split(a_ds, a, b_ds, b) -> None:
    for part in ("train", "valid", "test"):
        assert _raw(a_ds, getattr(a, part)) == _raw(b_ds, getattr(b, part)), part
    assert a.notes == b.notes


def test_a_shuffled_file_gives_the_same_data_and_the_same_splits(tmp_path):
    rows = _tied_rows()
    original = _load(tmp_path, rows, "original")
    shuffled = _load(tmp_path, rows.sample(frac=1.0, random_state=7), "shuffled")
    reversed_ = _load(tmp_path, rows.iloc[::-1], "reversed")
    for other in (shuffled, reversed_):
        pd.testing.assert_frame_equal(original.interactions, other.interactions)
        _same_split(original, leave_one_out_split(original), other, leave_one_out_split(other))
        _same_split(
            original,
            temporal_split(original, valid_ratio=0.15, test_ratio=0.15),
            other,
            temporal_split(other, valid_ratio=0.15, test_ratio=0.15),
        )
        _same_split(original, random_split(original, seed=3), other, random_split(other, seed=3))


def test_appended_exact_duplicates_do_not_move_the_held_out_items(tmp_path):
    rows = _tied_rows(seed=1)
    original = _load(tmp_path, rows, "original")
    doubled = _load(tmp_path, pd.concat([rows, rows.sample(frac=0.4, random_state=2)]), "dup")
    # without de-duplication the copies sit next to their originals: the test item stays
    a, b = leave_one_out_split(original), leave_one_out_split(doubled)
    assert _raw(original, a.test) == _raw(doubled, b.test)
    # de-duplicated, the whole split is the same
    a_ds, b_ds = deduplicate(original), deduplicate(doubled)
    _same_split(a_ds, leave_one_out_split(a_ds), b_ds, leave_one_out_split(b_ds))


def test_deduplicate_keeps_the_same_row_of_a_pair_in_any_file_order(tmp_path):
    # one pair twice at one time with two ratings: the kept rating must not follow file order
    rows = pd.DataFrame(
        [("a", "x", T0, 2), ("a", "x", T0, 5), ("a", "y", T0 - 60, 3)],
        columns=["user", "item", "timestamp", "rating"],
    )
    kept = {
        deduplicate(_load(tmp_path, frame, f"f{k}")).interactions["rating"].tolist().__str__()
        for k, frame in enumerate([rows, rows.iloc[[1, 0, 2]], rows.iloc[::-1]])
    }
    assert kept == {"[3.0, 5.0]"}


def test_the_split_reports_the_users_whose_held_out_item_a_tie_decided():
    rows = [
        ("a", "x", T0, 1), ("a", "y", T0 + 60, 1), ("a", "z", T0 + 60, 1),  # test tied
        ("b", "x", T0, 1), ("b", "y", T0 + 60, 1), ("b", "z", T0 + 120, 1),  # no tie
        ("c", "p", T0, 1), ("c", "q", T0, 1), ("c", "r", T0 + 300, 1),  # validation tied
        ("d", "p", T0, 1), ("d", "p", T0 + 60, 1), ("d", "p", T0 + 60, 1),  # same item: no tie
    ]  # fmt: skip
    ds = Dataset.from_raw("t", pd.DataFrame(rows, columns=["user", "item", "timestamp", "r"]))
    split = leave_one_out_split(ds)
    notes = [n for n in split.notes if n.startswith("ties")]
    assert notes == [
        "ties decided the held-out item of 1 of 4 test users and 2 of 4 validation users (it "
        "shares its timestamp with another of the user's items); equal timestamps are "
        "ordered by a fixed hash of the user and item ids, never by file order"
    ]
    assert "ties" not in " ".join(leave_one_out_split(_untied()).notes)


def _untied() -> Dataset:
    rows = [("a", f"i{k}", T0 + 60 * k) for k in range(4)]
    return Dataset.from_raw("u", pd.DataFrame(rows, columns=["user", "item", "timestamp"]))


def test_the_temporal_split_reports_ties_at_its_cuts():
    rows = [(f"u{k % 5}", f"i{k}", T0 + 60 * (k // 4)) for k in range(40)]
    ds = Dataset.from_raw("t", pd.DataFrame(rows, columns=["user", "item", "timestamp"]))
    split = temporal_split(ds, valid_ratio=0.1, test_ratio=0.15)  # 6 test rows: cut inside a time
    assert any(n.startswith("ties at the test cut: 4 interactions") for n in split.notes)


#: user 7's items 1..6 at one time, in the tie order (pandas' SipHash + SplitMix64)
PINNED_TIE_ORDER = [2, 4, 6, 5, 3, 1]


def test_the_tie_order_is_fixed_and_ignores_the_id_type():
    # pinned: a change of hash would silently change every tied split
    frame = pd.DataFrame({"user": [7] * 6, "item": [1, 2, 3, 4, 5, 6], "timestamp": [T0] * 6})
    ds = Dataset.from_raw("t", frame)
    order = ds.item_ids[ds.interactions["item"]].tolist()
    assert order == PINNED_TIE_ORDER
    as_text = Dataset.from_raw("t", frame.astype({"user": str, "item": str}))
    assert as_text.item_ids[as_text.interactions["item"]].tolist() == [str(i) for i in order]
    # the key depends on the pair only: other users (a k-core removing them) change nothing
    more = pd.concat([frame, frame.assign(user=8)], ignore_index=True)
    both = Dataset.from_raw("t", more)
    first = both.interactions.loc[both.interactions["user"] == 0, "item"]
    assert both.item_ids[first].tolist() == order


# ------------------------------------------------------------------ data too thin to split
def _short_histories() -> Dataset:
    rows = [(f"u{u}", f"i{u + k}", T0 + k, 5.0 - 2 * (u % 2)) for u in range(6) for k in range(2)]
    frame = pd.DataFrame(rows, columns=["user", "item", "timestamp", "rating"])
    return Dataset.from_raw("short", frame)


def test_leave_one_out_with_no_user_to_evaluate_is_an_error_saying_why():
    with pytest.raises(DataError, match="no user has at least 3 interactions") as err:
        leave_one_out_split(_short_histories())
    assert "the most any user has is 2" in str(err.value)
    with pytest.raises(DataError, match=r"after preprocessing \(rating_threshold\)"):
        leave_one_out_split(rating_threshold(_short_histories(), 4.0))
    with pytest.raises(DataError, match="at least 5 interactions"):
        leave_one_out_split(_untied(), min_history=3)


def test_a_random_split_with_no_user_to_evaluate_is_an_error_saying_why():
    with pytest.raises(DataError, match="no user has at least 3 interactions"):
        random_split(_short_histories())


def test_a_run_on_data_where_nobody_can_be_evaluated_stops_with_the_reason(tmp_path):
    # it used to rank 0 test users, print an empty leaderboard and exit 0
    path = tmp_path / "r.csv"
    ds = _short_histories()
    ds.interactions.assign(user=ds.user_ids[ds.interactions["user"]]).to_csv(path, index=False)
    cfg = parse_config(
        {
            "name": "thin",
            "output_dir": str(tmp_path / "runs"),
            "data": {"format": "csv", "path": str(path)},
            "models": [{"name": "most_popular"}],
        }
    )
    with pytest.raises(RecArenaError, match="no user has at least 3 interactions"):
        run_experiment(cfg, cache_dir=tmp_path / "cache", progress=False)


def test_a_run_folder_written_with_file_order_ties_resumes_on_its_own_split(tmp_path, monkeypatch):
    # the migration path: a run folder saved before ties had a fixed order keeps its saved
    # split (its finished models stay comparable with the ones it has still to run);
    # only new run folders get the new order
    import recarena.data.dataset as dataset_module

    def file_order(frame, user_ids, item_ids, ties="hash"):  # the rule before the tie key
        cols = ["user", "timestamp"] if "timestamp" in frame.columns else ["user"]
        return frame.sort_values(cols, kind="stable").reset_index(drop=True)

    path = tmp_path / "tied.csv"
    _tied_rows(seed=3, n_users=60).to_csv(path, index=False)
    raw = {
        "name": "old",
        "output_dir": str(tmp_path / "runs"),
        "data": {"format": "csv", "path": str(path)},
        "evaluation": {"ks": [5], "tune_metric": "ndcg@5", "bootstrap": 50},
        "models": [{"name": "most_popular"}],
    }
    monkeypatch.setattr(dataset_module, "_history_order", file_order)
    run = run_experiment(parse_config(raw), cache_dir=tmp_path / "cache", progress=False)
    monkeypatch.undo()
    old_test = pd.read_parquet(run.run_dir / "split" / "test.parquet")
    old_lists = (run.run_dir / "models" / "most_popular" / "full" / "lists.npz").read_bytes()
    fresh = leave_one_out_split(load_tabular(path, name="tied"))
    assert not old_test.equals(fresh.test.reset_index(drop=True)), "no tie moved: a vacuous test"

    raw["models"].append({"name": "itemknn", "grid": {}})
    events: list[str] = []
    run_experiment(
        parse_config(raw), cache_dir=tmp_path / "cache", progress=False, on_event=events.append
    )
    assert any("data: reusing" in e for e in events)
    assert not any("recomputing" in e for e in events)
    pd.testing.assert_frame_equal(pd.read_parquet(run.run_dir / "split" / "test.parquet"), old_test)
    assert (
        run.run_dir / "models" / "most_popular" / "full" / "lists.npz"
    ).read_bytes() == old_lists
    assert (run.run_dir / "models" / "itemknn" / "DONE.json").exists()


# ---------------------------------------------------------------- [data] ties = "file"
def _file_order_config(tmp_path, rows: pd.DataFrame, ties: str = "file", **data) -> dict:
    path = tmp_path / "tied.csv"
    rows.to_csv(path, index=False)
    return {
        "name": "ties",
        "output_dir": str(tmp_path / "runs"),
        "data": {"format": "csv", "path": str(path), "ties": ties, **data},
        "evaluation": {"ks": [5], "tune_metric": "ndcg@5", "bootstrap": 50},
        "models": [{"name": "most_popular"}],
    }


def test_file_ties_order_equal_timestamps_as_the_rows_were_read(tmp_path):
    # the SASRec and BERT4Rec preprocessing: a stable sort by user, then time, of the file
    from recarena.config import DataConfig, PreprocessConfig
    from recarena.data import load_dataset

    rows = _tied_rows(seed=4)
    config = DataConfig(**_file_order_config(tmp_path, rows)["data"])
    ds = load_dataset(config)
    expected = rows.sort_values(["user", "timestamp"], kind="stable")
    inter = ds.interactions
    got = list(zip(ds.user_ids[inter["user"]], ds.item_ids[inter["item"]], strict=True))
    assert got == list(zip(expected["user"], expected["item"], strict=True))
    assert ds.info["ties"] == "file"

    hashed = load_dataset(config.model_copy(update={"ties": "hash"}))
    assert "ties" not in hashed.info
    split, hashed_split = leave_one_out_split(ds), leave_one_out_split(hashed)
    assert _raw(ds, split.test) != _raw(hashed, hashed_split.test), "no tie moved: vacuous"
    assert split.notes[-1].endswith(
        "equal timestamps are ordered as the rows were read (data.ties = 'file'), so the "
        "file's row order decided these users' held-out items"
    )

    # the order lasts through preprocessing, a save and a load
    steps = PreprocessConfig(min_rating=3, dedup="latest", item_core=5)
    kept = load_dataset(config.model_copy(update={"preprocess": steps}))
    assert kept.info["ties"] == "file" and kept.n_interactions < ds.n_interactions
    inter = kept.interactions
    got_kept = list(zip(kept.user_ids[inter["user"]], kept.item_ids[inter["item"]], strict=True))
    assert got_kept == [pair for pair in got if pair in set(got_kept)]
    kept.save(tmp_path / "saved")
    again = Dataset.load(tmp_path / "saved")
    assert again.info["ties"] == "file"
    pd.testing.assert_frame_equal(again.interactions, kept.interactions)


def test_file_ties_follow_the_file_and_a_bad_value_is_refused(tmp_path):
    rows = _tied_rows(seed=5)
    forward = Dataset.from_raw("f", rows, ties="file")
    backward = Dataset.from_raw("b", rows.iloc[::-1].reset_index(drop=True), ties="file")
    assert not forward.interactions.equals(backward.interactions)  # the file decides
    with pytest.raises(ValueError, match="ties must be one of hash, file, not 'time'"):
        Dataset.from_raw("x", rows, ties="time")  # type: ignore[arg-type]
    with pytest.raises(RecArenaError, match="ties"):
        parse_config(_file_order_config(tmp_path, rows, ties="time"))


def test_the_ties_option_leaves_earlier_run_folders_resumable_and_a_change_is_refused(tmp_path):
    from recarena.experiment.artifacts import _hash, data_hash, setup_hash

    rows = _tied_rows(seed=6, n_users=50)
    hashed = parse_config(_file_order_config(tmp_path, rows, ties="hash"))
    # at "hash" the hashes are those of a configuration from before the option
    before = hashed.model_dump(mode="json")
    del before["data"]["ties"]
    assert data_hash(hashed) == _hash({"data": before["data"]})
    assert setup_hash(hashed) == _hash(
        {k: before[k] for k in ("data", "split", "evaluation", "seed")}
    )

    run = run_experiment(hashed, cache_dir=tmp_path / "cache", progress=False)
    assert not run.failed
    filed = parse_config(_file_order_config(tmp_path, rows))
    assert data_hash(filed) != data_hash(hashed)
    # the same folder under the other tie order is not reused with the old split
    with pytest.raises(RecArenaError, match="different data/split/evaluation setup"):
        run_experiment(filed, cache_dir=tmp_path / "cache", progress=False)
    elsewhere = run_experiment(
        filed, output_dir=tmp_path / "other", cache_dir=tmp_path / "cache", progress=False
    )
    saved = Dataset.load(elsewhere.run_dir / "dataset")
    assert saved.info["ties"] == "file"
