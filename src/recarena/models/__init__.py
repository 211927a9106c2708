"""Recommenders: the shared API and the registry of models."""

from recarena.models.base import (
    RankedLists,
    Recommender,
    TrainingData,
    is_integer,
    is_number,
    require_param,
)
from recarena.models.registry import create_model, get_model_class, model_entries, register_model

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
