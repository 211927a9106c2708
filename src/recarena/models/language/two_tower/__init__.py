"""The two-tower recommender: `recommender` (the `Recommender`: parameters, scoring,
persistence), `training` (the warm start, the training loop, early stopping), `network`
(history pooling and the heads) and `batching` (training pairs and token batches)."""

from recarena.models.language.common import cold_validation_pool, trainable_encoder
from recarena.models.language.two_tower.network import HistoryPooling, TowerHeads, TwoTowerNetwork
from recarena.models.language.two_tower.recommender import TwoTowerRecommender

__all__ = [
    "HistoryPooling",
    "TowerHeads",
    "TwoTowerNetwork",
    "TwoTowerRecommender",
    "cold_validation_pool",
    "trainable_encoder",
]
