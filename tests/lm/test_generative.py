"""The generative LM ranker on the tiny Llama of ``conftest.py`` (and, slow, on SmolLM2)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recarena.models.base import Recommender, TrainingData
from recarena.models.lm_generative import (
    EMPTY_HISTORY,
    UNSCORABLE_SCORE,
    GenerativeRanker,
    _cache_kwarg,
    _output_cache,
    expand_cache,
)
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
class TestGenerativeLoRAConformance(RecommenderConformance):
    """LoRA-tuned: a few epochs teach the random tiny model the planted clusters.

    The titles of a cluster share their words, so predicting the next title's words from
    the history's is learnable; ``planted_precision`` keeps the suite's 0.8.
    """

    model_dir: Path

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _tiny_model(cls, tiny_llama_dir: Path) -> None:
        cls.model_dir = tiny_llama_dir

    def make_model(self, seed: int = 0):
        return _ranker(
            self.model_dir,
            history_len=3,
            lora=True,
            lr=1e-2,
            epochs=2,
            max_train_pairs=400,
            train_batch_size=16,
            max_valid_users=30,
            n_valid_negatives=9,
            seed=seed,
        )

    def test_training_log_and_refit_params(self, fitted):
        model, _ = fitted
        assert model.fusion == "fine-tuning" and model.uses_validation
        log = model.training_log_
        assert [row["epoch"] for row in log] == [0, 1, 2]
        assert log[0]["train_loss"] is None  # epoch 0: the untrained adapter
        assert log[2]["train_loss"] < log[1]["train_loss"]
        # LoRA lowers the held-out title's loss and ranks the held-out item higher
        best = log[model.best_epoch_]
        assert model.best_epoch_ >= 1
        assert best["valid_loglik_per_token"] > log[0]["valid_loglik_per_token"]
        assert best["valid_ndcg@10"] > log[0]["valid_ndcg@10"]
        assert model.refit_params() == {"epochs": model.best_epoch_}

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
        assert sorted(config["target_modules"]) == ["q_proj", "v_proj"] and config["r"] == 8
        assert not list((tmp_path / "m").glob("model.safetensors"))  # no base weights


class TestGenerativeZeroShotConformance(RecommenderConformance):
    """Zero-shot on a randomly initialised 2-layer decoder.

    Such a model knows nothing about the planted clusters (its top 5 are from the user's
    cluster about 1/3 of the time, by chance), so ``planted_precision`` is 0: this class runs
    the rest of the suite (shapes, candidates, cold users and items, determinism, save/load)
    on the zero-shot path; the LoRA class above recovers the structure.
    """

    planted_precision = 0.0
    model_dir: Path

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _tiny_model(cls, tiny_llama_dir: Path) -> None:
        cls.model_dir = tiny_llama_dir

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
        prefix = _output_cache(lm(input_ids=prompt, use_cache=True))
        keys = [layer.keys.clone() for layer in prefix.layers]
        values = [layer.values.clone() for layer in prefix.layers]
        cont = torch.tensor([model._candidate_ids(7)] * 3)
        results = []
        for _ in range(2):  # the same prefix serves twice with the same result
            cache = expand_cache(prefix, 3)
            logits = lm(input_ids=cont, use_cache=True, **{_cache_kwarg(lm): cache}).logits
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
    from tests.conftest import make_planted_dataset
    from tests.models.conformance import _training_data

    data = _training_data(make_planted_dataset())
    model = _ranker(
        tiny_llama_dir, history_len=3, lora=True, lr=1e-2, epochs=1, max_train_pairs=64
    ).fit(data)
    assert model.best_epoch_ == 1 and [r["epoch"] for r in model.training_log_] == [1]
    zero = _ranker(tiny_llama_dir, history_len=3, lora=True, epochs=0).fit(data)
    assert zero.best_epoch_ == 0 and zero.training_log_ == []
    plain = _ranker(tiny_llama_dir, history_len=3).fit(data)
    users, cand = np.arange(5), np.tile(np.arange(10), (5, 1))
    # an untrained adapter (LoRA's B starts at zero) scores like the zero-shot model
    np.testing.assert_allclose(zero.score(users, cand), plain.score(users, cand), atol=1e-5)


def test_bad_parameters_fail_fit(tiny_llama_dir: Path):
    with pytest.raises(ValueError, match="length_norm"):
        _ranker(tiny_llama_dir, length_norm="max").fit(_data())
    with pytest.raises(ValueError, match="history"):
        _ranker(tiny_llama_dir, prompt="no placeholder").fit(_data())
    with pytest.raises(ValueError, match="early_stopping"):
        _ranker(tiny_llama_dir, early_stopping="auc").fit(_data())


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
