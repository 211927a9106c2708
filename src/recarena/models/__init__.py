"""Recommenders: the shared API and the registry of models.

The models live by kind: ``classical/`` (popularity, EASE, ItemKNN, matrix factorisation,
SASRec), ``content/`` (TF-IDF and BM25 over item text) and ``language/`` (every way of
using a pretrained language model). A model with a network has a folder of its own: the
recommender (``recommender.py``), the network (``network.py``) and its data handling
(``batching.py``). Import paths from before that layout keep working (`_moved`).
"""

from recarena.models._moved import install as install_moved_paths
from recarena.models.base import (
    RankedLists,
    Recommender,
    TrainingData,
    is_integer,
    is_number,
    require_param,
)
from recarena.models.registry import create_model, get_model_class, model_entries, register_model

install_moved_paths()

__all__ = [
    "RankedLists",
    "Recommender",
    "TrainingData",
    "create_model",
    "get_model_class",
    "is_integer",
    "is_number",
    "model_entries",
    "register_model",
    "require_param",
]
