from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recarena.models.base import Recommender
from recarena.models.lm_text_sasrec import MoEAdaptor, TextItemEmbedding, TextSASRec
from recarena.models.sasrec import SASRec
from recarena.splits import leave_one_out_split
from tests.conftest import make_planted_dataset
from tests.models.conformance import (
    SASREC_TINY,
    RecommenderConformance,
    _training_data,
    check_cold_validation,
)

#: SASRec's tiny test settings plus the text encoder's
TINY = {**SASREC_TINY, "encode_device": "cpu"}


def tiny(model_dir: Path, seed: int = 0, **params) -> TextSASRec:
    return TextSASRec(str(model_dir), **{**TINY, "seed": seed, **params})


def _clusters(dataset) -> tuple[np.ndarray, np.ndarray]:
    def cluster(raw) -> np.ndarray:
        return np.array([int(str(r)[1:].split("_")[0]) for r in raw])

    return cluster(dataset.item_ids), cluster(dataset.user_ids)


def _cold_planted():
    """Planted data whose first two items of cluster 0 have no training interaction."""
    dataset = make_planted_dataset()
    split = leave_one_out_split(dataset)
    cold = dataset.item_index(["i0_0", "i0_1"])
    train = split.fit_interactions("valid")
    return dataset, _training_data(dataset, train[~train["item"].isin(cold)]), cold


class TestTextSASRecConformance(RecommenderConformance):
    model_dir: Path

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _tiny_model(cls, tiny_bert_dir: Path) -> None:
        cls.model_dir = tiny_bert_dir

    def make_model(self, seed: int = 0):
        return tiny(self.model_dir, seed)

    def test_is_sasrec_trained_with_text_embeddings(self, fitted):
        model, data = fitted
        assert isinstance(model, SASRec)
        assert isinstance(model.network_.item_embedding, TextItemEmbedding)
        log = model.training_log_
        assert model.best_valid_ndcg_ == max(row["valid_ndcg@10"] for row in log)
        assert model.refit_params() == {"epochs": model.best_epoch_}
        assert log[-1]["loss"] < 0.8 * log[0]["loss"]
        # the output layer is the text embedding: scores are states . item vectors
        vectors = model.network_.item_vectors().detach()
        assert vectors.shape == (data.n_items, TINY["hidden"])


def test_refit_retraces_the_best_epoch(tiny_bert_dir: Path, planted_dataset):
    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    model = tiny(tiny_bert_dir, epochs=8, patience=2, lr=2e-2).fit(data, valid=split.valid)
    again = tiny(tiny_bert_dir, lr=2e-2, **model.refit_params()).fit(data)
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(again.score(users), model.score(users))


def test_parameters_without_id_embeddings(tiny_bert_dir: Path, planted_dataset):
    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    text_only = tiny(tiny_bert_dir, epochs=2, id_embedding=False).fit(data)
    with_ids = tiny(tiny_bert_dir, epochs=2).fit(data)
    n, h = data.n_items, TINY["hidden"]
    _, trainable = text_only.n_parameters()
    shapes = [tuple(p.shape) for p in text_only.network_.parameters()]
    assert not any(n in shape or n + 1 in shape for shape in shapes)
    # adaptor (64 -> h) and its LayerNorm, positions, blocks, final LayerNorm
    per_block = 2 * 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + 2 * (h * h + h)
    expected = (64 * h + h) + 2 * h + TINY["max_len"] * h + 2 * per_block + 2 * h
    assert trainable == expected
    assert with_ids.n_parameters()[1] == trainable + (n + 1) * h
    total, _ = text_only.n_parameters()
    assert total == trainable + text_only.lm_parameters_  # the frozen encoder counts in total


def test_text_only_scores_cold_items(tiny_bert_dir: Path):
    dataset, data, cold = _cold_planted()
    # a fixed number of epochs: early stopping on this tiny data may keep an untrained epoch
    model = tiny(tiny_bert_dir, id_embedding=False, epochs=15).fit(data)
    item_cluster, user_cluster = _clusters(dataset)
    users = np.flatnonzero(user_cluster == 0)
    scores = model.score(users)
    other = scores[:, item_cluster != 0].max(axis=1)
    for item in cold:
        assert (scores[:, item] > other).mean() >= 0.9


def test_cold_items_keep_no_id_embedding(tiny_bert_dir: Path):
    dataset, data, cold = _cold_planted()
    model = tiny(tiny_bert_dir, epochs=15).fit(data)
    table = model.network_.item_embedding.ids.weight.detach()
    assert not table[torch.from_numpy(cold + 1)].any()  # row 0 is padding
    assert table[1:].abs().sum() > 0
    item_cluster, user_cluster = _clusters(dataset)
    scores = model.score(np.flatnonzero(user_cluster == 0))
    other = scores[:, item_cluster != 0].max(axis=1)
    # the cold items' text vectors alone still beat the other clusters' trained items
    assert all((scores[:, item] > other).mean() >= 0.9 for item in cold)


def test_moe_adaptor_round_trip(tiny_bert_dir: Path, planted_dataset, tmp_path: Path):
    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    model = tiny(tiny_bert_dir, adaptor="moe", n_experts=3, id_embedding=False, epochs=3)
    model.fit(data, valid=split.valid)
    assert isinstance(model.network_.item_embedding.adaptor, MoEAdaptor)
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    users = np.arange(data.n_users)
    np.testing.assert_allclose(loaded.score(users), model.score(users), rtol=1e-5, atol=1e-6)


def test_moe_adaptor_is_whitening_experts():
    torch.manual_seed(0)
    moe = MoEAdaptor(6, 4, 3)
    with torch.no_grad():
        moe.centers.normal_()
        moe.gate.weight.normal_()
    x = torch.randn(5, 6)
    gate = (x @ moe.gate.weight.T).softmax(-1)
    expected = sum(gate[:, k : k + 1] * ((x - moe.centers[k]) @ moe.experts[k]) for k in range(3))
    torch.testing.assert_close(moe(x), expected)


def test_text_embedding_rows():
    emb = TextItemEmbedding(4, 6, 8, id_embedding=True)
    emb.set_text(np.random.default_rng(0).normal(size=(4, 6)), np.array([1, 0, 1, 1]))
    table = emb.weight
    assert table.shape == (5, 8) and not table[0].any()  # padding row
    ids = torch.tensor([[0, 3, 1]])
    torch.testing.assert_close(emb(ids), table[ids])
    assert emb.id_mask[:, 0].tolist() == [0.0, 1.0, 0.0, 1.0, 1.0]


def test_update_history_is_sasrec_s(tiny_bert_dir: Path, planted_dataset):
    split = leave_one_out_split(planted_dataset)
    model = tiny(tiny_bert_dir, epochs=3).fit(
        _training_data(planted_dataset, split.fit_interactions("valid")), valid=split.valid
    )
    users = split.eval_users("valid")
    before = model.score(users)
    model.update_history(_training_data(planted_dataset, split.fit_interactions("test")))
    assert not np.allclose(model.score(users), before)


def test_cold_validation_ranks_among_new_items(tiny_bert_dir: Path):
    """No validation item was trained on: early stopping ranks only the untrained items."""
    check_cold_validation(lambda: tiny(tiny_bert_dir, epochs=2))


def test_registry_entry():
    from recarena.models.registry import create_model, get_model_class

    assert get_model_class("lm-text-sasrec") is TextSASRec
    model = create_model("lm-text-sasrec", {"id_embedding": False, "hidden": 32})
    assert model.family == "lm-features-trained" and model.fusion == "feature-extraction"
    assert model.uses_text and model.uses_validation
    params = model.get_params()
    assert params["hidden"] == 32 and params["model"] == "minilm-l6" and "max_len" in params
    assert model.clone().get_params() == params


def test_dataset_without_text_fails(tiny_bert_dir: Path):
    dataset = make_planted_dataset()
    data = _training_data(dataset)
    data.item_text = None
    with pytest.raises(ValueError, match="item text"):
        tiny(tiny_bert_dir).fit(data)


def test_a_stopped_fit_resumes_with_its_text_embedding(
    tiny_bert_dir: Path, planted_dataset, tmp_path, monkeypatch
):
    """The checkpoint holds the text adaptor too: a resumed fit ends as an unbroken one."""
    from recarena.models.sasrec import SASRec

    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    params = dict(epochs=4, patience=10, lr=2e-2)
    whole = tiny(tiny_bert_dir, **params).fit(data, valid=split.valid)

    data.checkpoint_dir = tmp_path
    train_epoch, calls = SASRec._train_epoch, []

    def killed_in_epoch_3(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return train_epoch(self, *args)

    monkeypatch.setattr(SASRec, "_train_epoch", killed_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        tiny(tiny_bert_dir, **params).fit(data, valid=split.valid)
    monkeypatch.setattr(SASRec, "_train_epoch", train_epoch)
    resumed = tiny(tiny_bert_dir, **params).fit(data, valid=split.valid)
    assert [r["loss"] for r in resumed.training_log_] == [r["loss"] for r in whole.training_log_]
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(resumed.score(users), whole.score(users))
