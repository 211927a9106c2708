from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from recarena.models.base import Recommender
from recarena.models.classical.sasrec import (
    SASRec,
    SASRecConfig,
    SASRecNetwork,
    softmax_cross_entropy,
    training,
)
from recarena.models.registry import create_model
from tests.conftest import make_planted_dataset
from tests.models.conformance import SASREC_TINY, RecommenderConformance, _training_data

TINY = SASREC_TINY


def tiny(seed: int = 0, **params) -> SASRec:
    return SASRec(**{**TINY, "seed": seed, **params})


class TestSASRec(RecommenderConformance):
    def make_model(self, seed: int = 0):
        return tiny(seed)

    # -------------------------------------------------------------- the network
    def test_causal_mask(self):
        torch.manual_seed(0)
        net = SASRecNetwork(SASRecConfig(n_items=30, max_len=10, hidden=16, n_heads=2)).eval()
        seq = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
        later = seq.clone()
        later[:, 6:] = torch.tensor([20, 21, 22, 23])
        with torch.no_grad():
            a, b = net(seq), net(later)
        torch.testing.assert_close(a[:, :6], b[:, :6])
        assert not torch.allclose(a[:, 6:], b[:, 6:])

    def test_padding_is_invisible(self):
        """Leading padding changes nothing: a trimmed batch gives the same states."""
        torch.manual_seed(0)
        net = SASRecNetwork(SASRecConfig(n_items=30, max_len=10, hidden=16)).eval()
        padded = torch.tensor([[0, 0, 0, 0, 0, 0, 7, 3, 9, 4]])
        with torch.no_grad():
            full, trimmed = net(padded), net(padded[:, 6:])
        torch.testing.assert_close(full[:, 6:], trimmed, rtol=1e-5, atol=1e-5)

    def test_history_only_in_last_max_len_items(self, planted):
        """Scores read the user's most recent max_len items, nothing older."""
        dataset, split = planted
        train = split.fit_interactions("valid")
        short = tiny(epochs=3, max_len=4).fit(_training_data(dataset, train))
        # every user has 8 training items: change the oldest, which max_len=4 never reads
        changed = train.copy()
        first = changed.groupby("user").head(1).index
        changed.loc[first, "item"] = (changed.loc[first, "item"] + 1) % dataset.n_items
        other = tiny(epochs=3, max_len=4).fit(_training_data(dataset, changed))
        other.network_.load_state_dict(short.network_.state_dict())
        users = np.arange(10)
        np.testing.assert_array_equal(other.score(users), short.score(users))

    def test_chunked_cross_entropy_matches_torch(self):
        torch.manual_seed(0)
        states = torch.randn(700, 16, requires_grad=True)
        items = torch.randn(90, 16, requires_grad=True)
        targets = torch.randint(0, 90, (700,))
        expected = torch.nn.functional.cross_entropy(states @ items.T, targets)
        want = torch.autograd.grad(2.0 * expected, [states, items])
        got_loss = softmax_cross_entropy(states, items, targets, chunk=128)
        got = torch.autograd.grad(2.0 * got_loss, [states, items])
        torch.testing.assert_close(got_loss, expected)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b)

    # -------------------------------------------------------------- training
    def test_loss_decreases(self, fitted):
        model, _ = fitted
        losses = [row["loss"] for row in model.training_log_]
        assert losses[-1] < 0.8 * losses[0]

    def test_a_stopped_fit_resumes_from_its_checkpoint(self, planted, tmp_path, monkeypatch):
        """Killed after epoch 3, the fit resumes at epoch 4 and ends as an unbroken one."""
        dataset, split = planted
        data = _training_data(dataset, split.fit_interactions("valid"))
        params = dict(epochs=6, patience=10, lr=2e-2)
        whole = tiny(**params).fit(data, valid=split.valid)

        data.checkpoint_dir = tmp_path / "ckpt"
        calls = {"n": 0}
        train_epoch = SASRec._train_epoch

        def killed_in_epoch_4(self, *args):
            calls["n"] += 1
            if calls["n"] == 4:
                raise KeyboardInterrupt
            return train_epoch(self, *args)

        monkeypatch.setattr(SASRec, "_train_epoch", killed_in_epoch_4)
        with pytest.raises(KeyboardInterrupt):
            tiny(**params).fit(data, valid=split.valid)
        assert (tmp_path / "ckpt" / "sasrec-checkpoint.pt").exists()
        monkeypatch.setattr(SASRec, "_train_epoch", train_epoch)

        trained: list[int] = []
        monkeypatch.setattr(
            SASRec,
            "_train_epoch",
            lambda self, *a: trained.append(1) or train_epoch(self, *a),
        )
        resumed = tiny(**params).fit(data, valid=split.valid)
        assert len(trained) == 3  # epochs 4, 5 and 6 only
        assert [r["epoch"] for r in resumed.training_log_] == [1, 2, 3, 4, 5, 6]
        for a, b in zip(resumed.training_log_, whole.training_log_, strict=True):
            assert (a["loss"], a["valid_ndcg@10"]) == (b["loss"], b["valid_ndcg@10"])
        assert resumed.best_epoch_ == whole.best_epoch_
        users = np.arange(data.n_users)
        np.testing.assert_array_equal(resumed.score(users), whole.score(users))
        # a finished fit leaves no checkpoint behind
        assert not (tmp_path / "ckpt" / "sasrec-checkpoint.pt").exists()

    def test_a_checkpoint_of_other_parameters_is_not_resumed(self, planted, tmp_path):
        dataset, split = planted
        data = _training_data(dataset, split.fit_interactions("valid"))
        data.checkpoint_dir = tmp_path
        path = tmp_path / "sasrec-checkpoint.pt"
        torch.save({"key": "another configuration", "epoch": 99}, path)
        model = tiny(epochs=2).fit(data, valid=split.valid)
        assert [r["epoch"] for r in model.training_log_] == [1, 2]
        path.write_bytes(b"torn write")
        assert [r["epoch"] for r in tiny(epochs=2).fit(data).training_log_] == [1, 2]

    def test_the_recipe_options_of_klenitskiy_and_vasilev(self, planted):
        """``init="normal"`` draws every matrix from N(0, 0.02); ``adam_beta2`` reaches Adam;
        both at their defaults keep the fit, and the checkpoint key, of before they existed."""
        torch.manual_seed(0)
        config = SASRecConfig(n_items=500, max_len=50, hidden=64, init="normal")
        net = SASRecNetwork(config)
        for name, p in net.named_parameters():
            if p.dim() > 1:
                rows = p[1:] if name == "item_embedding.weight" else p
                assert abs(float(rows.std()) - 0.02) < 0.002, name
        assert not net.item_embedding.weight[0].any()  # padding
        xavier = SASRecNetwork(SASRecConfig(n_items=500, max_len=50, hidden=64))
        assert float(xavier.blocks[0].attention.out.weight.std()) > 0.1  # sqrt(2 / 128)
        with pytest.raises(ValueError, match="init must be one of xavier, normal"):
            SASRecNetwork(SASRecConfig(n_items=5, init="kaiming"))
        with pytest.raises(ValueError, match="parameter init must be"):
            tiny(init="kaiming").check_params()
        with pytest.raises(ValueError, match="parameter adam_beta2 must be"):
            tiny(adam_beta2=1.0).check_params()

        dataset, split = planted
        data = _training_data(dataset, split.fit_interactions("valid"))
        default = tiny(epochs=2).fit(data)
        explicit = tiny(epochs=2, adam_beta2=0.98, init="xavier").fit(data)
        users = np.arange(data.n_users)
        np.testing.assert_array_equal(default.score(users), explicit.score(users))
        for changed in (  # each reaches the fit
            {"adam_beta2": 0.999},
            {"init": "normal"},
            {"block": "reference"},
            {"positions": "first"},
        ):
            other = tiny(epochs=2, **changed).fit(data)
            assert not np.array_equal(default.score(users), other.score(users)), changed
        key = tiny()._checkpoint_key(data, split.valid)
        assert key == training.checkpoint_key(
            SASRec,
            {
                k: v
                for k, v in tiny().get_params().items()
                if k not in ("adam_beta2", "init", "block", "positions")
            },
            data,
            split.valid,
        )
        assert tiny(init="normal")._checkpoint_key(data, split.valid) != key
        assert tiny(adam_beta2=0.999)._checkpoint_key(data, split.valid) != key
        assert tiny(block="reference")._checkpoint_key(data, split.valid) != key
        assert tiny(positions="first")._checkpoint_key(data, split.valid) != key

    # -------------------------------------------------------------- the time budget
    @staticmethod
    def _clock(monkeypatch, seconds_per_epoch: float) -> None:
        """A training clock that moves ``seconds_per_epoch`` during each epoch's training
        and not otherwise, so a time budget ends a fit at a known epoch."""
        now = {"t": 0.0}

        class Clock:
            @staticmethod
            def perf_counter() -> float:
                return now["t"]

        train_epoch = SASRec._train_epoch

        def timed(self, *args):
            out = train_epoch(self, *args)
            now["t"] += seconds_per_epoch
            return out

        monkeypatch.setattr(training, "time", Clock)
        monkeypatch.setattr(SASRec, "_train_epoch", timed)

    def test_a_time_budget_ends_training_after_the_epoch_that_spends_it(self, planted, monkeypatch):
        """10 s an epoch and a 25 s budget: epoch 3 is the last, and it is measured even
        though ``eval_every`` would skip it; the best measurement's weights are kept."""
        dataset, split = planted
        data = _training_data(dataset, split.fit_interactions("valid"))
        self._clock(monkeypatch, 10.0)
        params = dict(epochs=8, eval_every=2, patience=10, lr=2e-2)
        budget = tiny(**params, max_train_seconds=25).fit(data, valid=split.valid)
        log = budget.training_log_
        assert [r["epoch"] for r in log] == [1, 2, 3]
        assert [r["valid_ndcg@10"] is not None for r in log] == [False, True, True]
        assert [r["seconds"] for r in log] == [10.0, 20.0, 30.0]
        measured = {r["epoch"]: r["valid_ndcg@10"] for r in log if r["valid_ndcg@10"] is not None}
        assert budget.best_epoch_ == max(measured, key=measured.get)
        # the same fit without the budget trains its 8 epochs and passes the same way
        whole = tiny(**params).fit(data, valid=split.valid)
        assert [r["epoch"] for r in whole.training_log_] == list(range(1, 9))
        for a, b in zip(log[:2], whole.training_log_, strict=False):
            assert (a["loss"], a["valid_ndcg@10"]) == (b["loss"], b["valid_ndcg@10"])
        # the refit trains the best epoch's count, and no budget can cut it short
        assert budget.refit_params() == {"epochs": budget.best_epoch_, "max_train_seconds": None}
        # a budget is part of the checkpoint key; none keeps the key of before it existed
        key = tiny()._checkpoint_key(data, split.valid)
        assert tiny(max_train_seconds=None)._checkpoint_key(data, split.valid) == key
        assert tiny(max_train_seconds=25)._checkpoint_key(data, split.valid) != key

    def test_a_resumed_fit_counts_the_time_spent_before_it_stopped(
        self, planted, tmp_path, monkeypatch
    ):
        """Killed in epoch 3 of a 45 s budget at 10 s an epoch, the fit resumes with the 20 s
        its checkpoint recorded and ends after epoch 5, as the unbroken fit does."""
        dataset, split = planted
        data = _training_data(dataset, split.fit_interactions("valid"))
        params = dict(epochs=8, patience=10, lr=2e-2, max_train_seconds=45)
        self._clock(monkeypatch, 10.0)
        whole = tiny(**params).fit(data, valid=split.valid)
        assert [r["epoch"] for r in whole.training_log_] == [1, 2, 3, 4, 5]

        data.checkpoint_dir = tmp_path / "ckpt"
        timed = SASRec._train_epoch
        calls = {"n": 0}

        def killed_in_epoch_3(self, *args):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
            return timed(self, *args)

        monkeypatch.setattr(SASRec, "_train_epoch", killed_in_epoch_3)
        with pytest.raises(KeyboardInterrupt):
            tiny(**params).fit(data, valid=split.valid)
        monkeypatch.setattr(SASRec, "_train_epoch", timed)
        resumed = tiny(**params).fit(data, valid=split.valid)
        assert [r["epoch"] for r in resumed.training_log_] == [1, 2, 3, 4, 5]
        assert [r["seconds"] for r in resumed.training_log_] == [10.0, 20.0, 30.0, 40.0, 50.0]
        assert resumed.best_epoch_ == whole.best_epoch_
        users = np.arange(data.n_users)
        np.testing.assert_array_equal(resumed.score(users), whole.score(users))

    @pytest.mark.parametrize("value", [0, -5, "1800"])
    def test_a_time_budget_must_be_positive_seconds(self, value):
        with pytest.raises(ValueError, match="parameter max_train_seconds must be"):
            tiny(max_train_seconds=value).check_params()

    def test_the_reference_block_and_first_positions_match_klenitskiy_and_vasilev(self):
        """``block="reference"`` with ``positions="first"`` computes what Klenitskiy &
        Vasilev's SASRec (the reference PyTorch code, sequences padded on the right, an
        ``nn.MultiheadAttention``) computes with the same weights, at every real position."""
        from torch import nn

        torch.manual_seed(0)
        config = SASRecConfig(
            n_items=30, max_len=12, hidden=16, dropout=0.1, init="normal",
            block="reference", positions="first",
        )  # fmt: skip
        ours = SASRecNetwork(config).eval()
        # their init: N(0, 0.02) except the attention's own Xavier-uniform input projection
        qkv = ours.blocks[0].attention.qkv.weight
        assert (
            float(qkv.std()) > 3 * 0.02 and float(ours.blocks[0].attention.out.weight.std()) < 0.03
        )

        lengths = [12, 7, 1, 4]
        rows = [torch.randint(1, 31, (n,)) for n in lengths]
        left = torch.zeros(len(rows), 12, dtype=torch.long)
        right = torch.zeros(len(rows), 12, dtype=torch.long)
        for i, r in enumerate(rows):
            left[i, 12 - len(r) :], right[i, : len(r)] = r, r

        d = config.hidden
        mha = [nn.MultiheadAttention(d, 1, 0.1) for _ in range(2)]
        for m, block in zip(mha, ours.blocks, strict=True):
            m.in_proj_weight.data.copy_(block.attention.qkv.weight)
            m.in_proj_bias.data.copy_(block.attention.qkv.bias)
            m.out_proj.weight.data.copy_(block.attention.out.weight)
            m.out_proj.bias.data.copy_(block.attention.out.bias)
            m.eval()

        def theirs(ids: torch.Tensor) -> torch.Tensor:  # their SASRec.forward, transcribed
            seqs = ours.item_embedding(ids) * d**0.5
            seqs = seqs + ours.position_embedding(torch.arange(ids.shape[1]))[None]
            timeline = ids == 0
            seqs = seqs * ~timeline[..., None]
            t = ids.shape[1]
            causal = ~torch.tril(torch.ones(t, t, dtype=torch.bool))
            for m, block in zip(mha, ours.blocks, strict=True):
                seqs = seqs.transpose(0, 1)
                q = block.ln_attention(seqs)
                out, _ = m(q, seqs, seqs, attn_mask=causal)
                seqs = (q + out).transpose(0, 1)
                seqs = block.ln_ffn(seqs)
                seqs = seqs + block.ffn(seqs)  # conv1 - ReLU - conv2 (dropout off in eval)
                seqs = seqs * ~timeline[..., None]
            return ours.ln_final(seqs)

        with torch.no_grad():
            mine, reference = ours(left), theirs(right)
            trimmed = ours(left[:, -7:][1:2])  # trimmed of leading padding: the same states
        for i, n in enumerate(lengths):
            torch.testing.assert_close(mine[i, 12 - n :], reference[i, :n], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(trimmed[0], mine[1, -7:], atol=1e-6, rtol=1e-5)

        # each option reaches the network, and the defaults are what they were
        plain = SASRecNetwork(SASRecConfig(n_items=30, max_len=12, hidden=16)).eval()
        for changed in ({"block": "reference"}, {"positions": "first"}):
            other = SASRecNetwork(SASRecConfig(n_items=30, max_len=12, hidden=16, **changed))
            other.load_state_dict(plain.state_dict())  # the same parameters either way
            with torch.no_grad():
                assert not torch.allclose(plain(left)[:, -1], other.eval()(left)[:, -1]), changed
        with pytest.raises(ValueError, match="parameter block must be"):
            tiny(block="post_ln").check_params()
        with pytest.raises(ValueError, match="positions must be one of recent, first"):
            SASRecNetwork(SASRecConfig(n_items=5, positions="last"))

    def test_early_stopping_keeps_the_best_epoch(self, planted):
        dataset, split = planted
        data = _training_data(dataset, split.fit_interactions("valid"))
        model = tiny(epochs=200, patience=2, lr=2e-2).fit(data, valid=split.valid)
        log = model.training_log_
        ndcg = [row["valid_ndcg@10"] for row in log]
        assert len(log) < 200, "patience never ran out"
        assert model.best_epoch_ == int(np.argmax(ndcg)) + 1
        assert model.best_valid_ndcg_ == max(ndcg)
        # stopped `patience` measurements after the best one
        assert len(log) == model.best_epoch_ + 2
        assert all(set(row) == {"epoch", "loss", "valid_ndcg@10", "seconds"} for row in log)
        assert [row["epoch"] for row in log] == list(range(1, len(log) + 1))

        # the kept weights are those of the best epoch: the same model trained exactly
        # best_epoch_ epochs without validation scores identically
        again = tiny(lr=2e-2, **model.refit_params()).fit(data)
        users = np.arange(data.n_users)
        np.testing.assert_array_equal(model.score(users), again.score(users))

        # the logged NDCG is the one the ranking API gives
        valid_users = split.eval_users("valid")
        lists = model.recommend(valid_users, 10)
        truth = dict(zip(split.valid["user"], split.valid["item"], strict=True))
        hits = lists.items == np.array([truth[u] for u in lists.users])[:, None]
        ranked = (hits / np.log2(np.arange(2, 12))).sum(1)
        assert ranked.mean() == pytest.approx(model.best_valid_ndcg_, abs=1e-9)

    def test_patience_steps_keeps_training_through_a_plateau(self, planted):
        """Patience counted in measurements stops only once `patience_steps` steps passed
        since the best one (on small data an epoch is a few steps)."""
        dataset, split = planted
        data = _training_data(dataset, split.fit_interactions("valid"))
        steps_per_epoch = int(np.ceil(data.n_users / TINY["batch_size"]))
        quick = tiny(epochs=200, patience=2, lr=2e-2).fit(data, valid=split.valid)
        floor = 12 * steps_per_epoch
        held = tiny(epochs=200, patience=2, patience_steps=floor, lr=2e-2)
        held.fit(data, valid=split.valid)
        # the same training up to the quick one's stop (same seed), then on
        ndcg = [row["valid_ndcg@10"] for row in held.training_log_]
        assert ndcg[: len(quick.training_log_)] == [
            row["valid_ndcg@10"] for row in quick.training_log_
        ]
        assert len(held.training_log_) > len(quick.training_log_)
        # it stopped exactly when both counts ran out (or at `epochs`)
        assert held.best_epoch_ == int(np.argmax(ndcg)) + 1
        assert len(held.training_log_) == min(200, held.best_epoch_ + 12)
        assert held.best_valid_ndcg_ >= quick.best_valid_ndcg_

    @pytest.mark.parametrize("value", [-1, 1.5, None, "many"])
    def test_patience_steps_must_be_a_count(self, value):
        with pytest.raises(ValueError, match="patience_steps"):
            tiny(patience_steps=value).check_params()

    def test_eval_every(self, planted):
        dataset, split = planted
        data = _training_data(dataset, split.fit_interactions("valid"))
        model = tiny(epochs=7, eval_every=3, patience=10).fit(data, valid=split.valid)
        measured = [row["epoch"] for row in model.training_log_ if row["valid_ndcg@10"] is not None]
        assert measured == [3, 6, 7]  # and always the last epoch
        assert model.best_epoch_ in measured

    def test_refit_params_and_no_validation(self, fitted, planted):
        model, _ = fitted
        assert model.refit_params() == {"epochs": model.best_epoch_}
        assert 1 <= model.best_epoch_ <= TINY["epochs"]
        dataset, split = planted
        data = _training_data(dataset, split.fit_interactions("test"))
        refit = tiny(epochs=5).fit(data, valid=None)
        assert refit.best_epoch_ == 5 and len(refit.training_log_) == 5
        assert all(row["valid_ndcg@10"] is None for row in refit.training_log_)
        assert refit.refit_params() == {"epochs": 5}

    @pytest.mark.parametrize("loss", ["bce", "sampled_ce"])
    def test_sampled_losses(self, planted, loss):
        dataset, split = planted
        data = _training_data(dataset, split.fit_interactions("valid"))
        model = tiny(loss=loss, n_negatives=8, epochs=25, patience=25).fit(data, valid=split.valid)
        losses = [row["loss"] for row in model.training_log_]
        assert np.isfinite(losses).all() and losses[-1] < losses[0]
        scores = model.score(np.arange(data.n_users))
        assert np.isfinite(scores).all()
        assert model.best_valid_ndcg_ > 0.2  # random ranking of 50 items gives about 0.06

    def test_bad_loss_raises(self, planted):
        dataset, split = planted
        with pytest.raises(ValueError, match="loss"):
            tiny(loss="hinge").fit(_training_data(dataset, split.train))

    def test_different_seeds_differ(self, planted):
        dataset, split = planted
        data = _training_data(dataset, split.train)
        a = tiny(seed=1, epochs=2).fit(data).score(np.arange(5))
        b = tiny(seed=2, epochs=2).fit(data).score(np.arange(5))
        assert not np.array_equal(a, b)

    def test_global_torch_state_untouched(self, planted):
        dataset, split = planted
        data = _training_data(dataset, split.train)
        rng = torch.get_rng_state()
        threads = torch.get_num_threads()
        deterministic = torch.are_deterministic_algorithms_enabled()
        tiny(epochs=2, num_threads=1 if threads != 1 else 2).fit(data).score(np.arange(3))
        assert torch.equal(rng, torch.get_rng_state())
        assert torch.get_num_threads() == threads
        assert torch.are_deterministic_algorithms_enabled() == deterministic

    def test_update_history(self, fitted, planted, tmp_path: Path):
        """Test-time histories that include the validation item, same weights."""
        model, _ = fitted
        dataset, split = planted
        model.save(tmp_path / "m")
        moved = Recommender.load(tmp_path / "m")
        users = split.eval_users("valid")
        before = moved.score(users)
        moved.update_history(_training_data(dataset, split.fit_interactions("test")))
        assert not np.allclose(moved.score(users), before)
        # each user's validation item is now seen, so never recommended
        lists = moved.recommend(split.valid["user"].to_numpy(), 10)
        assert not (lists.items == split.valid["item"].to_numpy()[:, None]).any()
        np.testing.assert_array_equal(model.score(users), before)  # the original is unchanged
        with pytest.raises(ValueError, match="users"):
            moved.update_history(_training_data(make_planted_dataset(users_per_cluster=5)))

    # -------------------------------------------------------------- cost and persistence
    def test_n_parameters(self, fitted):
        model, data = fitted
        total, trainable = model.n_parameters()
        h, blocks = TINY["hidden"], TINY["n_blocks"]
        per_block = 2 * 2 * h + (h * 3 * h + 3 * h) + (h * h + h) + 2 * (h * h + h)
        assert (
            total
            == trainable
            == (data.n_items + 1) * h + TINY["max_len"] * h + blocks * per_block + 2 * h
        )

    def test_saved_as_state_dict(self, fitted, tmp_path: Path):
        model, _ = fitted
        model.save(tmp_path / "m")
        weights = torch.load(tmp_path / "m" / "weights.pt", map_location="cpu", weights_only=True)
        assert set(weights) == set(model.network_.state_dict())
        with open(tmp_path / "m" / "state.pkl", "rb") as fh:
            state = pickle.load(fh)
        assert "network_" not in state
        assert not any(isinstance(v, torch.nn.Module) for v in state.values())
        assert hasattr(model, "network_")  # saving leaves the model usable
        loaded = Recommender.load(tmp_path / "m")
        assert loaded.best_epoch_ == model.best_epoch_
        assert loaded.training_log_ == model.training_log_
        assert next(loaded.network_.parameters()).device.type == "cpu"

    def test_registry(self):
        assert isinstance(create_model("sasrec", {"hidden": 32}), SASRec)
        assert len(SASRec.param_grid) and np.prod([len(v) for v in SASRec.param_grid.values()]) <= 6
