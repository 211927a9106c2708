from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from recarena.models.base import Recommender
from recarena.models.language.two_tower import (
    HistoryPooling,
    TwoTowerRecommender,
    cold_validation_pool,
)
from recarena.models.language.two_tower.batching import next_item_pairs
from recarena.splits import leave_one_out_split
from tests.conftest import make_planted_dataset
from tests.models.conformance import RecommenderConformance, _training_data, check_cold_validation
from tests.privacy.accounting import assert_epsilon_is_the_accountants

#: a fit on the planted data in about a second: few pairs, short histories, one thread
TINY = dict(
    device="cpu",
    num_threads=1,
    epochs=4,
    patience=3,
    batch_size=32,
    max_train_pairs=320,
    history_len=5,
    max_length=16,
    encode_batch_size=64,
)


def tiny(model_dir: Path, seed: int = 0, **params) -> TwoTowerRecommender:
    return TwoTowerRecommender(str(model_dir), **{**TINY, "seed": seed, **params})


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
    train = train[~train["item"].isin(cold)]
    return dataset, _training_data(dataset, train), cold


class TestTwoTowerConformance(RecommenderConformance):
    model_dir: Path

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _tiny_model(cls, tiny_bert_dir: Path) -> None:
        cls.model_dir = tiny_bert_dir

    def make_model(self, seed: int = 0):
        return tiny(self.model_dir, seed)

    def test_training_log_and_early_stopping(self, fitted):
        model, _ = fitted
        log = model.training_log_
        # epoch 0: the untrained model, measured before the first step
        assert [row["epoch"] for row in log] == list(range(len(log)))
        assert log[0]["loss"] is None and log[0]["pairs"] == 0
        assert all(row["loss"] > 0 for row in log[1:])
        ndcg = [row["valid_ndcg@10"] for row in log]
        assert all(v is not None and 0 <= v <= 1 for v in ndcg)
        assert model.best_valid_ndcg_ == max(ndcg)
        assert model.best_epoch_ == int(np.argmax(ndcg))  # the first of equal values
        assert model.refit_params()["epochs"] == model.best_epoch_
        assert model.device_ == "cpu"
        assert set(log[0]) == {
            "epoch",
            "loss",
            "pairs",
            "valid_ndcg@10",
            "seconds",
            "encode_seconds",
        }
        assert [row["pairs"] for row in log] == [320 * n for n in range(len(log))]

    def test_refit_retraces_the_best_epoch(self, fitted):
        # a constant learning rate and seeded draws: best_epoch_ epochs without validation
        # end at the weights early stopping kept
        model, data = fitted
        again = tiny(self.model_dir, **model.refit_params()).fit(data)
        users = np.arange(data.n_users)
        np.testing.assert_allclose(again.score(users), model.score(users), rtol=1e-5, atol=1e-6)

    def test_lora_saved_as_adapter(self, fitted, tmp_path: Path):
        model, data = fitted
        model.save(tmp_path / "m")
        files = {p.name for p in (tmp_path / "m" / "lm").iterdir()}
        assert "adapter_config.json" in files and "model.safetensors" not in files
        assert (tmp_path / "m" / "tower.pt").is_file()
        loaded = Recommender.load(tmp_path / "m")
        texts = data.item_text[:7]
        np.testing.assert_allclose(
            loaded.encode_texts(texts), model.encode_texts(texts), rtol=1e-5, atol=1e-6
        )


def test_training_beats_a_warm_start_that_knows_nothing(tiny_bert_dir: Path, planted_dataset):
    """Every item has the same text: step 0 ranks at random, training learns the clusters."""
    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    data.item_text = ["an item"] * data.n_items
    model = tiny(tiny_bert_dir, epochs=4, patience=4).fit(data, valid=split.valid)
    ndcg = [row["valid_ndcg@10"] for row in model.training_log_]
    assert ndcg[0] < 0.15  # a random ranking of 50 items gives about 0.06
    assert model.best_epoch_ >= 1 and model.best_valid_ndcg_ > 2 * ndcg[0]
    assert model.best_valid_ndcg_ == max(ndcg)


def test_lora_trains_only_the_adapters(tiny_bert_dir: Path, planted_dataset):
    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    model = tiny(tiny_bert_dir, epochs=1, id_embedding=False, user_pooling="mean", lora_r=4)
    model.fit(data)
    trained = [n for n, p in model.lm_.named_parameters() if p.requires_grad]
    assert trained and all("lora_" in n for n in trained)
    assert not any(p.requires_grad for p in model.heads_.parameters())  # mean: no weights
    total, trainable = model.n_parameters()
    assert trainable == sum(p.numel() for p in model.lm_.parameters() if p.requires_grad)
    assert total > 10 * trainable
    # 2 layers x (query, value) x (A: r x h, B: h x r) with h = 64, r = 4
    assert trainable == 2 * 2 * 2 * 4 * 64


def test_full_tuning_and_top_layers(tiny_bert_dir: Path, planted_dataset, tmp_path: Path):
    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    full = tiny(tiny_bert_dir, epochs=1, tuning="full", train_layers=None).fit(data)
    total, trainable = full.n_parameters()
    # the pooler is never used, the embeddings' output is cached: neither is trained
    frozen = sum(
        p.numel()
        for n, p in full.lm_.named_parameters()
        if n.startswith(("pooler.", "embeddings."))
    )
    assert trainable == total - frozen
    heads = sum(p.numel() for p in full.heads_.parameters())
    assert trainable == heads + sum(
        p.numel() for n, p in full.lm_.named_parameters() if n.startswith("encoder.layer.")
    )
    top = tiny(tiny_bert_dir, epochs=1, tuning="full", train_layers=1).fit(data)
    names = [n for n, p in top.lm_.named_parameters() if p.requires_grad]
    assert names and all(n.startswith("encoder.layer.1.") for n in names)
    lora_top = tiny(tiny_bert_dir, epochs=1, train_layers=1).fit(data)
    names = [n for n, p in lora_top.lm_.named_parameters() if p.requires_grad]
    assert names and all(".layer.1." in n and "lora_" in n for n in names)
    # the whole encoder is saved with full tuning, and loads without its base
    full.save(tmp_path / "full")
    assert (tmp_path / "full" / "lm" / "model.safetensors").is_file()
    loaded = Recommender.load(tmp_path / "full")
    np.testing.assert_allclose(
        loaded.encode_texts(data.item_text[:5]), full.encode_texts(data.item_text[:5]), atol=1e-5
    )
    users = np.arange(6)
    np.testing.assert_allclose(loaded.score(users), full.score(users), rtol=1e-5)


def test_in_batch_loss_decreases(tiny_bert_dir: Path, planted_dataset):
    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    model = tiny(tiny_bert_dir, epochs=4).fit(data)  # no validation: all four epochs
    losses = [row["loss"] for row in model.training_log_]
    assert len(losses) == 4 and all(row["valid_ndcg@10"] is None for row in model.training_log_)
    assert losses[-1] < 0.9 * losses[0]
    # random scores over the 32 in-batch candidates give a loss near log(32)
    assert losses[-1] < np.log(32)


def test_catalog_vectors_are_the_trained_tower(tiny_bert_dir: Path, planted_dataset):
    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    model = tiny(tiny_bert_dir, epochs=1, id_embedding=False).fit(data)
    text = model.encode_texts(data.item_text)
    np.testing.assert_allclose(model.item_vectors_, text, atol=1e-5)


def test_cold_items_scored_from_text(tiny_bert_dir: Path):
    dataset, data, cold = _cold_planted()
    model = tiny(tiny_bert_dir, epochs=3).fit(data)
    # a cold item has no ID embedding: it stays at zero, masked out of training
    assert not model.heads_.id_embedding.weight[torch.from_numpy(cold)].any()
    assert model.heads_.id_embedding.weight.abs().sum() > 0
    item_cluster, user_cluster = _clusters(dataset)
    users = np.flatnonzero(user_cluster == 0)
    scores = model.score(users)
    other = scores[:, item_cluster != 0].max(axis=1)
    for item in cold:
        assert (scores[:, item] > other).mean() >= 0.9


def test_history_grad_and_dot_similarity(tiny_bert_dir: Path, planted_dataset):
    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    model = tiny(
        tiny_bert_dir, epochs=2, history_grad=True, similarity="dot", logq_correction=False
    ).fit(data, valid=split.valid)
    assert np.isfinite([row["loss"] for row in model.training_log_[1:]]).all()
    assert model.best_valid_ndcg_ > 0.15  # random ranking of 50 items gives about 0.06
    assert np.isfinite(model.score(np.arange(data.n_users))).all()


def test_global_torch_state_untouched(tiny_bert_dir: Path, planted_dataset):
    data = _training_data(planted_dataset)
    rng = torch.get_rng_state()
    threads = torch.get_num_threads()
    tiny(tiny_bert_dir, epochs=1, num_threads=1 if threads != 1 else 2).fit(data).score(
        np.arange(3)
    )
    assert torch.equal(rng, torch.get_rng_state())
    assert torch.get_num_threads() == threads


def test_attention_pooling_starts_as_the_mean():
    torch.manual_seed(0)
    vectors = torch.randn(3, 4, 8)
    valid = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    attention = HistoryPooling(8, 6, "attention")(vectors, valid)
    mean = HistoryPooling(8, 6, "mean")(vectors, valid)
    torch.testing.assert_close(attention, mean)
    torch.testing.assert_close(mean[1], vectors[1, 2:].mean(0))
    assert not mean[2].any()  # no history: a zero vector, never NaN


def test_training_pairs():
    sequences = [np.array([5, 6, 7]), np.array([], dtype=np.int64), np.array([1]), np.array([2, 3])]
    pairs = next_item_pairs(sequences)
    np.testing.assert_array_equal(pairs, [[0, 1], [0, 2], [3, 1]])


def test_cold_validation_pool():
    import scipy.sparse as sp

    trained = np.array([True, True, False, False, True])
    cold = sp.csr_matrix(([1.0, 1.0], ([0, 1], [2, 3])), shape=(2, 5))
    np.testing.assert_array_equal(cold_validation_pool(cold, trained), [2, 3])
    warm = sp.csr_matrix(([1.0, 1.0], ([0, 1], [2, 4])), shape=(2, 5))
    assert cold_validation_pool(warm, trained) is None  # one trained item: full catalog
    assert cold_validation_pool(sp.csr_matrix((2, 5)), trained) is None


def test_bad_parameters(tiny_bert_dir: Path, planted_dataset):
    data = _training_data(planted_dataset)
    with pytest.raises(ValueError, match="tuning"):
        tiny(tiny_bert_dir, tuning="prefix").fit(data)
    with pytest.raises(ValueError, match="train_layers"):
        tiny(tiny_bert_dir, train_layers=5).fit(data)
    with pytest.raises(ValueError, match="user_pooling"):
        tiny(tiny_bert_dir, user_pooling="max").fit(data)


def test_cold_validation_ranks_among_new_items(tiny_bert_dir: Path):
    """No validation item was trained on: early stopping ranks only the untrained items."""
    check_cold_validation(lambda: tiny(tiny_bert_dir, epochs=1))


def test_registry_entry():
    from recarena.models.registry import create_model, get_model_class

    assert get_model_class("lm-two-tower") is TwoTowerRecommender
    model = create_model("lm-two-tower", {"tuning": "full", "id_embedding": False})
    assert model.family == "two-tower" and model.fusion == "joint-training"
    assert model.uses_text and model.uses_validation and model.scores_full_catalog
    assert model.get_params()["model"] == "minilm-l6"


# ---------------------------------------------------------------------- the warm start
@pytest.mark.parametrize(
    ("pooling", "decay", "history_len"),
    [("attention", 1.0, None), ("attention", 0.8, 3), ("mean", 0.7, None)],
)
def test_untrained_two_tower_is_lm_frozen(
    tiny_bert_dir: Path, planted_dataset, pooling, decay, history_len
):
    """Step 0 scores exactly as lm-frozen with the same encoder, decay and history length."""
    from recarena.models.language.frozen import FrozenLMRecommender

    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    common = dict(recency_decay=decay, history_len=history_len, max_length=16, device="cpu")
    frozen = FrozenLMRecommender(str(tiny_bert_dir), **common).fit(data)
    untrained = tiny(
        tiny_bert_dir, epochs=0, user_pooling=pooling, tune_warm_start=False, **common
    ).fit(data, valid=split.valid)
    users = np.arange(data.n_users)
    np.testing.assert_allclose(untrained.score(users), frozen.score(users), atol=2e-6)
    # measured on validation, kept as epoch 0; the refit trains no epoch either
    assert [row["epoch"] for row in untrained.training_log_] == [0]
    assert untrained.best_epoch_ == 0
    assert untrained.refit_params() == {
        "epochs": 0,
        "history_len": history_len,
        "recency_decay": decay,
    }
    from recarena.metrics.ranking import ranking_metrics

    lists = untrained.recommend(split.eval_users("valid"), 10, seed=untrained.seed)
    truth = split.truth_csr("valid")
    expected = ranking_metrics(lists, truth, [10], ["ndcg"])["ndcg@10"].mean()
    assert untrained.best_valid_ndcg_ == pytest.approx(expected)
    # the decay reaches the scores: another decay ranks otherwise
    other = tiny(tiny_bert_dir, epochs=0, **{**common, "recency_decay": 0.3}).fit(data)
    assert not np.allclose(other.score(users), untrained.score(users), atol=1e-4)


def _epochs_measure_zero(monkeypatch) -> None:
    """Every validation after step 0 measures 0: no epoch beats the untrained model."""
    measure = TwoTowerRecommender._validation_ndcg

    def only_step_zero(self, *args):
        # the warm start's choice and step 0 come before the first log row
        return 0.0 if getattr(self, "training_log_", None) else measure(self, *args)

    monkeypatch.setattr(TwoTowerRecommender, "_validation_ndcg", only_step_zero)


def test_step_zero_is_kept_when_no_epoch_beats_it(
    tiny_bert_dir: Path, planted_dataset, monkeypatch
):
    """When no epoch beats the untrained model, the fit ends as it: lm-frozen."""
    from recarena.models.language.frozen import FrozenLMRecommender

    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    common = dict(max_length=16, history_len=None, device="cpu")
    _epochs_measure_zero(monkeypatch)
    model = tiny(tiny_bert_dir, epochs=2, patience=2, lr=1e-2, **common)
    model.fit(data, valid=split.valid)
    ndcg = [row["valid_ndcg@10"] for row in model.training_log_]
    assert len(ndcg) == 3 and ndcg[0] > 0 and ndcg[1:] == [0.0, 0.0]
    assert model.best_epoch_ == 0 and model.best_valid_ndcg_ == ndcg[0]
    # the lm-frozen it started from (the warm start chose its recency weighting)
    chosen = dict(history_len=model.history_len_, recency_decay=model.recency_decay_)
    frozen = FrozenLMRecommender(str(tiny_bert_dir), **{**common, **chosen}).fit(data)
    users = np.arange(data.n_users)
    np.testing.assert_allclose(model.score(users), frozen.score(users), atol=2e-6)
    # the untrained encoder is back too (it was trained: lr 1e-2), not only the vectors
    np.testing.assert_allclose(
        model.encode_texts(data.item_text[:5]), frozen.item_vectors_[:5], atol=2e-6
    )


def test_warm_start_is_the_best_lm_frozen_on_validation(tiny_bert_dir: Path, planted_dataset):
    """tune_warm_start: step 0 is the lm-frozen of its grid that validates best."""
    from recarena.metrics.ranking import ranking_metrics
    from recarena.models.language.frozen import FrozenLMRecommender

    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    users, truth = split.eval_users("valid"), split.truth_csr("valid")
    common = dict(max_length=16, device="cpu")
    model = tiny(tiny_bert_dir, epochs=0, history_len=None, **common).fit(data, valid=split.valid)
    tried = {(row["history_len"], row["recency_decay"]): row for row in model.warm_start_}
    grid = FrozenLMRecommender.param_grid
    assert set(tried) == {(h, d) for h in grid["history_len"] for d in grid["recency_decay"]}
    best = None
    for (history_len, decay), row in tried.items():
        frozen = FrozenLMRecommender(
            str(tiny_bert_dir), history_len=history_len, recency_decay=decay, **common
        ).fit(data)
        lists = frozen.recommend(users, 10, seed=model.seed)
        ndcg = ranking_metrics(lists, truth, [10], ["ndcg"])["ndcg@10"].mean()
        # near-ties among cosines may rank otherwise under float noise: close, not equal
        assert row["valid_ndcg@10"] == pytest.approx(ndcg, abs=0.02)
        if best is None or row["valid_ndcg@10"] > best[1]["valid_ndcg@10"]:
            best = ((history_len, decay), row, frozen)
    assert (model.history_len_, model.recency_decay_) == best[0]
    assert model.best_valid_ndcg_ == best[1]["valid_ndcg@10"]
    np.testing.assert_allclose(
        model.score(np.arange(data.n_users)), best[2].score(np.arange(data.n_users)), atol=2e-6
    )
    assert model.refit_params() == {
        "epochs": 0,
        "history_len": best[0][0],
        "recency_decay": best[0][1],
    }
    # the refit (no validation) starts from the chosen pair
    refit = tiny(tiny_bert_dir, **common, **model.refit_params()).fit(data)
    np.testing.assert_allclose(
        refit.score(np.arange(data.n_users)), model.score(np.arange(data.n_users)), atol=2e-6
    )


def test_patience_counts_against_step_zero(tiny_bert_dir: Path, planted_dataset, monkeypatch):
    """An epoch below the untrained model is no gain: patience 1 stops after it."""
    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    _epochs_measure_zero(monkeypatch)
    model = tiny(tiny_bert_dir, epochs=5, patience=1).fit(data, valid=split.valid)
    assert [row["epoch"] for row in model.training_log_] == [0, 1]
    assert model.best_epoch_ == 0


def test_pooling_starts_as_the_recency_weighted_mean():
    torch.manual_seed(0)
    vectors = torch.randn(3, 4, 8)
    valid = torch.tensor([[1, 1, 1, 1], [0, 0, 1, 1], [0, 0, 0, 0]], dtype=torch.bool)
    for ages in (2, 6):  # fewer per-age biases than items: the oldest share the last one
        attention = HistoryPooling(8, ages, "attention", 0.5)(vectors, valid)
        mean = HistoryPooling(8, ages, "mean", 0.5)(vectors, valid)
        torch.testing.assert_close(attention, mean)
    weights = torch.tensor([0.125, 0.25, 0.5, 1.0])
    torch.testing.assert_close(mean[0], (weights[:, None] * vectors[0]).sum(0) / weights.sum())
    torch.testing.assert_close(mean[1], (2 * vectors[1, 3] + vectors[1, 2]) / 3)
    assert not mean[2].any()


def test_tower_saved_before_the_recency_slope_loads(
    tiny_bert_dir: Path, planted_dataset, tmp_path: Path
):
    """A tower.pt of an earlier version (no recency slope) loads and scores as saved."""
    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    model = tiny(tiny_bert_dir, epochs=1).fit(data)
    with torch.no_grad():
        model.heads_.pooling.recency_slope.zero_()  # what the earlier towers had, implicitly
    model.save(tmp_path / "m")
    weights = torch.load(tmp_path / "m" / "tower.pt", weights_only=True)
    del weights["pooling.recency_slope"]
    torch.save(weights, tmp_path / "m" / "tower.pt")
    loaded = Recommender.load(tmp_path / "m")
    users = np.arange(data.n_users)
    np.testing.assert_allclose(loaded.score(users), model.score(users), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- cached lower layers
@pytest.mark.parametrize("n_top", [1, 2])
def test_top_layers_over_cached_states_equal_the_full_encoder(tiny_bert_dir: Path, n_top):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel, AutoTokenizer

    from recarena.lm.top_layers import TopLayerEncoder, mean_pool
    from tests.lm.conftest import fixture_corpus

    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    texts = fixture_corpus()
    ids = tokenizer(texts)["input_ids"]
    lm = AutoModel.from_pretrained(tiny_bert_dir).eval()
    lm = get_peft_model(
        lm, LoraConfig(r=4, target_modules=["query", "value"], layers_to_transform=[1])
    ).eval()  # peft switches dropout on
    torch.manual_seed(0)
    with torch.no_grad():  # adapters that change the output (B starts at zero)
        for name, p in lm.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    encoder = TopLayerEncoder(lm, n_top, ids, tokenizer.pad_token_id)
    encoder.build_cache(batch_size=7)
    assert encoder.states.shape == (sum(len(r) for r in ids), 64)
    rows = np.array([3, 0, len(texts) - 1, 5])
    token_ids, mask = encoder.token_batch(rows, "cpu")
    with torch.no_grad():
        full = mean_pool(lm(input_ids=token_ids, attention_mask=mask).last_hidden_state, mask)
        torch.testing.assert_close(encoder.encode(rows), full, atol=1e-5, rtol=1e-5)
        every = encoder.encode_all(batch_size=5)
    torch.testing.assert_close(every[rows], full, atol=1e-5, rtol=1e-5)
    # the layer list is whole again, and gradients reach the adapters of the top layers
    assert len(lm.base_model.model.encoder.layer) == 2
    lm.train()
    encoder.encode(rows).sum().backward()
    grads = {n for n, p in lm.named_parameters() if p.grad is not None}
    assert grads and all("layer.1." in n and "lora_" in n for n in grads)


def test_a_private_two_tower_spends_what_the_accountant_says(tiny_bert_dir: Path, planted_dataset):
    """User-level DP-SGD (`private`): the epsilon recorded is the RDP accountant's for the
    steps taken at the sampling rate, per epoch in the log too; no ID embedding is masked
    (which items were trained on is the users' data); the refit gets the kept epochs."""
    pytest.importorskip("opacus")
    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    model = tiny(tiny_bert_dir, epochs=2, patience=2, dp_noise_multiplier=0.3)
    model.fit(data, valid=split.valid)
    record = model.dp_
    assert_epsilon_is_the_accountants(record, noise_multiplier=0.3)
    n_users = int((np.array([len(s) for s in data.sequences]) >= 2).sum())
    assert record["n_users"] == n_users and record["sample_rate"] == pytest.approx(32 / n_users)
    assert record["steps"] == 2 * round(n_users / 32)
    epsilons = [row["epsilon"] for row in model.training_log_ if row["epoch"] >= 1]
    assert epsilons == sorted(epsilons) and epsilons[-1] == pytest.approx(record["epsilon_spent"])
    assert model.heads_.id_mask.min().item() == 1.0
    assert model.cost_record()["dp"]["epsilon_spent"] == record["epsilon_spent"]
    ndcg = [row["valid_ndcg@10"] for row in model.training_log_]
    assert model.best_valid_ndcg_ == max(ndcg)  # step 0 competes
    assert model.refit_params()["epochs"] == model.best_epoch_
    assert np.isfinite(model.score(np.arange(data.n_users))).all()


def test_a_private_two_tower_learns_when_the_noise_is_negligible(
    tiny_bert_dir: Path, planted_dataset
):
    """The sanity check of the private path: every item has the same text, so only the ID
    embeddings and the pooling can learn; with noise far below the clipped gradients the
    loss against the uniform negatives falls well below chance (ln 257)."""
    pytest.importorskip("opacus")
    split = leave_one_out_split(planted_dataset)
    data = _training_data(planted_dataset, split.fit_interactions("valid"))
    data.item_text = ["an item"] * data.n_items
    model = tiny(
        tiny_bert_dir,
        batch_size=8,
        epochs=6,
        patience=6,
        dp_noise_multiplier=1e-4,
        dp_max_grad_norm=10.0,
    ).fit(data, valid=split.valid)
    losses = [row["loss"] for row in model.training_log_ if row["epoch"] >= 1]
    assert losses[0] == pytest.approx(np.log(257), abs=0.05)
    assert losses[-1] < losses[0] - 0.5, losses


def test_private_two_tower_parameters_are_checked(tiny_bert_dir: Path):
    with pytest.raises(ValueError, match="not both"):
        tiny(tiny_bert_dir, dp_epsilon=8.0, dp_noise_multiplier=1.0).check_params()
    with pytest.raises(ValueError, match="history_grad must be False"):
        tiny(tiny_bert_dir, dp_epsilon=8.0, history_grad=True).check_params()
    tiny(tiny_bert_dir, dp_epsilon=8.0).check_params()
