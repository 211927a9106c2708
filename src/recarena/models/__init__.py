"""Recommenders: the shared API and the registry of models."""

from recarena.models.base import RankedLists, Recommender, TrainingData
from recarena.models.registry import create_model, get_model_class, model_entries, register_model

__all__ = [
    "RankedLists",
    "Recommender",
    "TrainingData",
    "create_model",
    "get_model_class",
    "model_entries",
    "register_model",
]
