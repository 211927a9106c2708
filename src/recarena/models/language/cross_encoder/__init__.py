"""The fine-tuned cross-encoder (a BERT-style pair classifier over candidate and history
text): `recommender` (the `Recommender`), `network` (encoder, pooling and head; imported
when a model is built), `batching` (token pairs, training positives, negatives and
batches) and `training` (how it is fine-tuned: the validation set, the losses and the loop;
imported when a model is fitted)."""

from recarena.models.language.cross_encoder.batching import (
    PairEncoder,
    PairTemplate,
    TrainingPositives,
    pair_template,
    sample_negatives,
    sample_positives,
)
from recarena.models.language.cross_encoder.recommender import (
    HEAD_CONFIG,
    HEAD_FILE,
    LOSSES,
    POOLINGS,
    WEIGHTS_FOLDER,
    CrossEncoderRecommender,
)

__all__ = [
    "HEAD_CONFIG",
    "HEAD_FILE",
    "LOSSES",
    "POOLINGS",
    "WEIGHTS_FOLDER",
    "CrossEncoderRecommender",
    "PairEncoder",
    "PairTemplate",
    "TrainingPositives",
    "pair_template",
    "sample_negatives",
    "sample_positives",
]
