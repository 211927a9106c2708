"""The two-tower recommender: `recommender` (the `Recommender`: training, early stopping,
scoring, persistence), `network` (history pooling and the heads) and `batching` (training
pairs and token batches)."""

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
