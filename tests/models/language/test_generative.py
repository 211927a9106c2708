"""The generative LM ranker on the tiny Llama of ``conftest.py`` (and, slow, on SmolLM2)."""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recarena.models.base import Recommender, TrainingData
from recarena.models.language.generative import (
    EMPTY_HISTORY,
    UNSCORABLE_SCORE,
    GenerativeRanker,
    expand_cache,
)
from recarena.models.language.generative.network import cache_kwarg, output_cache
from tests.conftest import make_planted_dataset
from tests.models.conformance import RecommenderConformance

# a prompt short enough for the tiny Llama's 64 positions
TINY_PROMPT = "{history} ->"

TITLES = [
    "space rocket galaxy orbit story 1",
    "Toy Story (1995)",
    "Toy Story 2 (1999)",
    "Schindler's List (1993)",
    "Heat (1995)",
    "cooking recipe kitchen baking story 2",
    "",  # no text: unscorable
    "a much longer item description that goes on and on about the plot",
]
EMPTY_ITEM = 6


def _data(titles: list[str] | None = None, *, with_title_column: bool = True, cache_dir=None):
    titles = TITLES if titles is None else titles
    # user 0: items 0, 1, 2 in time order; user 1: item 3; user 2: nothing; user 3: 6, 4
    inter = pd.DataFrame(
        {
            "user": np.array([0, 0, 0, 1, 3, 3], dtype=np.int32),
            "item": np.array([0, 1, 2, 3, 6, 4], dtype=np.int32),
            "timestamp": np.arange(6, dtype=np.int64),
        }
    )
    items = pd.DataFrame({"title": titles}) if with_title_column else pd.DataFrame()
    return TrainingData(
        interactions=inter,
        n_users=4,
        n_items=len(titles),
        items=items,
        item_text=[f"Title: {t}." if t else "" for t in titles],
        cache_dir=cache_dir,
    )


def _ranker(model_dir: Path | str, **params) -> GenerativeRanker:
    # the fixture titles keep their years so the prompt tests can see them
    defaults = dict(
        prompt=TINY_PROMPT, device="cpu", num_threads=1, progress=False, strip_year=False
    )
    return GenerativeRanker(model=str(model_dir), **{**defaults, **params})


SCORABLE = np.array([[0, 1, 2, 3, 4, 5, 7]] * 4)


# ---------------------------------------------------------------------------- conformance
def pretrain_on_clusters(source: Path, target: Path, *, steps: int = 60, seed: int = 0) -> Path:
    """The tiny Llama after a little language modelling of cluster-coherent title lists.

    Lines read like the ranker's prompts and answers, "t1; t2 -> t3", with every title of
    a line from one planted cluster: what a pretrained decoder knows about which titles go
    together. Zero-shot log-likelihood scoring must then recover the planted clusters. The
    lines are drawn from the cluster words alone, not from the planted users' histories.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shutil.copytree(source, target)
    dataset = make_planted_dataset()
    titles = dataset.items["title"].tolist()
    cluster = np.array([int(str(r)[1:].split("_")[0]) for r in dataset.item_ids])
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(400):
        pool = np.flatnonzero(cluster == rng.integers(cluster.max() + 1))
        pick = rng.choice(pool, size=rng.integers(2, 5), replace=False)
        lines.append("; ".join(titles[i] for i in pick[:-1]) + " -> " + titles[pick[-1]])
    tok = AutoTokenizer.from_pretrained(target)
    model = AutoModelForCausalLM.from_pretrained(target)
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        enc = tok([lines[i] for i in rng.choice(len(lines), 32)], return_tensors="pt", padding=True)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        model(**enc, labels=labels).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval().save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def cluster_llama_dir(tiny_llama_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pretrain_on_clusters(tiny_llama_dir, tmp_path_factory.mktemp("x") / "cluster-llama")


#: the LoRA class's budget: the model's default recipe (loss, learning rate, schedule, LoRA
#: rank and targets, batch size) on fewer pairs, epochs and validation users
LORA_BUDGET = dict(epochs=2, max_train_pairs=128, max_valid_users=20, n_valid_negatives=9)


class TestGenerativeLoRAConformance(RecommenderConformance):
    """LoRA-tuned at the default recipe: two short epochs teach the *randomly initialised*
    tiny Llama the planted clusters (the titles of a cluster share their words), so the
    suite's ``planted_precision`` of 0.8 holds.
    """

    model_dir: Path

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _tiny_model(cls, tiny_llama_dir: Path) -> None:
        cls.model_dir = tiny_llama_dir

    def make_model(self, seed: int = 0):
        return _ranker(self.model_dir, history_len=3, lora=True, seed=seed, **LORA_BUDGET)

    def test_training_log_and_refit_params(self, fitted):
        model, _ = fitted
        assert model.fusion == "fine-tuning" and model.uses_validation
        log = model.training_log_
        assert [row["epoch"] for row in log] == [0, 1, 2]
        assert log[0]["train_loss"] is None  # epoch 0: the untrained adapter
        # the contrastive loss starts near ln(1 + negatives) and falls
        assert log[1]["train_loss"] < np.log(10) and log[2]["train_loss"] < log[1]["train_loss"]
        # LoRA ranks the held-out item higher than the untrained model, epoch after epoch
        ndcg = [row["valid_ndcg@10"] for row in log]
        assert ndcg[0] < ndcg[1] < ndcg[2]
        assert model.best_epoch_ == 2 and ndcg[2] > ndcg[0] + 0.1
        assert model.refit_params() == {"epochs": model.best_epoch_}
        # the no-history (popularity) check: for the untrained and the kept adapter
        for row in (log[0], log[model.best_epoch_]):
            assert 0 <= row["valid_ndcg@10_no_history"] <= 1
            assert -1 <= row["no_history_popularity_spearman"] <= 1
        assert "valid_ndcg@10_no_history" not in log[1]
        assert model.train_seconds_ > 0 and model.train_examples_per_second_ > 0

    def test_parameters_count_the_adapter(self, fitted):
        model, _ = fitted
        total, trainable = model.n_parameters()
        assert 0 < trainable < total
        assert total == model.lm_parameters_ + trainable

    def test_adapter_is_saved_with_peft(self, fitted, tmp_path: Path):
        model, _ = fitted
        model.save(tmp_path / "m")
        adapter = tmp_path / "m" / "adapter"
        assert (adapter / "adapter_config.json").is_file()
        config = json.loads((adapter / "adapter_config.json").read_text())
        # "all-linear": every projection of the decoder blocks, not the output head
        names = {str(t).rsplit(".", 1)[-1] for t in config["target_modules"]}
        assert names == {
            "q_proj",
            "k_proj",
            "v_proj",
            "o_proj",
            "gate_proj",
            "up_proj",
            "down_proj",
        }
        assert config["r"] == 8
        assert not list((tmp_path / "m").glob("model.safetensors"))  # no base weights


class TestGenerativeZeroShotConformance(RecommenderConformance):
    """Zero-shot on the tiny Llama pretrained on cluster-coherent title lists.

    Such a decoder knows which titles go together (as a pretrained LM knows films), so
    scoring each candidate by its log-likelihood after the history must recover the planted
    clusters: the suite's ``planted_precision`` of 0.8 holds. (The randomly initialised
    tiny Llama ranks by chance: its top 5 are from the user's cluster about 1/3 of the time.)
    """

    model_dir: Path

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _tiny_model(cls, cluster_llama_dir: Path) -> None:
        cls.model_dir = cluster_llama_dir

    def make_model(self, seed: int = 0):
        return _ranker(self.model_dir, history_len=3, seed=seed)

    def test_zero_shot_saves_no_weights(self, fitted, tmp_path: Path):
        model, _ = fitted
        assert model.fusion == "zero-shot" and not model.uses_validation
        assert model.n_parameters() == (model.lm_parameters_, 0)
        model.save(tmp_path / "m")
        assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "state.pkl"]


# ---------------------------------------------------------------------------- scoring
def test_kv_cache_scores_equal_full_sequence_scores(tiny_llama_dir: Path):
    import torch

    model = _ranker(tiny_llama_dir, batch_size=3).fit(_data())
    lm = model._ensure_lm()
    for user in range(4):
        prompt = model._user_prompt_ids(user)
        conts = [model._candidate_ids(i) for i in SCORABLE[0]]
        assert len({len(c) for c in conts}) > 2  # batches are padded
        cached, counts = model._continuation_logprobs(prompt, conts, kv_cache=True)
        full, _ = model._continuation_logprobs(prompt, conts, kv_cache=False)
        np.testing.assert_allclose(cached, full, atol=1e-4)
        np.testing.assert_array_equal(counts, [len(c) for c in conts])
        # and both equal each prompt + candidate sequence run alone, without padding
        with torch.no_grad():
            for k, cont in enumerate(conts):
                logp = lm(input_ids=torch.tensor([prompt + cont])).logits[0].log_softmax(-1)
                ref = sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(cont))
                assert cached[k] == pytest.approx(ref, abs=1e-4)
    # the public API agrees too
    no_cache = _ranker(tiny_llama_dir, kv_cache=False).fit(_data())
    np.testing.assert_allclose(
        model.score(np.arange(4), SCORABLE), no_cache.score(np.arange(4), SCORABLE), atol=1e-4
    )


def test_shared_prompt_cache_is_never_modified(tiny_llama_dir: Path):
    import torch

    model = _ranker(tiny_llama_dir).fit(_data())
    lm = model._ensure_lm()
    prompt = torch.tensor([model._user_prompt_ids(0)])
    with torch.inference_mode():
        prefix = output_cache(lm(input_ids=prompt, use_cache=True))
        keys = [layer.keys.clone() for layer in prefix.layers]
        values = [layer.values.clone() for layer in prefix.layers]
        cont = torch.tensor([model._candidate_ids(7)] * 3)
        results = []
        for _ in range(2):  # the same prefix serves twice with the same result
            cache = expand_cache(prefix, 3)
            logits = lm(input_ids=cont, use_cache=True, **{cache_kwarg(lm): cache}).logits
            results.append(logits)
            assert cache.get_seq_length() == prompt.shape[1] + cont.shape[1]
            assert cache.layers[0].keys.shape[0] == 3
        assert prefix.get_seq_length() == prompt.shape[1]
        for layer, k, v in zip(prefix.layers, keys, values, strict=True):
            assert layer.keys.shape[0] == 1
            assert torch.equal(layer.keys, k) and torch.equal(layer.values, v)
        assert torch.equal(results[0], results[1])


def test_batching_and_padding_do_not_change_scores(tiny_llama_dir: Path):
    users = np.arange(4)
    scores = [
        _ranker(tiny_llama_dir, batch_size=b).fit(_data()).score(users, SCORABLE)
        for b in (1, 2, 64)
    ]
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-5)
    np.testing.assert_allclose(scores[0], scores[2], atol=1e-5)


def test_scores_do_not_depend_on_position_or_other_candidates(tiny_llama_dir: Path):
    assert GenerativeRanker.list_position_independent
    model = _ranker(tiny_llama_dir).fit(_data())
    base = model.score(np.array([0]), SCORABLE[:1])[0]
    perm = np.random.default_rng(0).permutation(SCORABLE.shape[1])
    permuted = model.score(np.array([0]), SCORABLE[:1, perm])[0]
    np.testing.assert_allclose(permuted, base[perm], atol=1e-5)
    alone = model.score(np.array([0]), np.array([[7]]))[0, 0]
    assert alone == pytest.approx(base[-1], abs=1e-5)
    dup = model.score(np.array([0]), np.array([[7, 1, 7]]))[0]
    assert dup[0] == dup[2] == pytest.approx(alone, abs=1e-5)


def test_length_norm_mean_is_sum_per_token(tiny_llama_dir: Path):
    total = _ranker(tiny_llama_dir).fit(_data())
    mean = _ranker(tiny_llama_dir, length_norm="mean").fit(_data())
    s, m = total.score(np.arange(4), SCORABLE), mean.score(np.arange(4), SCORABLE)
    tokens = np.array([len(total._candidate_ids(i)) for i in SCORABLE[0]])
    np.testing.assert_allclose(s / tokens, m, rtol=1e-5)
    assert (tokens > 1).all() and (s < m).all()


def test_prior_correction_subtracts_the_empty_history_likelihood(tiny_llama_dir: Path):
    plain = _ranker(tiny_llama_dir).fit(_data())
    pmi = _ranker(tiny_llama_dir, prior_correction=1.0).fit(_data())
    s, p = plain.score(np.arange(4), SCORABLE), pmi.score(np.arange(4), SCORABLE)
    # user 2 has no history: their prompt is the empty-history prompt, so PMI is 0
    np.testing.assert_allclose(p[2], 0.0, atol=1e-4)
    np.testing.assert_allclose(p, s - s[2], atol=1e-4)


def test_unscorable_candidates_rank_last_and_are_counted(tiny_llama_dir: Path):
    model = _ranker(tiny_llama_dir).fit(_data())
    np.testing.assert_array_equal(model.unscorable_items_, [EMPTY_ITEM])
    cand = np.array([[EMPTY_ITEM, 1, 2, 3], [4, EMPTY_ITEM, EMPTY_ITEM, 5]])
    scores = model.score(np.array([0, 1]), cand)
    assert np.isfinite(scores).all()
    assert scores[0, 0] == scores[1, 1] == scores[1, 2] == UNSCORABLE_SCORE
    assert (scores[cand != EMPTY_ITEM] > UNSCORABLE_SCORE).all()
    assert model.n_unscorable_ == 3 and model.n_scored_ == 8  # every candidate slot counts
    lists = model.recommend(np.array([0]), 4, candidates=cand[:1], exclude_seen=False)
    assert lists.items[0, -1] == EMPTY_ITEM


# ---------------------------------------------------------------------------- prompts
def test_prompt_lists_the_recent_history_in_order(tiny_llama_dir: Path):
    model = _ranker(tiny_llama_dir, prompt="Seen: {history}. Next:", history_len=2).fit(_data())
    model._ensure_lm()
    tok = model._tokenizer

    def text(user: int) -> str:
        return tok.decode(model._user_prompt_ids(user), skip_special_tokens=True)

    assert text(0) == "Seen: Toy Story (1995); Toy Story 2 (1999). Next:"
    assert text(1) == "Seen: Schindler's List (1993). Next:"
    assert text(2) == f"Seen: {EMPTY_HISTORY}. Next:"
    assert text(3) == "Seen: Heat (1995). Next:"  # the item without text is left out
    # the continuation starts with a space after "Next:"
    assert tok.decode(model._candidate_ids(4)) == " Heat (1995)"


def test_long_prompts_keep_the_most_recent_titles(tiny_llama_dir: Path):
    model = _ranker(tiny_llama_dir, history_len=None, max_prompt_tokens=14).fit(_data())
    model._ensure_lm()
    ids = model._user_prompt_ids(0)
    assert len(ids) <= 14
    text = model._tokenizer.decode(ids, skip_special_tokens=True)
    assert text.endswith("Toy Story 2 (1999) ->") and "space" not in text
    # the tiny model has 64 positions: prompts leave room for max_candidate_tokens
    wide = _ranker(tiny_llama_dir, history_len=None, max_candidate_tokens=40).fit(_data())
    wide._ensure_lm()
    assert len(wide._user_prompt_ids(0)) <= 64 - 40 - 1


def test_text_field_and_item_text_fallback(tiny_llama_dir: Path):
    titled = _ranker(tiny_llama_dir).fit(_data())
    assert titled.item_texts_[1] == "Toy Story (1995)"
    untitled = _ranker(tiny_llama_dir).fit(_data(with_title_column=False))
    assert untitled.item_texts_[1] == "Title: Toy Story (1995)."
    forced = _ranker(tiny_llama_dir, text_field=None).fit(_data())
    assert forced.item_texts_ == untitled.item_texts_
    assert untitled.item_texts_[EMPTY_ITEM] == ""


def test_chat_template(tiny_llama_dir: Path, tmp_path: Path):
    from transformers import AutoTokenizer

    with pytest.raises(ValueError, match="no chat template"):
        _ranker(tiny_llama_dir, chat_template=True).fit(_data()).score(
            np.array([0]), np.array([[1, 2]])
        )
    folder = tmp_path / "chat-llama"
    shutil.copytree(tiny_llama_dir, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    tok.chat_template = (
        "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
        "{% if add_generation_prompt %}<s>assistant: {% endif %}"
    )
    tok.save_pretrained(folder)
    chat = dict(prompt="{history}?", chat_template=True, max_candidate_tokens=16)
    model = _ranker(folder, batch_size=2, **chat).fit(_data())
    model._ensure_lm()
    prompt = model._tokenizer.decode(model._user_prompt_ids(1))
    assert prompt == "<s>user: Schindler's List (1993)?</s><s>assistant: "
    assert model._tokenizer.decode(model._candidate_ids(4)) == "Heat (1995)"  # no space
    no_cache = _ranker(folder, kv_cache=False, **chat)
    np.testing.assert_allclose(
        model.score(np.arange(4), SCORABLE),
        no_cache.fit(_data()).score(np.arange(4), SCORABLE),
        atol=1e-4,
    )


def test_score_end_adds_the_end_of_sequence_token(tiny_llama_dir: Path):
    plain = _ranker(tiny_llama_dir).fit(_data())
    ended = _ranker(tiny_llama_dir, score_end=True).fit(_data())
    plain._ensure_lm(), ended._ensure_lm()
    eos = ended._tokenizer.eos_token_id
    assert ended._candidate_ids(4) == [*plain._candidate_ids(4), eos]
    assert (ended.score(np.arange(4), SCORABLE) < plain.score(np.arange(4), SCORABLE)).all()


# ---------------------------------------------------------------------------- the rest
def test_gguf_file_scores_like_the_folder_and_is_converted_once(
    tiny_llama_dir: Path, tiny_gguf_file: Path, tmp_path: Path
):
    first = _ranker(tiny_gguf_file).fit(_data(cache_dir=tmp_path))
    scores = first.score(np.arange(4), SCORABLE)
    assert not first.lm_from_converted_
    del first  # no live ranker holds the decoder now: the next one loads it again
    gc.collect()
    second = _ranker(tiny_gguf_file).fit(_data(cache_dir=tmp_path))
    np.testing.assert_allclose(second.score(np.arange(4), SCORABLE), scores, atol=1e-5)
    assert second.lm_from_converted_
    # the GGUF round trip (q/k layout, norm epsilon stored as float32) moves scores slightly
    folder = _ranker(tiny_llama_dir).fit(_data())
    np.testing.assert_allclose(scores, folder.score(np.arange(4), SCORABLE), rtol=1e-3)


def test_fusion_and_validation_follow_lora():
    assert GenerativeRanker.fusion == "zero-shot" and not GenerativeRanker.uses_validation
    assert GenerativeRanker.family == "generative-lm" and not GenerativeRanker.scores_full_catalog
    assert GenerativeRanker.uses_text and not GenerativeRanker.calibrated_scores
    tuned = GenerativeRanker(lora=True)
    assert tuned.fusion == "fine-tuning" and tuned.uses_validation
    assert tuned.clone(lora=False).fusion == "zero-shot"


def test_lora_without_validation_trains_the_given_epochs(tiny_llama_dir: Path):
    from tests.models.conformance import _training_data

    data = _training_data(make_planted_dataset())
    model = _ranker(tiny_llama_dir, history_len=3, lora=True, epochs=1, max_train_pairs=32).fit(
        data
    )
    assert model.best_epoch_ == 1 and [r["epoch"] for r in model.training_log_] == [1]
    zero = _ranker(tiny_llama_dir, history_len=3, lora=True, epochs=0).fit(data)
    assert zero.best_epoch_ == 0 and zero.training_log_ == []
    plain = _ranker(tiny_llama_dir, history_len=3).fit(data)
    users, cand = np.arange(5), np.tile(np.arange(10), (5, 1))
    # an untrained adapter (LoRA's B starts at zero) scores like the zero-shot model
    np.testing.assert_allclose(zero.score(users, cand), plain.score(users, cand), atol=1e-5)


def test_lora_layers_puts_the_adapter_into_the_top_blocks_only(tiny_llama_dir: Path):
    """``lora_layers = 1`` of the tiny decoder's 2 blocks: every LoRA weight sits in block 1,
    half the adapter of every block, and it trains (its B leaves zero, the scores move)."""
    from recarena.errors import ConfigError
    from tests.models.conformance import _training_data

    data = _training_data(make_planted_dataset())
    opts = dict(history_len=3, lora=True, epochs=1, max_train_pairs=32)
    every = _ranker(tiny_llama_dir, **opts).fit(data)
    top = _ranker(tiny_llama_dir, **opts, lora_layers=1).fit(data)
    names = [n for n, _ in top._session.lm.named_parameters() if "lora_" in n]
    assert names and all(".layers.1." in n for n in names)
    assert top.lora_parameters_ * 2 == every.lora_parameters_
    trained = [p for n, p in top._session.lm.named_parameters() if "lora_B" in n]
    assert any(p.abs().max().item() > 0 for p in trained)
    plain = _ranker(tiny_llama_dir, history_len=3).fit(data)
    users, cand = np.arange(5), np.tile(np.arange(10), (5, 1))
    assert not np.allclose(top.score(users, cand), plain.score(users, cand), atol=1e-4)
    with pytest.raises(ConfigError, match="has only 2 decoder blocks"):
        _ranker(tiny_llama_dir, **opts, lora_layers=3).fit(data)
    with pytest.raises(ValueError, match="lora_layers"):
        _ranker(tiny_llama_dir, lora_layers=0).check_params()
    with pytest.raises(ValueError, match="a list of module names"):
        _ranker(tiny_llama_dir, lora_layers=1, lora_target_modules=".*proj").check_params()
    assert GenerativeRanker.neutral_params == {"lora_layers": None}


# ---------------------------------------------------------------------------- LoRA training
def _planted_ranker(model_dir: Path, **params):
    from tests.models.conformance import _training_data

    data = _training_data(make_planted_dataset())
    model = _ranker(model_dir, history_len=3, **params).fit(data)
    model._ensure_lm()
    return model, data


def test_contrastive_batches_hold_the_positive_and_fresh_unseen_negatives(tiny_llama_dir: Path):
    from recarena.models.language.generative import NegativeSampler

    model, data = _planted_ranker(tiny_llama_dir, n_train_negatives=6)
    pairs = model._training_pairs(data.sequences)
    assert len(pairs) == len(data.interactions)  # every position of every history
    chosen = pairs[[0, 5, 17, 40]]
    chosen[0, 1] = 0  # an empty history
    sampler = NegativeSampler(data, model.unscorable_items_, seed=0)
    first = model._collate(chosen, data.sequences, sampler)
    second = model._collate(chosen, data.sequences, sampler)
    assert first["cand_ids"].shape[:2] == (4, 7)  # the positive + n_train_negatives
    seen = data.csr()
    tokens_of = {tuple(model._candidate_ids(i)): i for i in range(data.n_items)}
    for r, (user, position) in enumerate(chosen.tolist()):
        seq = data.sequences[user]
        # the prompt (left-padded) is the history before the position
        n = int(first["prompt_mask"][r].sum())
        assert first["prompt_ids"][r, -n:].tolist() == model._prompt_ids(
            seq[max(0, position - 3) : position]
        )
        items = []
        for ids, mask in zip(first["cand_ids"][r], first["cand_mask"][r], strict=True):
            items.append(tokens_of[tuple(ids[mask.bool()].tolist())])
        assert items[0] == seq[position]  # the positive first
        user_items = set(seen.indices[seen.indptr[user] : seen.indptr[user + 1]].tolist())
        assert len(set(items[1:])) == 6 and not set(items[1:]) & user_items
    # every draw brings new negatives (a new epoch sees other items)
    assert not torch_equal(first["cand_ids"][:, 1:], second["cand_ids"][:, 1:])


def torch_equal(a, b) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.equal(a, b))


def test_batched_contrastive_loss_is_the_mean_of_the_pairs_scored_alone(tiny_llama_dir: Path):
    import torch

    from recarena.models.language.generative import NegativeSampler
    from tests.models.conformance import _training_data

    data = _training_data(make_planted_dataset())
    # titles of several lengths, so that "mean" and "sum" differ
    data.items = data.items.assign(
        title=[t + " story" * (i % 3) for i, t in enumerate(data.items["title"])]
    )
    model = _ranker(tiny_llama_dir, history_len=3).fit(data)
    lm = model._ensure_lm()
    pairs = model._training_pairs(data.sequences)[[0, 3, 9, 22, 31, 60]]
    pairs[0, 1] = 0  # prompts of different lengths: left padding must not change a thing
    batch = model._collate(pairs, data.sequences, NegativeSampler(data, model.unscorable_items_, 0))
    assert len(set(batch["prompt_mask"].sum(1).tolist())) > 1
    alone: dict[str, list] = {"sum": [], "mean": []}
    for r in range(len(pairs)):
        n = int(batch["prompt_mask"][r].sum())
        prompt = batch["prompt_ids"][r, -n:].tolist()
        conts = [
            ids[mask.bool()].tolist()
            for ids, mask in zip(batch["cand_ids"][r], batch["cand_mask"][r], strict=True)
        ]
        # the scoring path (full sequences, no cache) gives the same softmax
        sums, counts = model._continuation_logprobs(prompt, conts, kv_cache=False)
        assert len(set(counts)) > 1
        for score, values in (("sum", sums), ("mean", sums / counts)):
            alone[score].append(-torch.log_softmax(torch.tensor(values), 0)[0])
    for score in ("mean", "sum"):
        model.train_score = score
        loss = model._contrastive_loss(lm, batch)
        assert loss.item() == pytest.approx(torch.stack(alone[score]).mean().item(), abs=1e-4)
    loss.backward()  # the gradient reaches the decoder's weights through the prompt cache
    assert all(p.grad is not None for p in lm.model.layers[0].self_attn.k_proj.parameters())


def test_generative_loss_trains_on_the_next_title(tiny_llama_dir: Path):
    model, data = _planted_ranker(
        tiny_llama_dir, lora=True, train_loss="generative", epochs=2, max_train_pairs=64
    )
    batch = model._collate(model._training_pairs(data.sequences)[:3], data.sequences, None)
    assert set(batch) == {"input_ids", "attention_mask", "labels"}
    log = model.training_log_
    assert [r["epoch"] for r in log] == [1, 2] and log[1]["train_loss"] < log[0]["train_loss"]


def test_default_grid_is_the_score_normalisation():
    grid = GenerativeRanker.param_grid
    assert grid == {"length_norm": ["sum", "mean"], "prior_correction": [0.0, 0.5, 1.0]}
    assert GenerativeRanker(lora=True).param_grid == grid
    defaults = GenerativeRanker().get_params()
    assert [v[0] for v in grid.values()] == [defaults[k] for k in grid]  # defaults tried first


def test_the_grid_costs_one_scoring_pass_and_its_choice_is_recorded(
    cluster_llama_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from recarena.config import parse_config
    from recarena.runner import run_experiment
    from tests.core.test_runner import _config

    scored: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    compute = GenerativeRanker._compute_logprobs

    def counting(self, prompt_ids, conts, **kwargs):
        scored.extend((tuple(prompt_ids), tuple(c)) for c in conts)
        return compute(self, prompt_ids, conts, **kwargs)

    monkeypatch.setattr(GenerativeRanker, "_compute_logprobs", counting)
    params = dict(
        model=str(cluster_llama_dir),
        prompt=TINY_PROMPT,
        history_len=3,
        strip_year=False,
        device="cpu",
        num_threads=1,
        progress=False,
    )
    events: list[str] = []
    cfg = parse_config(
        _config(
            tmp_path,
            [{"name": "lm-generative", "label": "gen", "params": params}],
            protocols=[{"kind": "sampled", "n_negatives": 9}],
        )
    )
    result = run_experiment(cfg, cache_dir=tmp_path / "cache", on_event=events.append)
    assert not result.failed
    mdir = result.run_dir / "models" / "gen"
    trials = json.loads((mdir / "tuning.json").read_text())["trials"]
    assert len(trials) == 6
    assert {(t["params"]["length_norm"], t["params"]["prior_correction"]) for t in trials} == {
        (n, w) for n in ("sum", "mean") for w in (0.0, 0.5, 1.0)
    }
    best = max(trials, key=lambda t: t["value"])
    done = json.loads((mdir / "DONE.json").read_text())
    assert done["chosen_on_validation"]
    for key in ("length_norm", "prior_correction"):
        assert done["params"][key] == best["params"][key]
    # the decoder scored each (prompt, candidate) pair once over the six grid points, the
    # empty-history priors and the test: six grid points cost what one does
    assert len(scored) == len(set(scored))
    assert any("chose" in e and "length_norm" in e for e in events)


def test_the_memo_serves_repeated_scores_and_only_equal_prompts(
    tiny_llama_dir: Path, cluster_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    calls: list[str] = []
    compute = GenerativeRanker._compute_logprobs

    def counting(self, prompt_ids, conts, **kwargs):
        calls.append(self.model)
        return compute(self, prompt_ids, conts, **kwargs)

    monkeypatch.setattr(GenerativeRanker, "_compute_logprobs", counting)
    users = np.arange(4)
    first = _ranker(tiny_llama_dir).fit(_data())
    scores = first.score(users, SCORABLE)
    n = len(calls)
    assert n == 4  # one decoder pass per user
    again = _ranker(tiny_llama_dir, length_norm="mean").fit(_data())
    np.testing.assert_allclose(
        again.score(users, SCORABLE) * [[len(first._candidate_ids(i)) for i in SCORABLE[0]]],
        scores,
        rtol=1e-5,
    )
    assert len(calls) == n  # read from the memo
    assert again._lm is first._lm  # one decoder in memory
    # another decoder, or the no-cache reference path, computes afresh
    other = _ranker(cluster_llama_dir).fit(_data())
    assert not np.allclose(other.score(users, SCORABLE), scores)
    assert calls[n:] == [str(cluster_llama_dir)] * 4
    _ranker(tiny_llama_dir, kv_cache=False).fit(_data()).score(users, SCORABLE)
    assert len(calls) == n + 8


def test_a_lora_twin_reuses_the_adapter_trained_with_its_training_parameters(
    tiny_llama_dir: Path, monkeypatch: pytest.MonkeyPatch
):
    import recarena.lm.training as training
    from tests.models.conformance import _training_data

    runs: list[int] = []
    loop = training.train_loop

    def counting(*args, **kwargs):
        runs.append(1)
        return loop(*args, **kwargs)

    monkeypatch.setattr(training, "train_loop", counting)
    dataset = make_planted_dataset()
    from recarena.splits import leave_one_out_split

    split = leave_one_out_split(dataset)
    data = _training_data(dataset, split.fit_interactions("valid"))
    budget = dict(history_len=3, lora=True, epochs=1, max_train_pairs=32, max_valid_users=10)
    first = _ranker(tiny_llama_dir, **budget).fit(data, valid=split.valid)
    twin = _ranker(tiny_llama_dir, length_norm="mean", prior_correction=0.5, **budget)
    twin.fit(data, valid=split.valid)
    assert len(runs) == 1 and twin._lm is first._lm
    assert twin.training_log_ == first.training_log_ and twin.best_epoch_ == first.best_epoch_
    users, cand = np.arange(4), np.tile(np.arange(12), (4, 1))
    sums = first.score(users, cand)
    counts = np.array([len(first._candidate_ids(i)) for i in range(12)])
    prior = first._prior_logliks(np.arange(12))
    np.testing.assert_allclose(twin.score(users, cand), (sums - 0.5 * prior) / counts, rtol=1e-4)
    # other training parameters, or other data, train again
    _ranker(tiny_llama_dir, **{**budget, "n_train_negatives": 4}).fit(data, valid=split.valid)
    _ranker(tiny_llama_dir, **budget).fit(data, valid=split.valid.iloc[1:])
    assert len(runs) == 3
    # once no ranker holds the adapter, it is gone
    del first, twin
    gc.collect()
    _ranker(tiny_llama_dir, **budget).fit(data, valid=split.valid)
    assert len(runs) == 4


def test_new_parameters_reach_the_model_hash():
    from recarena.config import ModelConfig
    from recarena.runner import model_hash

    def key(**params):
        return model_hash(ModelConfig(name="lm-generative", params={"lora": True, **params}))

    variants = [{}, {"n_train_negatives": 4}, {"train_loss": "generative"}, {"train_score": "mean"}]
    assert len({key(**v) for v in variants}) == len(variants)


def test_length_buckets_cover_every_candidate_once_and_pad_little():
    from recarena.models.language.generative import length_buckets

    rng = np.random.default_rng(0)
    lengths = np.concatenate([rng.integers(2, 7, size=40), [17, 23]])
    buckets = length_buckets(lengths, 16)
    assert sorted(np.concatenate(buckets).tolist()) == list(range(len(lengths)))
    assert all(len(b) <= 16 for b in buckets)
    padded = sum(len(b) * lengths[b].max() for b in buckets)
    naive = sum(16 * lengths[i : i + 16].max() for i in range(0, len(lengths), 16))
    assert padded < 0.6 * naive
    assert [b.tolist() for b in length_buckets(np.array([3, 3, 3]), 8)] == [[0, 1, 2]]


def test_bad_parameters_fail_fit(tiny_llama_dir: Path):
    with pytest.raises(ValueError, match="length_norm"):
        _ranker(tiny_llama_dir, length_norm="max").fit(_data())
    with pytest.raises(ValueError, match="history"):
        _ranker(tiny_llama_dir, prompt="no placeholder").fit(_data())
    with pytest.raises(ValueError, match="early_stopping"):
        _ranker(tiny_llama_dir, early_stopping="auc").fit(_data())
    with pytest.raises(ValueError, match="train_loss"):
        _ranker(tiny_llama_dir, lora=True, train_loss="bpr").fit(_data())
    with pytest.raises(ValueError, match="train_score"):
        _ranker(tiny_llama_dir, lora=True, train_score="max").fit(_data())
    with pytest.raises(ValueError, match="n_train_negatives"):
        _ranker(tiny_llama_dir, lora=True, n_train_negatives=0).fit(_data())


def test_only_re_ranks_candidates(tiny_llama_dir: Path):
    model = _ranker(tiny_llama_dir).fit(_data())
    with pytest.raises(NotImplementedError, match="re-ranks"):
        model.score(np.array([0]))


def test_registry_entry():
    from recarena.models.registry import create_model, get_model_class

    assert get_model_class("lm-generative") is GenerativeRanker
    model = create_model("lm-generative", {"model": "gemma3-270m", "lora": True})
    assert model.fusion == "fine-tuning" and model.get_params()["model"] == "gemma3-270m"


def test_save_load_of_a_zero_shot_model_reloads_lazily(tiny_llama_dir: Path, tmp_path: Path):
    model = _ranker(tiny_llama_dir).fit(_data())
    scores = model.score(np.arange(4), SCORABLE)
    model.save(tmp_path / "m")
    loaded = Recommender.load(tmp_path / "m")
    assert isinstance(loaded, GenerativeRanker) and loaded._lm is None
    np.testing.assert_allclose(loaded.score(np.arange(4), SCORABLE), scores, atol=1e-6)


# ---------------------------------------------------------------------------- slow: SmolLM2
MOVIES = [
    "Toy Story (1995)",
    "Toy Story 2 (1999)",
    "Schindler's List (1993)",
    "Star Wars (1977)",
    "The Empire Strikes Back (1980)",
    "Return of the Jedi (1983)",
    "Sense and Sensibility (1995)",
    "Aladdin (1992)",
    "The Lion King (1994)",
]


@pytest.fixture(scope="module")
def smollm2_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from recarena.lm.zoo import get_model

    cache = tmp_path_factory.mktemp("recarena-cache")
    get_model("smollm2-135m-instruct", cache, progress=False)
    return cache


def _movie_data(cache: Path) -> TrainingData:
    # user 0: Toy Story; user 1: Aladdin, The Lion King, Toy Story; user 2: Star Wars, Empire
    history = {0: [0], 1: [7, 8, 0], 2: [3, 4]}
    rows = [(u, i, t) for u, items in history.items() for t, i in enumerate(items)]
    inter = pd.DataFrame(rows, columns=["user", "item", "timestamp"]).astype(
        {"user": np.int32, "item": np.int32, "timestamp": np.int64}
    )
    return TrainingData(
        interactions=inter,
        n_users=3,
        n_items=len(MOVIES),
        items=pd.DataFrame({"title": MOVIES}),
        item_text=MOVIES,
        cache_dir=cache,
    )


@pytest.mark.slow
def test_smollm2_prefers_the_sequel(smollm2_cache: Path):
    data = _movie_data(smollm2_cache)
    first = GenerativeRanker(device="cpu", progress=False).fit(data)
    # (sequel, unrelated film) per user
    pairs = np.array([[1, 2], [1, 2], [5, 6]])
    scores = first.score(np.arange(3), pairs)
    assert not first.lm_from_converted_  # the first load dequantized the GGUF file
    assert first.n_parameters() == (134_515_008, 0)
    assert (scores[:, 0] > scores[:, 1]).all(), scores
    del first  # no live ranker holds the decoder now: the next one loads it again
    gc.collect()
    second = GenerativeRanker(device="cpu", progress=False).fit(data)
    np.testing.assert_allclose(second.score(np.arange(3), pairs), scores, atol=1e-3)
    assert second.lm_from_converted_  # later loads read the float copy


def test_strip_year_drops_only_a_trailing_year():
    titles = ["Toy Story (1995)", "Heat (1995) ", "1984", "(500) Days of Summer (2009)", "(1999)"]
    inter = pd.DataFrame({"user": [0], "item": [0], "timestamp": [0]}).astype(
        {"user": np.int32, "item": np.int32, "timestamp": np.int64}
    )
    data = TrainingData(
        interactions=inter, n_users=1, n_items=len(titles), items=pd.DataFrame({"title": titles})
    )
    stripped = GenerativeRanker(strip_year=True)._item_texts(data)
    assert stripped == ["Toy Story", "Heat", "1984", "(500) Days of Summer", "(1999)"]
    kept = GenerativeRanker(strip_year=False)._item_texts(data)
    assert kept == [
        "Toy Story (1995)",
        "Heat (1995)",
        "1984",
        "(500) Days of Summer (2009)",
        "(1999)",
    ]


def test_article_first_moves_a_trailing_article_back_to_the_front():
    titles = [
        "Usual Suspects, The (1995)",
        "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
        "Good, the Bad and the Ugly, The (1966)",
        "Man Who Knew Too Little, A (1997)",
        "Toy Story (1995)",
    ]
    inter = pd.DataFrame({"user": [0], "item": [0], "timestamp": [0]}).astype(
        {"user": np.int32, "item": np.int32, "timestamp": np.int64}
    )
    data = TrainingData(
        interactions=inter, n_users=1, n_items=len(titles), items=pd.DataFrame({"title": titles})
    )
    assert GenerativeRanker(article_first=True)._item_texts(data) == [
        "The Usual Suspects",
        "The City of Lost Children (Cité des enfants perdus, La)",
        "The Good, the Bad and the Ugly",
        "A Man Who Knew Too Little",
        "Toy Story",
    ]
    assert GenerativeRanker()._item_texts(data)[0] == "Usual Suspects, The"


# ---------------------------------------------------------------------------- user attributes
def _data_with_users() -> TrainingData:
    data = _data()
    data.users = pd.DataFrame({"user": [0, 1, 2, 3], "gender": ["F", "M", "F", "M"]})
    return data


def test_the_prompt_names_user_attributes(tiny_llama_dir):
    ranker = _ranker(
        tiny_llama_dir,
        prompt="a {user:gender}: {history} ->",
        user_values={"gender": {"F": "woman", "M": "man"}},
    ).fit(_data_with_users())
    ranker._ensure_lm()
    tok = ranker._tokenizer
    assert tok.decode(ranker._user_prompt_ids(0), skip_special_tokens=True).startswith("a woman:")
    assert tok.decode(ranker._user_prompt_ids(1), skip_special_tokens=True).startswith("a man:")
    # no user (the prior's empty-history prompt): the placeholder is left empty
    assert tok.decode(
        ranker._prompt_ids(np.empty(0, dtype=np.int64)), skip_special_tokens=True
    ).startswith("a :")
    with pytest.raises(ValueError, match=r"lacks; it has \['gender'\]"):
        _ranker(tiny_llama_dir, prompt="{user:age} {history} ->").fit(_data_with_users())
    with pytest.raises(ValueError, match="no user table"):
        _ranker(tiny_llama_dir, prompt="{user:age} {history} ->").fit(_data())


def test_the_counterfactual_probe_swaps_only_the_attribute(tiny_llama_dir):
    from recarena.metrics.counterfactual import counterfactual_probe

    data = _data_with_users()
    ranker = _ranker(tiny_llama_dir, prompt="a {user:gender}: {history} ->").fit(data)
    users = np.array([0, 1, 3])
    before = ranker.score(users, SCORABLE[:3])
    probe = counterfactual_probe(
        ranker,
        users,
        SCORABLE[:3],
        "gender",
        {"F": "M", "M": "F"},
        k=3,
        positive=np.array([0, 1, 2]),
        item_groups={"first half": np.arange(8) < 4},
        n_boot=50,
    )
    assert not probe["invariant"] and probe["n_users"] == 3
    assert probe["mean_abs_score_change"] > 0  # the tiny decoder reads the word
    assert 0 <= probe["overlap_at_k"]["mean"] <= 1
    assert set(probe["by_value"]) == {"F", "M"}
    # each direction of the swap has every statistic, over its own users
    for value, row in probe["by_value"].items():
        assert row["to"] == {"F": "M", "M": "F"}[value]
        assert {"overlap_at_k", "rank_shift", "changed_users", "ndcg@3_change"} <= set(row)
        assert len(row["exposure"]) == 1
    assert sum(row["n_users"] for row in probe["by_value"].values()) == 3
    # the pooled change is the users' weighted mean of the directions'
    pooled = sum(
        row["n_users"] * row["ndcg@3_change"]["mean"] for row in probe["by_value"].values()
    )
    assert pooled / 3 == pytest.approx(probe["ndcg@3_change"]["mean"])
    assert len(probe["exposure"]) == 1 and "ndcg@3_change" in probe
    # the model reads its attributes back unchanged
    assert np.array_equal(ranker.score(users, SCORABLE[:3]), before)
    # a ranker whose prompt does not name the attribute is invariant by construction
    plain = _ranker(tiny_llama_dir).fit(data)
    out = counterfactual_probe(plain, users, SCORABLE[:3], "gender", {"F": "M"})
    assert out["invariant"] and "does not read" in out["reason"]
