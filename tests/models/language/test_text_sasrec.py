from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recarena.models.base import Recommender
from recarena.models.classical.sasrec import SASRec
from recarena.models.language.text_sasrec import (
    JointTextSASRec,
    MoEAdaptor,
    TextItemEmbedding,
    TextSASRec,
)
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
    from recarena.models.classical.sasrec import SASRec

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


# ---------------------------------------------------------------------- joint training
def joint(model_dir: Path, seed: int = 0, **params) -> JointTextSASRec:
    return JointTextSASRec(str(model_dir), **{**TINY, "seed": seed, **params})


class TestJointTextSASRecConformance(RecommenderConformance):
    model_dir: Path

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _tiny_model(cls, tiny_bert_dir: Path) -> None:
        cls.model_dir = tiny_bert_dir

    def make_model(self, seed: int = 0):
        return joint(self.model_dir, seed)

    def test_two_stages(self, fitted):
        model, data = fitted
        log = model.training_log_
        stages = [row["stage"] for row in log]
        assert stages[0] == 1 and stages[-1] == 2 and stages == sorted(stages)
        # the joint stage starts after patience ran out, from the best frozen epoch
        assert model.switch_epoch_ == stages.count(1)
        frozen = [row["valid_ndcg@10"] for row in log if row["stage"] == 1]
        assert model.frozen_best_epoch_ == int(np.argmax(frozen)) + 1
        assert model.best_valid_ndcg_ == max(row["valid_ndcg@10"] for row in log)
        # after fitting the network is a text-SASRec over the kept encoder's vectors
        embedding = model.network_.item_embedding
        assert type(embedding) is TextItemEmbedding
        assert embedding.text.shape == (data.n_items + 1, 64)


def _fit_pair(tiny_bert_dir: Path, planted_dataset, **params):
    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    text = tiny(tiny_bert_dir, **params).fit(data, valid=split.valid)
    both = joint(tiny_bert_dir, **params).fit(data, valid=split.valid)
    return data, split, text, both


def test_frozen_stage_is_text_sasrec(tiny_bert_dir: Path, planted_dataset):
    """Stage 1 is TextSASRec draw for draw; a joint stage that only hurts is not kept."""
    # an absurd encoder learning rate: the joint stage wrecks the text vectors
    data, _, text, both = _fit_pair(tiny_bert_dir, planted_dataset, epochs=14, patience=2)
    frozen = [r for r in both.training_log_ if r["stage"] == 1]
    assert len(frozen) == len(text.training_log_)
    for a, b in zip(text.training_log_, frozen, strict=True):
        assert a["loss"] == b["loss"] and a["valid_ndcg@10"] == b["valid_ndcg@10"]
    wrecked = joint(tiny_bert_dir, epochs=14, patience=2, lm_lr=50.0, tuning="full")
    split = leave_one_out_split(planted_dataset)
    wrecked.fit(data, valid=split.valid)
    assert wrecked.switch_epoch_ is not None and not wrecked.joint_kept_
    assert wrecked.best_epoch_ == text.best_epoch_
    assert wrecked.refit_params() == {"epochs": text.best_epoch_, "frozen_epochs": text.best_epoch_}
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(wrecked.score(users), text.score(users))


def test_joint_stage_trains_the_encoder(tiny_bert_dir: Path, planted_dataset):
    """The kept joint epoch's item vectors are not the frozen ones; the refit retraces it."""
    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    # one frozen epoch, far from trained: the joint epochs that follow beat it
    params = dict(frozen_epochs=1, epochs=8, patience=10, lm_lr=3e-3)
    model = joint(tiny_bert_dir, **params).fit(data, valid=split.valid)
    assert model.switch_epoch_ == 1 and model.frozen_best_epoch_ == 1
    assert model.joint_kept_ and model.best_epoch_ > 1
    frozen = tiny(tiny_bert_dir, epochs=1).fit(data)
    tuned = model.network_.item_embedding.text[1:].numpy()
    start = frozen.network_.item_embedding.text[1:].numpy()
    # re-encoding with unchanged weights differs by about 1e-7
    assert np.abs(tuned - start).max() > 1e-4
    np.testing.assert_allclose(np.linalg.norm(tuned, axis=1), 1.0, atol=1e-5)
    refit = model.refit_params()
    assert refit == {"frozen_epochs": 1, "epochs": model.best_epoch_}
    again = joint(tiny_bert_dir, **{**params, **refit}).fit(data)
    assert again.joint_kept_ and again.switch_epoch_ == 1
    users = np.arange(data.n_users)
    np.testing.assert_allclose(again.score(users), model.score(users), rtol=1e-5, atol=1e-5)


def test_a_time_budget_spent_in_the_frozen_stage_starts_no_joint_stage(
    tiny_bert_dir: Path, planted_dataset
):
    """Any budget is spent by the end of epoch 1: that epoch is measured and is the last, the
    joint stage due after it never starts, and the refit trains the epochs, not the seconds."""
    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    params = dict(frozen_epochs=1, epochs=8, patience=10, eval_every=3, max_train_seconds=1e-9)
    model = joint(tiny_bert_dir, **params).fit(data, valid=split.valid)
    assert [r["epoch"] for r in model.training_log_] == [1]
    assert model.training_log_[0]["valid_ndcg@10"] is not None
    assert model.switch_epoch_ is None and model.best_epoch_ == 1
    assert model.refit_params() == {"epochs": 1, "frozen_epochs": 1, "max_train_seconds": None}


def test_joint_from_the_first_epoch_without_validation(tiny_bert_dir: Path, planted_dataset):
    data = _training_data(planted_dataset)
    model = joint(tiny_bert_dir, epochs=3, lm_items_per_step=8).fit(data)
    assert model.switch_epoch_ == 0 and model.joint_kept_
    assert [row["stage"] for row in model.training_log_] == [2, 2, 2]
    total, trainable = model.n_parameters()
    lora = 2 * 2 * (8 * 64 + 64 * 8)  # top 2 layers x (query, value) x (A, B), r = 8
    assert model.lm_trained_parameters_ == lora
    network = sum(p.numel() for p in model.network_.parameters())
    assert trainable == network + lora and total == network + model.lm_parameters_ + lora


def test_a_stopped_joint_fit_resumes(tiny_bert_dir: Path, planted_dataset, tmp_path, monkeypatch):
    """Killed during the joint stage, the fit resumes there and ends as an unbroken one."""
    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    params = dict(epochs=8, patience=10, frozen_epochs=3, lm_lr=1e-2)
    whole = joint(tiny_bert_dir, **params).fit(data, valid=split.valid)
    assert whole.switch_epoch_ == 3

    data.checkpoint_dir = tmp_path
    train_epoch, calls = SASRec._train_epoch, []

    def killed_in_epoch_5(self, *args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return train_epoch(self, *args)

    monkeypatch.setattr(SASRec, "_train_epoch", killed_in_epoch_5)
    with pytest.raises(KeyboardInterrupt):
        joint(tiny_bert_dir, **params).fit(data, valid=split.valid)
    monkeypatch.setattr(SASRec, "_train_epoch", train_epoch)
    resumed = joint(tiny_bert_dir, **params).fit(data, valid=split.valid)
    assert [r["loss"] for r in resumed.training_log_] == [r["loss"] for r in whole.training_log_]
    assert [r["stage"] for r in resumed.training_log_] == [1, 1, 1, 2, 2, 2, 2, 2]
    assert resumed.best_epoch_ == whole.best_epoch_
    users = np.arange(data.n_users)
    np.testing.assert_array_equal(resumed.score(users), whole.score(users))
    assert not (tmp_path / "sasrec-checkpoint.pt").exists()


def test_joint_parameters_reach_the_checkpoint_key(planted_dataset):
    from tests.models.conformance import _training_data as training_data

    data = training_data(planted_dataset)
    keys = {
        JointTextSASRec(**change)._checkpoint_key(data, None)
        for change in ({}, {"lm_lr": 3e-4}, {"train_layers": 1}, {"lm_items_per_step": 64})
    }
    assert len(keys) == 4
    assert JointTextSASRec()._checkpoint_key(data, None) != TextSASRec()._checkpoint_key(data, None)


def test_joint_bad_parameters(tiny_bert_dir: Path, planted_dataset):
    data = _training_data(planted_dataset)
    with pytest.raises(ValueError, match="tuning"):
        joint(tiny_bert_dir, tuning="prefix").fit(data)
    with pytest.raises(ValueError, match="train_layers"):
        joint(tiny_bert_dir, train_layers=3).fit(data)
    with pytest.raises(ValueError, match="frozen_epochs"):
        joint(tiny_bert_dir, frozen_epochs=-1).fit(data)


def test_joint_cold_validation_ranks_among_new_items(tiny_bert_dir: Path):
    check_cold_validation(lambda: joint(tiny_bert_dir, epochs=4, frozen_epochs=2))


def test_joint_registry_entry():
    from recarena.models.registry import create_model, get_model_class

    assert get_model_class("lm-text-sasrec-joint") is JointTextSASRec
    model = create_model("lm-text-sasrec-joint", {"tuning": "full", "train_layers": 1})
    assert model.family == "lm-features-trained" and model.fusion == "joint-training"
    params = model.get_params()
    assert params["train_layers"] == 1 and params["max_len"] == 200
    assert model.clone().get_params() == params


def test_joint_learning_rate_and_items_per_step_reach_the_encoder(
    tiny_bert_dir: Path, planted_dataset, monkeypatch
):
    from recarena.lm.top_layers import TopLayerEncoder

    data = _training_data(planted_dataset)
    start = tiny(tiny_bert_dir, epochs=1).fit(data).network_.item_embedding.text[1:].numpy()
    step_rows: list[int] = []
    refreshing: list[bool] = []
    encode, encode_all = TopLayerEncoder.encode, TopLayerEncoder.encode_all

    def counting(self, rows):
        if not refreshing:
            step_rows.append(len(rows))
        return encode(self, rows)

    def refresh(self, *args, **kwargs):
        refreshing.append(True)
        try:
            return encode_all(self, *args, **kwargs)
        finally:
            refreshing.pop()

    monkeypatch.setattr(TopLayerEncoder, "encode", counting)
    monkeypatch.setattr(TopLayerEncoder, "encode_all", refresh)
    still = joint(tiny_bert_dir, epochs=2, lm_lr=0.0, lm_items_per_step=5).fit(data)
    # every training step re-encodes 5 of its batch's items with gradients
    assert len(step_rows) == 2 * int(np.ceil(data.n_users / TINY["batch_size"]))
    assert set(step_rows) == {5}
    # a zero learning rate leaves the encoder as it was
    np.testing.assert_allclose(still.network_.item_embedding.text[1:].numpy(), start, atol=1e-5)
    moved = joint(tiny_bert_dir, epochs=2, lm_lr=3e-3, tuning="full", train_layers=1).fit(data)
    assert np.abs(moved.network_.item_embedding.text[1:].numpy() - start).max() > 1e-4
    # full tuning of the top layer: all its weights are trained (tiny BERT: h = 64, ffn 2h)
    h = 64
    layer = 4 * (h * h + h) + 2 * h + (h * 2 * h + 2 * h) + (2 * h * h + h) + 2 * h
    assert moved.lm_trained_parameters_ == layer


def test_private_text_sasrec_records_its_epsilon(tiny_bert_dir: Path, planted_dataset):
    """DP-SGD through the text embedding: per-user gradients of the adaptor, the ID table
    and the network; the epsilon the accountant counts; the frozen text untouched."""
    pytest.importorskip("opacus")
    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    model = tiny(tiny_bert_dir, epochs=3, dp_noise_multiplier=0.8).fit(data)
    dp = model.dp_
    assert dp["noise_multiplier"] == 0.8 and dp["epsilon_spent"] > 0 and dp["steps"] > 0
    assert [row["epsilon"] for row in model.training_log_] == sorted(
        row["epsilon"] for row in model.training_log_
    )
    assert np.isfinite(model.score(np.arange(data.n_users))).all()
    # without the DP parameters: not private, and the checkpoint key of before
    plain = tiny(tiny_bert_dir, epochs=1).fit(data)
    assert "dp" not in plain.cost_record()
