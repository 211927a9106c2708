"""Model registry: friendly names to classes, imported only when used.

Stability: **stable**. A config names a model by its registry name (``"ease"``) or by an
import path (``"my_package.my_module:MyModel"``). `register_model` adds a class of your own.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass

from recarena._classes import resolve_class
from recarena.errors import ConfigError
from recarena.models.base import Recommender


@dataclass(frozen=True)
class ModelEntry:
    name: str
    target: str  # "module:Class"
    family: str
    summary: str
    needs: str = ""  # optional extra needed ("lm"), shown by `recarena models list`


_ENTRIES: dict[str, ModelEntry] = {}


def _add(name: str, target: str, family: str, summary: str, needs: str = "") -> None:
    _ENTRIES[name] = ModelEntry(name, target, family, summary, needs)


# classical baselines
_add(
    "random",
    "recarena.models.classical.baselines:RandomRecommender",
    "classical",
    "uniformly random scores (a floor every model must clear)",
)
_add(
    "most_popular",
    "recarena.models.classical.baselines:MostPopular",
    "classical",
    "items ranked by number of training users",
)
_add(
    "itemknn",
    "recarena.models.classical.itemknn:ItemKNN",
    "classical",
    "item-item cosine with shrinkage, top-k neighbours",
)
_add(
    "ease",
    "recarena.models.classical.ease:EASE",
    "classical",
    "EASE^R closed-form linear autoencoder (Steck, 2019)",
)
_add(
    "als",
    "recarena.models.classical.implicit_mf:ALS",
    "classical",
    "implicit-feedback ALS matrix factorization (implicit library)",
)
_add(
    "bpr",
    "recarena.models.classical.implicit_mf:BPR",
    "classical",
    "Bayesian personalized ranking MF (implicit library)",
)
_add(
    "sasrec",
    "recarena.models.classical.sasrec:SASRec",
    "classical",
    "self-attentive sequential recommender, full softmax CE, early stopping",
)
_add(
    "tfidf",
    "recarena.models.content.text_retrieval:TfidfRecommender",
    "content",
    "TF-IDF over item text; user profile = mean of history vectors",
)
_add(
    "bm25",
    "recarena.models.content.text_retrieval:BM25Recommender",
    "content",
    "BM25-weighted item text; user profile = mean of history vectors",
)

# language models: frozen features
_add(
    "lm-frozen",
    "recarena.models.language.frozen:FrozenLMRecommender",
    "frozen-lm",
    "frozen LM item-text vectors; user = recency-weighted history mean; cosine",
    needs="lm",
)

# language models: joint training and text features in trained models
_add(
    "lm-two-tower",
    "recarena.models.language.two_tower:TwoTowerRecommender",
    "two-tower",
    "LM item tower (LoRA or full) + ID embeddings, pooled-history user tower, in-batch softmax",
    needs="lm",
)
_add(
    "lm-text-sasrec",
    "recarena.models.language.text_sasrec:TextSASRec",
    "lm-features-trained",
    "SASRec over frozen LM text vectors through a trained adaptor (UniSRec-style), +/- IDs",
    needs="lm",
)
_add(
    "lm-text-sasrec-joint",
    "recarena.models.language.text_sasrec:JointTextSASRec",
    "lm-features-trained",
    "text-SASRec, then the LM's top layers (LoRA or full) trained with it (Recformer-style), "
    "kept only if better on validation",
    needs="lm",
)

# language models: fine-tuned cross-encoder
_add(
    "lm-cross-encoder",
    "recarena.models.language.cross_encoder:CrossEncoderRecommender",
    "cross-encoder",
    "BERT-style pair classifier on (history text, item text), fine-tuned; re-ranks candidates",
    needs="lm",
)

# language models: generative ranker
_add(
    "lm-generative",
    "recarena.models.language.generative:GenerativeRanker",
    "generative-lm",
    "decoder LM re-ranks candidates by the log-likelihood of their title after a history "
    "prompt (KV cache shared); zero-shot, or LoRA-tuned with lora = true",
    needs="lm",
)


def register_model(
    name: str, target: str | type, *, family: str = "classical", summary: str = "", needs: str = ""
) -> None:
    """Make ``name`` usable in experiment files.

    ``target`` is a `Recommender` subclass or its import path ``"module:Class"``.
    """
    if isinstance(target, type):
        path = f"{target.__module__}:{target.__qualname__}"
        family = getattr(target, "family", family)
    else:
        path = target
    _ENTRIES[name] = ModelEntry(name, path, family, summary or path, needs)


def model_entries() -> list[ModelEntry]:
    return list(_ENTRIES.values())


def get_model_class(name: str) -> type:
    """The class of a registry name or ``"module:Class"`` path."""
    if name in _ENTRIES:
        klass = resolve_class(_ENTRIES[name].target)
    elif ":" in name:
        klass = resolve_class(name)
    else:
        known = ", ".join(sorted(_ENTRIES))
        raise ConfigError(
            f"unknown model {name!r}; known models: {known} (or give 'package.module:ClassName')"
        )
    if not (isinstance(klass, type) and issubclass(klass, Recommender)):
        raise ConfigError(f"{name!r} does not name a recarena Recommender subclass")
    return klass


def model_name_problem(name: str) -> str | None:
    """Why ``name`` names no model, or None when it does; no optional extra is needed.

    A registry name passes without importing its module. A ``package.module:ClassName``
    path must name a module that exists and, when it imports, a `Recommender` subclass in
    it; a module whose own imports fail (an optional extra that is not installed) passes,
    and running the model says what is missing.
    """
    if name in _ENTRIES:
        return None
    if ":" not in name:
        return (
            f"unknown model {name!r}; known models: {', '.join(sorted(_ENTRIES))} "
            "(or give 'package.module:ClassName')"
        )
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        return f"model path {name!r} must look like 'package.module:ClassName'"
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return f"model path {name!r}: there is no module {module_name!r}"
    try:
        get_model_class(name)
    except ConfigError as exc:
        if isinstance(exc.__cause__, ImportError):
            return None
        return str(exc)
    return None


def create_model(name: str, params: dict | None = None):  # -> Recommender
    klass = get_model_class(name)
    try:
        return klass(**(params or {}))
    except TypeError as exc:
        valid = klass._param_names()
        private = sorted(k for k in (params or {}) if k.startswith("dp_") and k not in valid)
        if private:
            raise ConfigError(
                f"model {name!r} has no differentially private variant ({', '.join(private)} "
                f"given); the models with one take dp_epsilon or dp_noise_multiplier: "
                f"{', '.join(private_models())}"
            ) from None
        raise ConfigError(f"model {name!r}: {exc}; its parameters are {sorted(valid)}") from None


def private_models() -> list[str]:
    """Names of the registered models with a differentially private variant (a
    ``dp_epsilon`` parameter); models whose packages are missing are left out."""
    names = []
    for entry in model_entries():
        try:
            klass = get_model_class(entry.name)
        except Exception:  # noqa: BLE001 - an optional package missing: not listed
            continue
        if "dp_epsilon" in klass._param_names():
            names.append(entry.name)
    return names
